"""The vectorised language identifier gives py3langid's own scores, bit for bit."""

from __future__ import annotations

import random

import numpy as np
import pytest

from workbench.pipeline.text import langid
from workbench.pipeline.text.analyse import _identifier

py3langid = pytest.importorskip("py3langid.langid")

SAMPLES = [
    "Solar panels on the roofs of public schools will supply most of their electricity.",
    "Die Stadtverwaltung hat am Dienstag beschlossen, das alte Bahnhofsgebäude umzuwandeln.",
    "Le conseil municipal a décidé mardi de transformer l'ancien dépôt ferroviaire.",
    "Президент заявил журналистам, что переговоры продолжатся на следующей неделе.",
    "東京都は月曜日、新しい図書館を来年春に開館すると発表した。",
    "北京市政府周一宣布，新图书馆将于明年春天开放。",
    "서울시는 월요일 새 도서관을 내년 봄에 연다고 발표했다.",
    "Η κυβέρνηση ανακοίνωσε νέα μέτρα για την οικονομία.",
    "ALL CAPS HEADLINE ABOUT THE ECONOMY",
    "e\u0301te\u0301 decomposed accents",
    "x",
    "",
    "12 345 678 ...",
]


@pytest.fixture(scope="module")
def reference() -> object:
    return py3langid.LanguageIdentifier.from_model_file(py3langid.MODEL_FILE, norm_probs=True)


def _texts() -> list[str]:
    rnd = random.Random(13)
    alphabet = (
        "abcdefghijklmnopqrstuvwxyzäöüéèàçñß жзийклмнопрстуфхцчшщ 日本語中文한국어 "
        ".,!?'\"\n\t0123456789ΑΒΓαβγ\u0301\U0001f600"
    )
    out = list(SAMPLES)
    out += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 400))) for _ in range(300)]
    long = " ".join(SAMPLES) * 40  # longer than the 20,000 characters detect_language reads
    out += [long[i : i + n] for i, n in ((0, 20_000), (7, 5_000), (1_001, 64))]
    return out


def test_vectorised_identifier_is_in_use() -> None:
    ident = _identifier()
    assert type(ident).__name__ == "VectorisedIdentifier"
    assert ident.wb_window == 6  # py3langid 0.4's model: deepest automaton state


def test_scores_equal_py3langid(reference: object) -> None:
    ident = _identifier()
    for text in _texts():
        ours, theirs = ident._decide(text), reference._decide(text)  # type: ignore[attr-defined]
        assert np.array_equal(ours, theirs), text[:40]
        assert ident.classify(text) == reference.classify(text)  # type: ignore[attr-defined]


def test_falls_back_to_py3langid_when_it_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(ident: object, data: bytes) -> np.ndarray:
        return np.zeros(1, dtype=np.intp)

    monkeypatch.setattr(langid, "_features", wrong)
    ident = langid.load_identifier()
    assert type(ident) is py3langid.LanguageIdentifier
    assert ident.classify(SAMPLES[1])[0] == "de"
