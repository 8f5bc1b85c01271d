"""py3langid's language identifier with its byte walk and scoring done by numpy: same results.

py3langid counts the model's byte n-gram features by walking its automaton over the text's UTF-8
bytes in a Python loop (a step per byte), then scores them with the model's float16 table. On the
article corpus (4.5 KB of main text a page) that was ~2-3 ms a page, about a tenth of
trafilatura's extraction. Here:

- the walk is vectorised: the automaton (Aho-Corasick) is in the state of the longest suffix of
  the bytes read that is a prefix of some feature, so its state after byte ``i`` is the state
  reached from the start by the last ``window`` bytes alone, ``window`` being its deepest state
  (6 for py3langid 0.4's model, found once by a breadth-first search). ``window`` vectorised
  steps over every position replace the loop.
- the features are counted and ordered by first occurrence as py3langid's ``Counter`` orders
  them, so the float32 product is the same operation on the same operands: the scores are equal
  bit for bit (tests/pipeline/test_langid.py compares them on text of many scripts). They are
  counted without sorting, through a scratch array indexed by feature (``_first_order``):
  ``np.unique`` and an ``argsort`` of the first positions cost ~0.2 ms a page, this ~0.02 ms.
- the table is float32 once, not per page: widening a page's float16 rows cost ~0.6 ms of its
  ~2 ms (the values are exact either way).

The model file is LZMA-compressed: decoding it cost each fork server ~0.6-0.9 s of its start. The
decoded arrays (float32 table, automaton, window) are kept as ``.npy`` files in a cache directory
(``platformdirs.user_cache_dir("workbench")``, keyed by the model file's digest) and memory-mapped:
every process on the machine shares one copy through the page cache, and a start reads ~100 MB of
mapped pages lazily instead of decoding. A cache that cannot be written (read-only home) or read
(damaged) costs only the decode.

``load_identifier`` checks the result against py3langid's own walk on a few probes and falls back
to py3langid's identifier if anything differs (a newer py3langid with another layout).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from workbench.core.logs import get_logger

log = get_logger("workbench.pipeline.text")

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_TYPECODE = {2: "H", 4: "I", 8: "L"}

#: Bumped when what the cache holds changes; part of its directory's name.
CACHE_FORMAT = 1
_CACHED = ("ptc", "pc", "classes", "nextmove", "row", "output", "window")

#: Checked against py3langid at load: several scripts, short and long, and no features at all.
_PROBES = (
    "The quick brown fox jumps over the lazy dog, twice, and then it rests.",
    "Die Stadtverwaltung hat beschlossen, das alte Bahnhofsgebäude umzuwandeln.",
    "Президент заявил журналистам, что переговоры продолжатся на следующей неделе.",
    "東京都は月曜日、新しい図書館を来年春に開館すると発表した。日本語の文章です。",
    "a",
    "",
    "1234 5678 !!! ??? ... ---",
)


def default_cache_dir() -> Path:
    """Where the decoded model is kept: the user's cache directory for workbench."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("workbench", appauthor=False))


