"""The vectorised language identifier gives py3langid's own scores, bit for bit."""

from __future__ import annotations

import random
from collections import Counter

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


def test_first_order_is_counters_order() -> None:
    """Distinct features in first-occurrence order with counts, as py3langid's ``Counter``;
    the calls share one scratch array, so each also reads entries the previous ones left."""
    rnd = np.random.default_rng(5)
    for size in (1, 2, 50, 3_000):
        for high in (1, 3, 1_000, 100_000):
            features = rnd.integers(0, high, size).astype(np.intp)
            unique, counts = langid._first_order(features, 100_000)
            expected = Counter(features.tolist())
            assert unique.tolist() == list(expected)
            assert counts.tolist() == list(expected.values())


def test_falls_back_to_py3langid_when_it_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(ident: object, data: bytes) -> np.ndarray:
        return np.zeros(1, dtype=np.intp)

    monkeypatch.setattr(langid, "_features", wrong)
    ident = langid.load_identifier()
    assert type(ident) is py3langid.LanguageIdentifier
    assert ident.classify(SAMPLES[1])[0] == "de"


def test_decoded_model_is_cached_and_mapped(
    tmp_path: object, reference: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    cache = Path(str(tmp_path))
    first = langid.load_identifier(cache)
    (folder,) = [p for p in cache.iterdir()]
    assert folder.name.startswith(f"langid-v{langid.CACHE_FORMAT}-")
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.npy" for n in langid._CACHED)

    # the second load reads the cache alone: the model file is not decoded again
    def no_decode(path: object) -> None:
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(langid, "_decode", no_decode)
    second = langid.load_identifier(cache)
    assert type(second).__name__ == "VectorisedIdentifier"
    assert isinstance(second.nb_ptc, np.memmap) and second.nb_ptc.dtype == np.float32
    assert second.wb_window == first.wb_window == 6
    for text in _texts()[:60]:
        ours, theirs = second._decide(text), reference._decide(text)  # type: ignore[attr-defined]
        assert np.array_equal(ours, theirs), text[:40]


def test_damaged_cache_is_rebuilt(tmp_path: object, reference: object) -> None:
    from pathlib import Path

    cache = Path(str(tmp_path))
    langid.load_identifier(cache)
    (folder,) = list(cache.iterdir())
    table = folder / "ptc.npy"
    table.write_bytes(table.read_bytes()[: 1 << 20])  # cut short
    (folder / "output.npy").unlink()  # and a file gone
    ident = langid.load_identifier(cache)
    assert type(ident).__name__ == "VectorisedIdentifier"
    assert np.array_equal(ident._decide(SAMPLES[2]), reference._decide(SAMPLES[2]))  # type: ignore[attr-defined]
    # rebuilt whole: a fresh load reads it without complaint
    assert langid._read_cached(folder)["ptc"].shape == ident.nb_ptc.shape


def test_unwritable_cache_still_identifies(tmp_path: object, reference: object) -> None:
    from pathlib import Path

    blocker = Path(str(tmp_path)) / "not-a-dir"
    blocker.write_text("a file where the cache directory would be")
    ident = langid.load_identifier(blocker / "cache")
    assert type(ident).__name__ == "VectorisedIdentifier"
    assert ident.classify(SAMPLES[1]) == reference.classify(SAMPLES[1])  # type: ignore[attr-defined]


def test_cache_of_another_layout_is_not_trusted(tmp_path: object) -> None:
    from pathlib import Path

    cache = Path(str(tmp_path))
    langid.load_identifier(cache)
    (folder,) = list(cache.iterdir())
    np.save(folder / "pc.npy", np.zeros(3, dtype=np.float32))  # columns no longer match
    with pytest.raises(ValueError, match="consistent model"):
        langid._read_cached(folder)


def test_no_cache_dir_still_identifies(reference: object, monkeypatch: pytest.MonkeyPatch) -> None:
    def homeless() -> object:
        raise RuntimeError("Could not determine home directory")

    monkeypatch.setattr(langid, "default_cache_dir", homeless)
    ident = langid.load_identifier()
    assert type(ident).__name__ == "VectorisedIdentifier"
    assert not isinstance(ident.nb_ptc, np.memmap)  # decoded in memory, nothing written
    assert ident.classify(SAMPLES[3]) == reference.classify(SAMPLES[3])  # type: ignore[attr-defined]
