"""Text statistics, language detection and keywords (pure functions, run in this process)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from typing import Any

import pytest

from workbench.pipeline.text.analyse import (
    _SENTENCE_END_RE,
    _TOKEN_RE,
    _WORD_RE,
    READING_WPM,
    _tally,
    analyse_document,
    analyse_text,
    count_sentences,
    detect_language,
    keywords,
    normalise_language,
    text_counts,
)

EN = (
    "Solar panels on the roofs of public schools will supply most of their electricity by 2030, "
    "the education ministry said on Monday. The programme covers four hundred schools.\n"
    "Each school will also get a battery, so that solar power collected at noon can run the "
    "lights in the evening. Teachers welcomed the plan!\n"
    "Critics asked who will pay for maintenance of the solar panels and batteries?"
)
DE = (
    "Die Stadtverwaltung hat am Dienstag beschlossen, das alte Bahnhofsgebäude in eine "
    "öffentliche Bibliothek umzuwandeln. Die Bauarbeiten sollen im nächsten Frühjahr beginnen, "
    "und die Bürger werden zu drei Versammlungen eingeladen."
)
FR = (
    "Le conseil municipal a décidé mardi de transformer l'ancien dépôt ferroviaire en "
    "bibliothèque publique. Les travaux commenceront au printemps prochain et les habitants "
    "seront invités à trois réunions publiques."
)


def test_counts() -> None:
    text = "One two three. Four five!\n\nSix seven eight nine ten? Eleven\nTwelve."
    a = analyse_text(text, language="en")
    assert a["word_count"] == 12
    assert a["char_count"] == len(text)
    assert a["sentence_count"] == 5  # "Eleven" is a heading-like line: one sentence
    assert a["paragraph_count"] == 3
    assert a["avg_sentence_words"] == pytest.approx(12 / 5)
    assert a["unique_word_ratio"] == 1.0
    assert a["reading_time_min"] == pytest.approx(round(12 / READING_WPM, 2))


def test_counts_are_json_and_complete() -> None:
    a = analyse_text(EN)
    assert json.loads(json.dumps(a)) == a
    assert set(a) == {
        "word_count", "char_count", "sentence_count", "paragraph_count", "avg_sentence_words",
        "unique_word_ratio", "reading_time_min", "language", "language_confidence",
        "language_detected", "keywords",
    }  # fmt: skip
    assert a["paragraph_count"] == 3
    assert a["sentence_count"] == 5
    assert 0 < a["unique_word_ratio"] < 1  # "solar", "the", "will" repeat


def test_words_keep_contractions_and_hyphens() -> None:
    assert analyse_text("It's a well-known fact, isn't it?", language="en")["word_count"] == 6


def test_sentences_ignore_abbreviation_like_dots_inside_numbers() -> None:
    assert count_sentences("Prices rose 3.5 percent in 2024. Analysts were surprised.") == 2
    assert count_sentences("") == 0
    assert count_sentences("...") == 0


@pytest.mark.parametrize(("text", "lang"), [(EN, "en"), (DE, "de"), (FR, "fr")])
def test_language_detection(text: str, lang: str) -> None:
    a = analyse_text(text)
    assert a["language"] == lang
    assert a["language_detected"] is True
    assert 0.9 <= a["language_confidence"] <= 1.0


def test_given_language_wins_and_is_normalised() -> None:
    a = analyse_text(DE, language="en-GB")
    assert a["language"] == "en"
    assert a["language_detected"] is False and a["language_confidence"] is None


def test_normalise_language() -> None:
    assert normalise_language("de_AT") == "de"
    assert normalise_language(" FR ") == "fr"
    assert normalise_language("") is None and normalise_language(None) is None
    assert normalise_language("x-klingon-long") is None


def test_detect_language_without_letters() -> None:
    assert detect_language("") == (None, None)
    assert detect_language("12 345 678 ...") == (None, None)


def test_empty_text() -> None:
    a = analyse_text("")
    assert a["word_count"] == a["sentence_count"] == a["paragraph_count"] == 0
    assert a["avg_sentence_words"] == 0.0 and a["unique_word_ratio"] == 0.0
    assert a["keywords"] == [] and a["language"] is None and a["language_detected"] is False


def test_keywords_sensible() -> None:
    kws = analyse_text(EN, max_keywords=5)["keywords"]
    assert len(kws) == 5
    assert all(isinstance(k, str) and k for k in kws)
    assert any("solar" in k.lower() for k in kws)
    assert not {k.lower() for k in kws} & {"the", "of", "will", "and"}  # no stopwords alone
    assert len({k.lower() for k in kws}) == len(kws)


def test_keywords_language_aware() -> None:
    kws = keywords(DE, language="de", top=5)
    assert kws and not {k.lower() for k in kws} & {"die", "das", "und", "in", "zu"}
    assert any("bibliothek" in k.lower() or "bahnhofsgebäude" in k.lower() for k in kws)
    assert keywords(FR, language="xx", top=3)  # unknown language: neutral stopword list


def test_keywords_limits() -> None:
    assert keywords(EN, top=0) == []
    assert keywords("   ", top=5) == []
    assert len(analyse_text(EN, max_keywords=2)["keywords"]) == 2


def test_analyse_document_uses_document_language() -> None:
    a = analyse_document({"text": FR, "language": "fr"}, max_keywords=3)
    assert a["language"] == "fr" and a["language_detected"] is False
    assert len(a["keywords"]) == 3
    b = analyse_document({"text": FR, "language": None})
    assert b["language"] == "fr" and b["language_detected"] is True
    assert analyse_document({})["word_count"] == 0


def test_keywords_pinned() -> None:
    # The exact lists the scorer gave before its loop was reworked (issue 13): any change to
    # keyword output must be deliberate.
    assert keywords(EN, top=6) == [
        "Solar panels", "schools", "Monday", "roofs", "public", "supply"
    ]
    assert keywords(DE, language="de", top=4) == [
        "Stadtverwaltung", "Dienstag", "Bahnhofsgebäude", "Bibliothek"
    ]


def test_keywords_written_form() -> None:
    # a word is shown in its most frequent written form, the first seen among equals
    text = "The Rover landed. The rover drove. A rover stopped, and the ROVER slept."
    assert keywords(text, top=2) == ["rover", "landed"]
    assert keywords("Mars rises first. Then mars sets.", top=1) == ["Mars"]


def test_stopword_lists_are_read_without_importing_yake() -> None:
    # yake's package imports networkx: ~0.1 s of each fork server's start for files only read
    import subprocess
    import sys

    code = ("import sys; from workbench.pipeline.text.analyse import _stopwords, keywords; "
            "print(len(_stopwords('en')), len(_stopwords('de')), "
            "keywords('The river and the rivers of the valley', language='en', top=2), "
            "'yake' in sys.modules, 'networkx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    en, de, *rest = out.stdout.split(" ", 2)
    assert int(en) > 100 and int(de) > 100
    assert rest[0].strip().endswith("False False"), out.stdout


# The keyword pass's token regex against what it replaced: lines, then sentences, then phrases,
# each a split of its own.
_PHRASE_BREAK_BY_LINE = re.compile(r"[,;:()\[\]{}\"“”«»„|/–—]|\s-\s")


def _split_reference(text: str) -> list[list[list[str]]]:
    """Sentences with a word, as phrases, as words: split line by line."""
    return [
        [_WORD_RE.findall(phrase) for phrase in _PHRASE_BREAK_BY_LINE.split(sentence)]
        for line in text.splitlines()
        for sentence in _SENTENCE_END_RE.split(line)
        if _WORD_RE.search(sentence)
    ]


def _split_one_pass(text: str) -> list[list[list[str]]]:
    sentences: list[list[list[str]]] = []
    phrases: list[list[str]] = []
    words: list[str] = []
    for word, boundary in _TOKEN_RE.findall(text):
        if word:
            words.append(word)
            continue
        phrases.append(words)
        words = []
        if boundary:
            if any(phrases):
                sentences.append(phrases)
            phrases = []
    phrases.append(words)
    if any(phrases):
        sentences.append(phrases)
    return sentences


_PIECES = (
    "the", "and", "Solar", "solar", "panels", "ok", "Über", "don't", "it’s", "well-known", "x",
    "42", "東京", "ÇA", " ", " ", " ", " ", ", ", ". ", "! ", "?", "…", ".", " - ", "-", " -", "- ",
    "\n", "\r\n", "\r", "\u2028", "\x1c", "\x1f", "\x85", "\v", "\f", "\t", '"', "“", "”", "’",
    "'", "(", ")", "]", ";", ":", "—", "–", "/", "|", "。", "！", ". \"", "»", "\u00a0",
)  # fmt: skip


def _varied_texts() -> list[str]:
    rnd = random.Random(7)
    return ["".join(rnd.choices(_PIECES, k=rnd.randint(0, 60))) for _ in range(3_000)]


def test_one_pass_tokens_split_as_lines_sentences_and_phrases() -> None:
    for text in [EN, DE, FR, *_varied_texts()]:
        assert _split_one_pass(text) == _split_reference(text), repr(text)


def test_keyword_pass_counts_as_text_counts() -> None:
    for text in [EN, DE, FR, "", "...", *_varied_texts()]:
        tally = _tally(text, frozenset())
        assert (tally.n_words, len(tally.unique_lower()), tally.n_sentences) == text_counts(text)
        assert text_counts(text)[2] == count_sentences(text)


def test_keyword_pass_tallies_as_reference() -> None:
    stop = frozenset({"the", "and"})
    for text in [EN, *_varied_texts()]:
        words: dict[str, list[Any]] = {}
        forms: Counter[str] = Counter()
        pairs: dict[tuple[str, str], list[Any]] = {}
        for i, sentence in enumerate(_split_reference(text)):
            first = True
            for phrase in sentence:
                prev: tuple[str, str] | None = None
                for token in phrase:
                    low = token.lower().replace("’", "'")
                    if low in stop or len(low) < 3 or not any(c.isalpha() for c in low):
                        prev, first = None, False
                        continue
                    entry = words.setdefault(low, [0, 0, i, set()])
                    entry[0] += 1
                    entry[1] += not first and token[0].isupper()
                    entry[3].add(i)
                    forms[token] += 1
                    if prev:
                        pairs.setdefault((prev[0], low), [0, f"{prev[1]} {token}"])[0] += 1
                    prev, first = (low, token), False
        tally = _tally(text, stop)
        assert [(k, v[:3], len(v[3])) for k, v in words.items()] == [
            (k, v[:3], v[3]) for k, v in tally.words.items()
        ], repr(text)
        assert list(tally.form_counts.items()) == list(forms.items())
        assert list(tally.pairs.items()) == list(pairs.items())
