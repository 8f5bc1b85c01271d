"""Extraction quality on the article-extraction-benchmark corpus (Scrapinghub, 181 news pages).

The corpus directory comes from ``WORKBENCH_TEST_CORPUS`` (``html/<id>.html.gz`` plus
``ground-truth.json`` mapping id -> {articleBody, url}). The score is the benchmark's own: F1 of
4-gram word shingles between extracted text and the gold ``articleBody``, averaged over pages.
trafilatura's published score there is 0.958; we require 0.90 so a regression (wrong options,
passing bytes instead of text, a broken pool) fails loudly while library updates do not.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from workbench.pipeline.cpu import CpuPool
from workbench.pipeline.text.extract import extract_document

MIN_MEAN_F1 = 0.90
_TOKEN_RE = re.compile(r"\w+", re.UNICODE)


def _corpus_dir() -> Path:
    value = os.environ.get("WORKBENCH_TEST_CORPUS")
    if not value:
        pytest.skip("WORKBENCH_TEST_CORPUS is not set (point it at article-extraction-benchmark)")
    path = Path(value)
    if not (path / "ground-truth.json").is_file() or not (path / "html").is_dir():
        pytest.skip(f"WORKBENCH_TEST_CORPUS={value} has no ground-truth.json and html/ directory")
    return path


def shingles(text: str, n: int = 4) -> Counter[tuple[str, ...]]:
    """Word n-grams as a multiset; a text shorter than n words is one shingle."""
    tokens = _TOKEN_RE.findall(text or "")
    if len(tokens) < n:
        return Counter([tuple(tokens)]) if tokens else Counter()
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def shingle_f1(gold: str, predicted: str) -> float:
    g, p = shingles(gold), shingles(predicted)
    if not g and not p:
        return 1.0
    tp = sum((g & p).values())
    if tp == 0:
        return 0.0
    precision, recall = tp / sum(p.values()), tp / sum(g.values())
    return 2 * precision * recall / (precision + recall)


def test_shingle_f1() -> None:
    assert shingle_f1("a b c d e", "a b c d e") == 1.0
    assert shingle_f1("a b c d e", "") == 0.0
    assert shingle_f1("", "") == 1.0
    assert shingle_f1("a b c d e f", "a b c d e") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))


async def test_mean_f1_on_benchmark() -> None:
    corpus = _corpus_dir()
    truth: dict[str, dict[str, str]] = json.loads((corpus / "ground-truth.json").read_text("utf-8"))
    pages = []
    for page_id, gold in truth.items():
        raw = gzip.decompress((corpus / "html" / f"{page_id}.html.gz").read_bytes())
        # The corpus is all UTF-8; the pipeline passes decoded text the same way (Page.text).
        pages.append((page_id, raw.decode("utf-8", errors="replace"), gold))
    assert len(pages) >= 100, f"only {len(pages)} pages in {corpus}"

    import asyncio

    pool = CpuPool(2)
    try:
        await pool.warm_up()
        started = time.monotonic()
        docs = await asyncio.gather(
            *(pool.run(extract_document, html, gold.get("url")) for _, html, gold in pages)
        )
        elapsed = time.monotonic() - started
    finally:
        pool.close()

    scores = {
        pid: shingle_f1(gold["articleBody"], doc["text"])
        for (pid, _, gold), doc in zip(pages, docs, strict=True)
    }
    mean_f1 = sum(scores.values()) / len(scores)
    worst = sorted(scores.items(), key=lambda kv: kv[1])[:5]
    print(
        f"\ncorpus: {len(pages)} pages, mean F1 {mean_f1:.4f}, "
        f"{len(pages) / elapsed:.1f} pages/s with 2 processes; worst: "
        + ", ".join(f"{pid[:10]}={f1:.2f}" for pid, f1 in worst)
    )
    assert mean_f1 >= MIN_MEAN_F1, f"mean F1 {mean_f1:.4f} < {MIN_MEAN_F1}; worst pages: {worst}"
