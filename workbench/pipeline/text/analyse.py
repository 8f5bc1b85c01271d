"""Cheap text statistics, language and keywords for extracted documents.

Everything here is pure (text in, JSON types out) and runs in the CPU pool's children; it knows
nothing of extraction or the pool. ``text.article`` composes it with ``text.extract`` in one round
trip to the pool (what the ``article`` pipeline calls).
"""

from __future__ import annotations

import math
import re
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

# Punctuation inside a sentence that ends a phrase (no keyword spans it).
_PHRASE_BREAK_RE = re.compile(r"[,;:()\[\]{}\"“”«»„|/–—]|\s-\s")
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
    words = _WORD_RE.findall(text)
    n_words = len(words)
    n_unique = len({w.lower() for w in words})
    n_sentences = count_sentences(text)
    lang = normalise_language(language)
    confidence: float | None = None
    detected = False
    if lang is None:
        lang, confidence = detect_language(text)
        detected = lang is not None
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
        "keywords": keywords(text, language=lang, top=max_keywords),
    }


def analyse_document(doc_dict: dict[str, Any], *, max_keywords: int = 10) -> dict[str, Any]:
    """``analyse_text`` of a document dict (from ``extract_document``), with its language if set."""
    return analyse_text(
        doc_dict.get("text") or "", language=doc_dict.get("language"), max_keywords=max_keywords
    )


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
    if top <= 0 or not _WORD_RE.search(text or ""):
        return []
    stop = _stopwords(language or "en")
    # token -> its lower form, or None for a stopword, a short or a letterless token; the same
    # tokens recur, so each is judged once
    judged: dict[str, str | None] = {}
    words: dict[str, list[Any]] = {}  # lower -> [count, capitalised, first sentence, sentences]
    form_counts: dict[str, int] = {}  # token as written -> count (insertion: first occurrence)
    pairs: dict[tuple[str, str], list[Any]] = {}  # -> [count, first form]
    n_sentences = 0
    for line in text[:KEYWORD_TEXT_CHARS].splitlines():
        for sentence in _SENTENCE_END_RE.split(line):
            if not _WORD_RE.search(sentence):
                continue
            seen_here: set[str] = set()
            first = True
            for chunk in _PHRASE_BREAK_RE.split(sentence):
                prev_low: str | None = None
                prev_token = ""
                for token in _WORD_RE.findall(chunk):
                    if token in judged:
                        low = judged[token]
                    else:
                        low = token.lower().replace("’", "'")
                        if low in stop or len(low) < 3 or not any(ch.isalpha() for ch in low):
                            low = None
                        judged[token] = low
                    if low is None:
                        prev_low, first = None, False
                        continue
                    entry = words.get(low)
                    if entry is None:
                        entry = words[low] = [0, 0, n_sentences, 0]
                    entry[0] += 1
                    if not first and token[0].isupper():
                        entry[1] += 1
                    if low not in seen_here:
                        seen_here.add(low)
                        entry[3] += 1
                    form_counts[token] = form_counts.get(token, 0) + 1
                    if prev_low is not None:
                        pair = pairs.get((prev_low, low))
                        if pair is None:
                            pair = pairs[(prev_low, low)] = [0, f"{prev_token} {token}"]
                        pair[0] += 1
                    prev_low, prev_token, first = low, token, False
            n_sentences += 1
    if not words:
        return []
    top_tf = max(entry[0] for entry in words.values())
    score: dict[str, float] = {}
    for low, (tf, caps, first_sentence, spread) in words.items():
        score[low] = (
            (tf / top_tf + spread / max(1, n_sentences))
            * (1.0 + caps / tf)
            / math.log2(2.0 + first_sentence)
        )
    # each word's most frequent written form, the first seen among equals
    best_form: dict[str, tuple[int, str]] = {}
    for token, count in form_counts.items():
        low = judged[token]
        assert low is not None
        held = best_form.get(low)
        if held is None or count > held[0]:
            best_form[low] = (count, token)
    ranked: list[tuple[float, int, str, tuple[str, ...]]] = []
    for i, (low, value) in enumerate(score.items()):
        ranked.append((value, -i, best_form[low][1], (low,)))
    for i, ((a, b), (count, form)) in enumerate(pairs.items()):
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
