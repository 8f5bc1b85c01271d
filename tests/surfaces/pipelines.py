"""Pipelines for the surface tests: no network, no CPU pool, deterministic.

Importable as ``tests.surfaces.pipelines`` both here and in ``python -m workbench`` subprocesses
(``PYTHONPATH=<repo>``, ``WORKBENCH_PIPELINES=tests.surfaces.pipelines``).

URLs look like ``http://example.org/ok/3`` (done), ``.../bad/3`` (fails: ``bad_page``),
``.../gone/3`` (fails: ``gone_page``) and ``.../slow/3`` (sleeps ``params["sleep"]`` seconds).
"""

from __future__ import annotations

import asyncio

import numpy as np

from workbench import Context, PermanentError, pipeline


@pipeline("surf", version="1")
async def surf(url: str, ctx: Context) -> dict:
    kind, n = url.rstrip("/").rsplit("/", 2)[-2:]
    if kind == "bad":
        raise PermanentError(f"page {n} is bad", error_type="bad_page")
    if kind == "gone":
        raise PermanentError(f"page {n} is gone", error_type="gone_page")
    if kind == "slow":
        await asyncio.sleep(float(ctx.params.get("sleep", 2)))
    return {
        "n": int(n),
        "words": int(n) * 10,
        "tag": ctx.params.get("tag"),
        "tags": ["a", "b"],
        "meta": {"k": int(n)},
        "vec": np.arange(3, dtype=np.float32),
    }
