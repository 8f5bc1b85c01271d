"""py3langid's language identifier with its byte walk and scoring done by numpy: same results.

py3langid counts the model's byte n-gram features by walking its automaton over the text's UTF-8
bytes in a Python loop (a step per byte), then scores them with the model's float16 table cast to
float32 row by row. On the article corpus (4.5 KB of main text a page) that was ~2-3 ms a page,
about a tenth of trafilatura's extraction. Here:

- the walk is vectorised: the automaton (Aho-Corasick) is in the state of the longest suffix of
  the bytes read that is a prefix of some feature, so its state after byte ``i`` is the state
  reached from the start by the last ``window`` bytes alone, ``window`` being its deepest state
  (6 for py3langid 0.4's model, found once by a breadth-first search). ``window`` vectorised
  steps over every position replace the loop.
- the features are counted and ordered by first occurrence as py3langid's ``Counter`` orders
  them, so the float32 product is the same operation on the same operands: the scores are equal
  bit for bit (tests/pipeline/test_langid.py compares them on text of many scripts).
- the float16 rows are widened through a 65,536-entry table (numpy's float16 cast is a slow
  software loop); the values are exact either way.

``load_identifier`` checks the result against py3langid's own on a few probes and falls back to
py3langid's identifier if anything differs (a newer py3langid with another layout).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.core.logs import get_logger

log = get_logger("workbench.pipeline.text")

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}

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


def load_identifier() -> Any:
    """py3langid's identifier (probabilities normalised) with the vectorised walk, or py3langid's
    own if the vectorised one cannot be built or disagrees with it on the probes."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    class VectorisedIdentifier(LanguageIdentifier):
        def _raw_score(self, text: bytes) -> Any:
            features = _features(self, text)
            if not len(features):
                return super()._raw_score(text)
            unique, first, counts = np.unique(features, return_index=True, return_counts=True)
            order = np.argsort(first, kind="stable")  # py3langid's Counter: first occurrence
            weights = np.log1p(counts[order].astype(np.float32))
            table = self.nb_ptc
            rows = unique[order]
            if table.dtype == np.float16:
                widened = _WIDEN[table.view(np.uint16)[rows]]
            else:
                widened = table[rows]
            return weights @ widened + self.nb_pc

    try:
        fast = VectorisedIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        _prepare(fast)
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


#: float16 bit pattern -> float32 value (exact), for all 65,536 patterns.
_WIDEN = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


def _prepare(ident: Any) -> None:
    moves = np.frombuffer(ident.tk_nextmove, dtype=_UINT[ident.tk_nextmove.itemsize])
    rows = np.frombuffer(ident.tk_row, dtype=_UINT[ident.tk_row.itemsize])
    ident.wb_moves = moves
    ident.wb_rowbase = rows.astype(np.intp) << 8
    ident.wb_output = np.asarray(ident.tk_output, dtype=np.intp)
    ident.wb_window = _deepest_state(moves.reshape(-1, 256), rows)


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
