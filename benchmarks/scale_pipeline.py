"""The pipeline of ``bench_scale``: what the ``article`` pipeline returns (~3 KB of text and a
dozen small fields), without the network or trafilatura, so the run measures the machinery at a
million items. One item in a hundred fails permanently (the monitor and ``failures()`` have
something to read)."""

from __future__ import annotations

import random
from typing import Any

from workbench import Context, pipeline
from workbench.core.errors import PermanentError

_WORDS = [
    "the", "river", "flow", "spring", "team", "satellite", "gauge", "bank", "snow", "season",
    "farmer", "data", "official", "summary", "plan", "ahead", "research", "measured", "combined",
    "images", "placed", "along", "every", "kilometre", "found", "melting", "arrived", "earlier",
    "than", "any", "recorded", "before", "downstream", "changed", "planting", "calendars",
    "response", "local", "officials", "publish", "weekly", "summaries", "everyone",
]


def _texts(n: int = 97, chars: int = 3000) -> list[str]:
    rnd = random.Random(7)
    return [" ".join(rnd.choice(_WORDS) for _ in range(chars // 5))[:chars] for _ in range(n)]


TEXTS = _texts()


def result_for(n: int) -> dict[str, Any]:
    """The result of item ``n`` (its URL ends in ``/n``); items ``n % 100 == 99`` fail."""
    text = f"{n} {TEXTS[n % len(TEXTS)]}"
    words = text.split()
    return {
        "title": f"River study {n}", "author": None if n % 3 else "Ada Writer",
        "date": f"2024-{n % 12 + 1:02d}-{n % 28 + 1:02d}", "sitename": f"host{n % 97}",
        "language": "en", "word_count": len(words), "char_count": len(text),
        "reading_time_min": round(len(words) / 200, 2), "keywords": words[1:6],
        "unique_word_ratio": round(len(set(words)) / len(words), 3), "text": text,
    }


def fails(n: int) -> bool:
    return n % 100 == 99


@pipeline("scale-text", version="1", description="~3 KB of text and small fields, no network")
async def scale_text(url: str, ctx: Context) -> dict[str, Any]:
    n = int(url.rsplit("/", 1)[1])
    if fails(n):
        raise PermanentError(f"item {n} fails on purpose", error_type="bench_failure")
    return result_for(n)
