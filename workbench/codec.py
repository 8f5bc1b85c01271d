"""JSON encoding of pipeline results and queue payloads (never pickle).

Results may hold numpy arrays (embeddings): they are stored compactly as base64 of their raw
little-endian bytes, ``{"__ndarray__": "<b64>", "dtype": "float32", "shape": [384]}``, and come
back as numpy arrays. numpy scalars become plain numbers; datetimes become ISO strings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from datetime import date, datetime
from typing import Any

import numpy as np

NDARRAY_KEY = "__ndarray__"


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if arr.dtype.kind not in "biuf":
            return arr.tolist()
        return {
            NDARRAY_KEY: base64.b64encode(arr.tobytes()).decode("ascii"),
            "dtype": arr.dtype.str.lstrip("<|="),
            "shape": list(arr.shape),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, bytes):
        raise TypeError("bytes are not JSON; decode them or store them as a numpy array")
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _hook(obj: dict[str, Any]) -> Any:
    if NDARRAY_KEY in obj and "dtype" in obj:
        raw = base64.b64decode(obj[NDARRAY_KEY])
        return np.frombuffer(raw, dtype=np.dtype(obj["dtype"]).newbyteorder("<")).reshape(
            obj.get("shape", [-1])
        )
    return obj


def _clean_floats(obj: Any) -> Any:
    # NaN/inf are not JSON; PostgreSQL's JSON and other readers reject them.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean_floats(v) for v in obj]
    return obj


def dumps(value: Any) -> str:
    """Encode a result (or any JSON-able value with numpy arrays) as compact JSON text."""
    try:
        return json.dumps(value, default=_default, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(
            _clean_floats(json.loads(json.dumps(value, default=_default))),
            separators=(",", ":"),
        )


def loads(text: str | bytes) -> Any:
    return json.loads(text, object_hook=_hook)


def check_json_object(params: Any, *, what: str = "params") -> dict[str, Any]:
    """Return ``params`` as a JSON-round-tripped dict or raise ``ValueError`` saying why not."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValueError(f"{what} must be a dict (a JSON object), got {type(params).__name__}")
    try:
        text = json.dumps(params, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} are not JSON-serializable: {exc}") from None
    return json.loads(text)


def params_hash(params: dict[str, Any]) -> str:
    """A stable short hash of params (key order does not matter)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the queue's serializer: plain JSON bytes, so nothing in Redis can execute code on load --
def job_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def job_loads(raw: bytes) -> Any:
    return json.loads(raw)
