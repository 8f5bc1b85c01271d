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
import sys
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from workbench.core.errors import InvalidParamsError

if TYPE_CHECKING:
    import numpy as np

NDARRAY_KEY = "__ndarray__"
# Only plain numeric dtypes travel through results: never object arrays (that would need pickle).
_ALLOWED_DTYPES = {
    "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"
}


def _default(obj: Any) -> Any:
    # numpy is not imported for this: a worker that stores no arrays never loads it (~30-60 ms
    # of its start), and before numpy is imported no numpy object exists
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind not in "biuf":
                return obj.tolist()
            return encode_array(obj, dtype=None)
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
        return decode_array(obj)
    return obj


def encode_array(arr: Any, *, dtype: str | None = "float32") -> dict[str, Any]:
    """A numpy array as ``{"__ndarray__": <base64 little-endian bytes>, "dtype", "shape"}``.

    Floats are stored as float32 by default (embeddings need no more); ``dtype=None`` keeps the
    array's own dtype.
    """
    import numpy as np

    a = np.asarray(arr)
    target = np.dtype(dtype) if dtype is not None else a.dtype
    if target.name not in _ALLOWED_DTYPES:
        raise TypeError(f"cannot encode an array of dtype {target.name}")
    a = np.asarray(a, dtype=target.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d
    return {
        NDARRAY_KEY: base64.b64encode(a.tobytes()).decode("ascii"),
        "dtype": target.name,
        "shape": list(a.shape),
    }


def is_encoded_array(obj: Any) -> bool:
    return isinstance(obj, dict) and NDARRAY_KEY in obj


def decode_array(obj: dict[str, Any]) -> np.ndarray:
    """The array ``encode_array`` encoded (a fresh, writable, native-endian copy)."""
    import numpy as np

    try:
        dtype = np.dtype(str(obj.get("dtype", "float32")))
        shape = tuple(int(n) for n in obj["shape"])
        raw = base64.b64decode(obj[NDARRAY_KEY], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an encoded array: {exc}") from exc
    if dtype.name not in _ALLOWED_DTYPES:
        raise ValueError(f"refusing to decode an array of dtype {dtype.name}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected or any(n < 0 for n in shape):
        raise ValueError(
            f"encoded array has {len(raw)} bytes, shape {list(shape)} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


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


def loads_many(texts: Sequence[str | None]) -> list[Any]:
    """``loads`` of each text (empty or None: ``{}``), in one parse: for 100k small results a
    ``json.loads`` call each cost more than the parsing itself."""
    if not texts:
        return []
    joined = "[" + ",".join(t or "{}" for t in texts) + "]"
    return json.loads(joined, object_hook=_hook if NDARRAY_KEY in joined else None)


def check_json_object(params: Any, *, what: str = "params") -> dict[str, Any]:
    """Return ``params`` as a JSON-round-tripped dict, or raise ``InvalidParamsError`` saying
    why not, with ``fields`` naming each top-level key whose value JSON cannot hold (NaN and
    infinities included: they are not JSON)."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidParamsError(
            f"{what} must be a dict (a JSON object), got {type(params).__name__}")
    try:
        text = json.dumps(params, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        fields = []
        for key, value in params.items():
            if not isinstance(key, str):
                fields.append((repr(key), "keys must be strings"))
                continue
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as bad:
                fields.append((key, str(bad)))
        raise InvalidParamsError(f"{what} are not JSON-serializable: {exc}", fields) from None
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
