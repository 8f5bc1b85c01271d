"""Cheap text statistics, language and keywords for extracted documents.

Everything here is pure (text in, JSON types out) and runs in the CPU pool's children; it knows
nothing of extraction or the pool. ``text.article`` composes it with ``text.extract`` in one round
trip to the pool (what the ``article`` pipeline calls).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

#: Average adult silent reading speed for non-fiction (Brysbaert 2019).
READING_WPM = 238

#: Keywords and language of a long text are well found in its first part.
KEYWORD_TEXT_CHARS = 20_000

#: Below this many letters, py3langid's guess is noise.
MIN_DETECT_CHARS = 3

_WORD_RE = re.compile(r"\w+(?:[-'’]\w+)*")
# A sentence ends at . ! ? … (or a CJK full stop) before whitespace, a closing quote or the end.
_SENTENCE_END_RE = re.compile(r"[.!?…。！？]+(?=[\s\"'”’»)\]]|$)")
# Characters str.splitlines breaks at (all of them whitespace to ``\s``).
_LINE_BREAKS = "\n\r\v\f\x1c-\x1e\x85\u2028\u2029"
# Punctuation inside a sentence that ends a phrase (no keyword spans it), or a dash between spaces.
_PHRASE_BREAK = rf"[,;:()\[\]{{}}\"“”«»„|/–—]|\s-[^\S{_LINE_BREAKS}]"
# A text's words (group 1), sentence boundaries (group 2: a sentence end or a line break) and
# phrase breaks (neither group) in one pass, found as splitting it into lines, each line into
# sentences and each sentence into phrases finds them (tests/pipeline/test_analyse.py checks it);
# the phrase's dash may not take the line break after it. One findall instead of a split per
# line, sentence and phrase: ~0.1 ms a page less.
_TOKEN_RE = re.compile(
    rf"({_WORD_RE.pattern})|({_SENTENCE_END_RE.pattern}|[{_LINE_BREAKS}])|{_PHRASE_BREAK}"
)
# ISO 639-1 codes whose yake stopword file has another name.
_YAKE_LANG = {"cs": "cz", "nb": "no", "nn": "no"}


def analyse_text(
    text: str, *, language: str | None = None, max_keywords: int = 10
) -> dict[str, Any]:
    """Statistics, language and keywords of ``text``; plain JSON types only.

    ``language`` (e.g. from the page's metadata) is used as given, normalised to its primary
    subtag ("en-GB" -> "en"); otherwise it is detected with py3langid, and
    ``language_detected``/``language_confidence`` say so.
    """
    text = text or ""
    lang = normalise_language(language)
    confidence: float | None = None
    detected = False
    if lang is None:
        lang, confidence = detect_language(text)
        detected = lang is not None
    tally = _tally(text[:KEYWORD_TEXT_CHARS], _stopwords(lang or "en"))
    if len(text) > KEYWORD_TEXT_CHARS:  # the counts are of the whole text
        n_words, n_unique, n_sentences = text_counts(text)
    else:  # the pass for keywords saw them: ~0.2 ms a page less than counting again
        n_words, n_unique, n_sentences = tally.n_words, len(tally.unique_lower()), tally.n_sentences
    return {
        "word_count": n_words,
        "char_count": len(text),
        "sentence_count": n_sentences,
        "paragraph_count": sum(1 for line in text.splitlines() if line.strip()),
        "avg_sentence_words": round(n_words / n_sentences, 2) if n_sentences else 0.0,
        "unique_word_ratio": round(n_unique / n_words, 4) if n_words else 0.0,
        "reading_time_min": round(n_words / READING_WPM, 2),
        "language": lang,
        "language_confidence": confidence,
        "language_detected": detected,
        "keywords": _ranked(tally, max_keywords),
    }


def analyse_document(doc_dict: dict[str, Any], *, max_keywords: int = 10) -> dict[str, Any]:
    """``analyse_text`` of a document dict (from ``extract_document``), with its language if set."""
    return analyse_text(
        doc_dict.get("text") or "", language=doc_dict.get("language"), max_keywords=max_keywords
    )


def text_counts(text: str) -> tuple[int, int, int]:
    """Words, distinct words (case-folded) and sentences of ``text``."""
    words = _WORD_RE.findall(text)
    return len(words), len({w.lower() for w in words}), count_sentences(text)


def count_sentences(text: str) -> int:
    """Sentences in ``text``; a paragraph without final punctuation (a heading) counts as one."""
    count = 0
    for line in text.splitlines():
        pieces = _SENTENCE_END_RE.split(line)
        count += sum(1 for piece in pieces if _WORD_RE.search(piece))
    return count


def normalise_language(language: str | None) -> str | None:
    """'en-GB', 'EN_us' -> 'en'; empty or non-alphabetic -> None."""
    if not language:
        return None
    primary = re.split(r"[-_]", language.strip(), maxsplit=1)[0].lower()
    return primary if primary.isalpha() and 2 <= len(primary) <= 3 else None


def detect_language(text: str) -> tuple[str | None, float | None]:
    """py3langid's best guess and its probability; ``(None, None)`` for text without letters."""
    sample = text[:KEYWORD_TEXT_CHARS]
    if sum(ch.isalpha() for ch in sample[:200]) < MIN_DETECT_CHARS:
        return None, None
    lang, prob = _identifier().classify(sample)
    return str(lang), round(float(prob), 4)


def keywords(text: str, *, language: str | None = None, top: int = 10) -> list[str]:
    """Top ``top`` keywords (1-2 word phrases), best first; ``[]`` for empty text.

    A YAKE-style statistical scorer over words between stopwords (yake's per-language lists):
    a word scores by its frequency, how often it is capitalised mid-sentence, how early it first
    appears and how many sentences it spreads over; a two-word phrase that recurs scores by its
    frequency and its words. The yake package itself cost ~38 ms per news page, more than
    trafilatura's extraction, in pure-Python objects and a networkx graph; this costs ~1 ms.
    """
    if top <= 0:
        return []
    return _ranked(_tally((text or "")[:KEYWORD_TEXT_CHARS], _stopwords(language or "en")), top)


@dataclass(slots=True)
class _Tally:
    """What ``keywords`` counts in one pass over a text."""

    n_words: int
    n_sentences: int  # with a word
    #: token as written -> its lower form, or "" for a stopword, a short or a letterless token
    judged: dict[str, str]
    #: lower form -> [count, capitalised, first sentence, sentences, last sentence]
    words: dict[str, list[int]]
    form_counts: dict[str, int]  # token as written -> count (insertion: first occurrence)
    pairs: dict[tuple[str, str], list[Any]]  # -> [count, first form]

    def unique_lower(self) -> set[str]:
        return {token.lower() for token in self.judged}


def _tally(text: str, stop: frozenset[str]) -> _Tally:
    judged: dict[str, str] = {}  # the same tokens recur: each is judged once
    words: dict[str, list[int]] = {}
    form_counts: dict[str, int] = {}
    pairs: dict[tuple[str, str], list[Any]] = {}
    tokens = _TOKEN_RE.findall(text)
    n_breaks = n_sentences = 0
    first = True  # no word yet in this sentence
    prev_low = prev_token = ""
    for token, boundary in tokens:
        if not token:  # a phrase break, or the end of a sentence
            n_breaks += 1
            prev_low = ""
            if boundary:
                n_sentences += not first
                first = True
            continue
        low = judged.get(token)
        if low is None:
            low = token.lower().replace("’", "'")
            if low in stop or len(low) < 3 or not any(ch.isalpha() for ch in low):
                low = ""
            judged[token] = low
        if not low:
            prev_low, first = "", False
            continue
        entry = words.get(low)
        if entry is None:
            entry = words[low] = [0, 0, n_sentences, 0, -1]
        entry[0] += 1
        if not first and token[0].isupper():
            entry[1] += 1
        if entry[4] != n_sentences:
            entry[3] += 1
            entry[4] = n_sentences
        form_counts[token] = form_counts.get(token, 0) + 1
        if prev_low:
            pair = pairs.get((prev_low, low))
            if pair is None:
                pair = pairs[(prev_low, low)] = [0, f"{prev_token} {token}"]
            pair[0] += 1
        prev_low, prev_token, first = low, token, False
    n_sentences += not first
    return _Tally(len(tokens) - n_breaks, n_sentences, judged, words, form_counts, pairs)


def _ranked(tally: _Tally, top: int) -> list[str]:
    """The ``top`` best words and recurring pairs of ``tally``, best first."""
    words, n_sentences = tally.words, tally.n_sentences
    if top <= 0 or not words:
        return []
    top_tf = max(entry[0] for entry in words.values())
    score: dict[str, float] = {}
    for low, (tf, caps, first_sentence, spread, _last) in words.items():
        score[low] = (
            (tf / top_tf + spread / max(1, n_sentences))
            * (1.0 + caps / tf)
            / math.log2(2.0 + first_sentence)
        )
    # each word's most frequent written form, the first seen among equals
    best_form: dict[str, tuple[int, str]] = {}
    for token, count in tally.form_counts.items():
        low = tally.judged[token]
        held = best_form.get(low)
        if held is None or count > held[0]:
            best_form[low] = (count, token)
    ranked: list[tuple[float, int, str, tuple[str, ...]]] = []
    for i, (low, value) in enumerate(score.items()):
        ranked.append((value, -i, best_form[low][1], (low,)))
    for i, ((a, b), (count, form)) in enumerate(tally.pairs.items()):
        if count >= 2 and a != b:
            ranked.append(((score[a] + score[b]) * min(count, 4) / 2, -i, form, (a, b)))
    ranked.sort(reverse=True)
    out: list[str] = []
    taken: set[str] = set()
    for _value, _order, form, parts in ranked:
        if any(p in taken for p in parts):  # "solar" once "solar panels" is in, and vice versa
            continue
        taken.update(parts)
        out.append(form)
        if len(out) == top:
            break
    return out


@lru_cache(maxsize=1)
def _identifier() -> Any:
    # py3langid's, probabilities normalised to [0, 1], its byte walk vectorised (text.langid)
    from workbench.pipeline.text.langid import load_identifier

    return load_identifier()


@lru_cache(maxsize=64)
def _stopwords(language: str) -> frozenset[str]:
    """yake's stopword list for ``language`` (ISO 639-1), or its language-neutral one."""
    lists = _yake_stopword_dir()
    code = _YAKE_LANG.get(language, language)[:2].lower()
    path = lists / f"stopwords_{code}.txt"
    if not path.is_file():
        path = lists / "stopwords_noLang.txt"
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("iso-8859-1")
    return frozenset(w.strip() for w in text.lower().splitlines() if w.strip())


def _yake_stopword_dir() -> Any:
    """yake's stopword directory, found without importing yake: its package imports networkx,
    ~0.1 s of every fork server's start for files we only read."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("yake")  # a top-level name: found, not imported
    for root in (spec.submodule_search_locations or []) if spec else []:
        lists = Path(root) / "core" / "StopwordsList"
        if lists.is_dir():
            return lists
    from importlib.resources import files  # an install not on the file system

    return files("yake") / "core" / "StopwordsList"