def load_identifier(cache_dir: Path | None = None) -> Any:
    """py3langid's identifier (probabilities normalised) with the vectorised walk, or py3langid's
    own if the vectorised one cannot be built or disagrees with it on the probes. ``cache_dir``:
    where the decoded model is kept (default ``default_cache_dir()``)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    class VectorisedIdentifier(LanguageIdentifier):
        def _raw_score(self, text: bytes) -> Any:
            features = _features(self, text)
            if not len(features):
                return super()._raw_score(text)
            unique, counts = _first_order(features, len(self.wb_table))
            weights = np.log1p(counts.astype(np.float32))
            # np.take on the plain array, not indexing the memmap: ~0.015 ms a page less
            return weights @ np.take(self.wb_table, unique, axis=0) + self.nb_pc

    if cache_dir is None:
        try:
            cache_dir = default_cache_dir()
        except Exception:  # no home directory to put it in: decode, cache nothing
            log.info("langid_cache_dir_unknown", exc_info=True)
    try:
        model = model_arrays(cache_dir)
        fast = VectorisedIdentifier(
            model["ptc"], model["pc"], model["classes"].tolist(), model["nextmove"],
            model["output"].tolist(), norm_probs=True,
            # py3langid shifts each row by 8 bits: Python ints, not numpy's uint16
            tk_row=_stdlib_array(model["row"]),
        )
        _prepare(fast, int(model["window"][0]))
        for probe in _PROBES:
            data = fast._encode(probe)
            if not np.array_equal(
                fast._raw_score(data), LanguageIdentifier._raw_score(fast, data)
            ):
                raise ValueError(f"vectorised scores differ from py3langid's on {probe!r}")
        return fast
    except Exception:
        log.warning("langid_vectorised_unavailable", exc_info=True)
        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def model_arrays(cache_dir: Path | None) -> dict[str, np.ndarray]:
    """py3langid's model as arrays (the table as float32, the automaton's deepest state as
    ``window``): memory-mapped from ``cache_dir`` when cached there, else decoded and cached
    (``None``: decoded, not cached)."""
    from py3langid.langid import MODEL_DIR, MODEL_FILE

    path = Path(MODEL_DIR) / MODEL_FILE
    if cache_dir is None:
        return _decode(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
    folder = cache_dir / f"langid-v{CACHE_FORMAT}-{digest}"
    try:
        return _read_cached(folder)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:  # damaged: decode again, and replace it
        log.warning("langid_cache_unreadable", folder=str(folder), error=str(exc))
        shutil.rmtree(folder, ignore_errors=True)
    arrays = _decode(path)
    try:
        _write_cached(folder, arrays)
    except OSError as exc:
        log.info("langid_cache_not_written", folder=str(folder), error=str(exc))
    return arrays


def _decode(path: Path) -> dict[str, np.ndarray]:
    from py3langid.modelio import load_model

    ptc, pc, classes, nextmove, row, output = load_model(path)
    ptc = np.asarray(ptc)
    if ptc.dtype == np.float16:  # through a table: numpy's float16 cast is a slow software loop
        ptc = _WIDEN[ptc.view(np.uint16)]
    moves = np.frombuffer(nextmove, dtype=_UINT[nextmove.itemsize])
    rows = np.frombuffer(row, dtype=_UINT[row.itemsize])
    return {
        "ptc": np.ascontiguousarray(ptc, dtype=np.float32),
        "pc": np.asarray(pc, dtype=np.float32),
        "classes": np.array(classes),
        "nextmove": moves,
        "row": rows,
        "output": np.asarray(output, dtype=np.int64),
        "window": np.array([_deepest_state(moves.reshape(-1, 256), rows)], dtype=np.int64),
    }


def _read_cached(folder: Path) -> dict[str, np.ndarray]:
    arrays = {
        name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        for name in _CACHED
    }
    ptc, pc, moves, rows, output = (arrays[k] for k in ("ptc", "pc", "nextmove", "row", "output"))
    # a cache of another layout or cut short must not pass for the model
    if not (
        ptc.ndim == 2 and ptc.dtype == np.float32 and ptc.shape[1] == len(pc)
        == len(arrays["classes"]) and len(rows) == len(output) and len(moves) % 256 == 0
        and int(rows.max()) < len(moves) // 256 and int(output.max()) < len(ptc)
    ):
        raise ValueError(f"{folder} does not hold a consistent model")
    return arrays


def _write_cached(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write into a directory of its own, then rename it into place: processes starting at once
    each write their own and the first rename wins; a reader sees all the files or none."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = folder.with_name(f"{folder.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        scratch.mkdir()
        for name in _CACHED:
            np.save(scratch / f"{name}.npy", arrays[name], allow_pickle=False)
        try:
            scratch.rename(folder)
        except OSError:
            if not folder.is_dir():
                raise  # not another process's finished copy: a real failure
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _stdlib_array(values: np.ndarray) -> array[int]:
    out = array(_TYPECODE[values.dtype.itemsize])
    out.frombytes(np.ascontiguousarray(values).tobytes())
    return out


#: float16 bit pattern -> float32 value (exact), for all 65,536 patterns.
_WIDEN = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


def _prepare(ident: Any, window: int) -> None:
    moves = np.asarray(ident.tk_nextmove)
    rows = np.frombuffer(ident.tk_row, dtype=_UINT[ident.tk_row.itemsize])
    ident.wb_moves = moves
    ident.wb_rowbase = rows.astype(np.intp) << 8
    ident.wb_output = np.asarray(ident.tk_output, dtype=np.intp)
    ident.wb_window = window
    ident.wb_table = np.asarray(ident.nb_ptc).view(np.ndarray)


def _deepest_state(moves: np.ndarray, rows: np.ndarray) -> int:
    """Depth of the automaton's deepest state: breadth-first from the start state."""
    n = len(rows)
    seen = np.zeros(n, dtype=bool)
    seen[0] = True
    frontier = np.zeros(1, dtype=np.intp)
    depth = 0
    while True:
        reached = np.zeros(n, dtype=bool)
        reached[moves[np.unique(rows[frontier])].ravel()] = True
        reached &= ~seen
        if not reached.any():
            return depth
        depth += 1
        seen |= reached
        frontier = np.flatnonzero(reached)


def _features(ident: Any, data: bytes) -> np.ndarray:
    """The feature index of every automaton state after each byte that has one, in order."""
    codes = np.frombuffer(data, dtype=np.uint8).astype(np.intp)
    n = len(codes)
    states = np.zeros(n, dtype=np.intp)
    moves, rowbase = ident.wb_moves, ident.wb_rowbase
    for back in range(min(ident.wb_window, n) - 1, -1, -1):
        # every position i >= back takes one step, on byte i - back
        states[back:] = moves[rowbase[states[back:]] + codes[: n - back]]
    features = ident.wb_output[states]
    return features[features >= 0]


#: Per thread: a scratch array indexed by feature, for ``_first_order``.
_scratch = threading.local()


def _first_order(features: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``features`` in order of first occurrence (a ``Counter``'s order) and their
    counts, in O(len(features)): each feature's first position is found in a scratch array
    indexed by feature, which needs no clearing as only the entries of ``features`` are read."""
    first_at: np.ndarray | None = getattr(_scratch, "first_at", None)
    if first_at is None or len(first_at) < n_features:
        first_at = _scratch.first_at = np.empty(n_features, dtype=np.intp)
    n = len(features)
    positions = np.arange(n, dtype=np.intp)
    first_at[features] = n
    np.minimum.at(first_at, features, positions)
    first = first_at[features]  # for each position, where its feature first occurs
    starts = np.flatnonzero(first == positions)
    return features[starts], np.bincount(first, minlength=n)[starts]
