"""Reading a batch chunk after chunk on the database driver itself, the next chunk asked for
while the caller turns this one into a frame (``ReadsMixin._keyset``): a keyset over item ids, or
spans of ids read side by side (``span_to``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from workbench.core.errors import InvalidInputError, LedgerError
from workbench.ledger.engine import translate_errors

#: ask for the next chunk before handing this one over (off: one read at a time, for tests)
PREFETCH = True
#: a chunk of results asks for this many rows first, then follows the size of the last
FIRST_ROWS = 256


async def chunks(
    engine: AsyncEngine, q: Any, batch_id: str, chunk_rows: int, after: int, doing: str,
    *, aggregated: bool = False, max_bytes: int | None = None, span_to: int | None = None,
    sql_trace: list[str] | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Run ``q`` (bound ``b``, ``after``, ``n``) chunk after chunk on the driver itself:
    SQLAlchemy's rows and result processing were a third of a 1M-item ``status()``, and
    the values need none (times stay text on SQLite, the caller parses them in bulk).
    ``aggregated``: ``q`` gives one row a chunk, ``lines``, ``n`` (its rows) and ``last``
    (its last item id), handed over as that dict.

    ``span_to`` (aggregated, no ``max_bytes``): ``n`` is a span of item ids, not a number
    of rows: ``q`` reads the ids in (``after``, ``after + n``], and the spans follow each
    other up to the id ``span_to`` (``_spans``).

    ``max_bytes`` (aggregated): the rows asked for follow the size of what came back, so
    that a chunk holds about that many characters at most (``chunk_rows`` rows at most,
    ``FIRST_ROWS`` the first time);
    should the database find one SQL value too big anyway (over its 1 GB limit), the
    read is asked again for half the rows.

    The next chunk is asked for before this one is handed over, so the database (SQLite's
    thread, or PostgreSQL) works while the caller turns this one into a frame: ~1.4x on
    two cores."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise InvalidInputError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    compiled = q.compile(dialect=engine.dialect,
                         compile_kwargs={"render_postcompile": True})
    sql, order = str(compiled), list(compiled.positiontup or ())
    keys = [c.key for c in q.selected_columns]
    fixed = dict(compiled.params)
    sqlite = engine.dialect.name == "sqlite"

    async def fetch(after: int, limit: int) -> dict[str, Any] | None:
        while True:
            try:
                return await fetch_once(after, limit)
            except LedgerError as exc:
                if max_bytes is None or limit == 1 or not _too_big(exc):
                    raise
                limit = max(1, limit // 2)

    async def fetch_once(after: int, limit: int) -> dict[str, Any] | None:
        given = {**fixed, "b": batch_id, "after": after, "n": limit}
        params = [given[name] for name in order]
        with translate_errors(doing):
            async with engine.connect() as conn:
                driver: Any = (await conn.get_raw_connection()).driver_connection
                if sql_trace is not None:
                    sql_trace.append(sql)
                try:
                    if sqlite:
                        cursor = await driver.execute(sql, params)
                        rows = await cursor.fetchall()
                        await cursor.close()
                    else:
                        rows = await driver.fetch(sql, *params)
                except Exception as exc:  # the driver's own errors, untranslated so far
                    detail = str(exc).splitlines()[0][:300] if str(exc) else repr(exc)
                    raise LedgerError(f"ledger error while {doing}: {detail}") from exc
        if aggregated:
            got = dict(zip(keys, rows[0], strict=True)) if rows else {"n": 0}
            got["asked_"] = given["n"]
            return got if got["n"] else None
        if not rows:
            return None
        out = {k: list(v) for k, v in zip(keys, zip(*rows, strict=True), strict=True)}
        out["asked_"] = given["n"]
        return out

    def follow(chunk: dict[str, Any]) -> tuple[int, int, int]:
        """(the rows it holds, the rows asked for, its last item id)"""
        asked = int(chunk.pop("asked_"))
        if aggregated:
            return int(chunk["n"]), asked, int(chunk["last"])
        return len(chunk["item_id"]), asked, int(chunk["item_id"][-1])

    def next_rows(chunk: dict[str, Any], n: int) -> int:
        if max_bytes is None or not n:
            return chunk_rows
        size = sum(len(v) for v in chunk.values() if isinstance(v, (str, bytes)))
        return max(1, min(chunk_rows, n * max_bytes // max(size, 1)))

    if span_to is not None:
        if max_bytes is not None:  # halving a span's rows would skip ids
            raise ValueError("span_to reads whole spans: no max_bytes with it")
        spans = _spans(fetch, after, chunk_rows, span_to)
        async with contextlib.aclosing(spans) as read:
            async for piece in read:
                yield piece
        return
    pending: asyncio.Future[dict[str, Any] | None] | None = None
    first = chunk_rows if max_bytes is None else min(chunk_rows, FIRST_ROWS)
    pending = asyncio.ensure_future(fetch(after, first))
    try:
        while pending is not None:
            chunk = await pending
            pending = None
            if chunk is None:
                return
            n, asked, last = follow(chunk)
            if n == asked:
                pending = asyncio.ensure_future(fetch(last, next_rows(chunk, n)))
                if PREFETCH:
                    await asyncio.sleep(0)  # it hands its query to the driver, then we go on
                else:
                    await asyncio.wait([pending])
            box = [chunk]
            del chunk  # handed over, not kept here: the caller may free it at once
            yield box.pop()
    finally:
        if pending is not None:
            # Left early (a break, an error, a cancelled caller): the read asked for ahead
            # runs to its end, its connection returned as usual. Cancelling it mid-query
            # cancelled the connection's reset too (aiosqlite logged "Exception during
            # reset"; asyncpg can leave the session idle in a transaction).
            with contextlib.suppress(BaseException):
                await asyncio.shield(pending)


#: id spans read at once by ``_spans``: SQLite's threads read side by side (its JSON is most
#: of a status() read's CPU) while the caller parses; spans larger than ``_WIDE_SPAN`` ids one
#: at a time, so that a big chunk (``iter_status``' 200,000) is not held twice ahead
_SPANS_AHEAD = 2
_WIDE_SPAN = 50_000


async def _spans(
    fetch: Callable[[int, int], Awaitable[dict[str, Any] | None]],
    after: int, span: int, span_to: int,
) -> AsyncGenerator[dict[str, Any], None]:
    """The chunks of the id spans (after, after + span], ... up to ``span_to``, in order, read
    ``_SPANS_AHEAD`` at a time (each span's start is known up front, unlike a keyset's); a span
    holding no row is skipped, not taken for the end."""
    pending: collections.deque[asyncio.Future[dict[str, Any] | None]] = collections.deque()
    start = after
    ahead = _SPANS_AHEAD if span <= _WIDE_SPAN else 1

    def ask_ahead() -> None:
        nonlocal start
        while start < span_to and len(pending) < ahead:
            pending.append(asyncio.ensure_future(fetch(start, span)))
            start += span

    try:
        ask_ahead()
        while pending:
            chunk = await pending.popleft()
            ask_ahead()
            if chunk is None:
                continue
            chunk.pop("asked_")
            box = [chunk]
            del chunk  # handed over, not kept here: the caller may free it at once
            yield box.pop()
    finally:
        # left early: the reads asked for ahead run to their end (see ``chunks``)
        for future in pending:
            with contextlib.suppress(BaseException):
                await asyncio.shield(future)


def _too_big(exc: BaseException) -> bool:
    """Whether a read failed for a value over the database's size limit (SQLite's "string or
    blob too big", PostgreSQL's "out of memory"/"cannot enlarge string buffer")."""
    text = str(exc).lower()
    return any(s in text for s in ("too big", "cannot enlarge", "out of memory",
                                   "exceeds the maximum"))
