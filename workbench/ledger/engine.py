"""Engines for the ledger: SQLite (WAL, busy timeout, BEGIN IMMEDIATE for writes) or PostgreSQL.

Also runs the alembic migrations at start-up, so a user's existing database upgrades itself, and
translates database errors into ``LedgerError`` at the boundary.

A SQLite ledger holds results, raw pages and notify addresses: its file is created 0600 (and an
existing one tightened), its directory 0700 if made here, whatever the umask; SQLite gives
``-wal`` and ``-shm`` the database file's mode (``core.private``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from workbench.core.errors import LedgerError
from workbench.core.private import private_sqlite
from workbench.ledger.wal import ensure_wal

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 60_000
# Any constant works; it only has to be the same for every process migrating one database.
_PG_MIGRATION_LOCK = 7_215_023_104


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, immediate: bool = True, echo: bool = False) -> AsyncEngine:
    """An async engine. On SQLite, ``immediate`` makes every transaction take the write lock up
    front (BEGIN IMMEDIATE): a deferred transaction that later upgrades to a write can fail with
    "database is locked" at once, without waiting out the busy timeout."""
    if is_sqlite(url):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        path = path.split("?", 1)[0]
        if path and path != ":memory:":
            try:
                private_sqlite(Path(path))  # 0600 file, 0700 directory if made here
            except OSError as exc:
                raise LedgerError(f"cannot prepare the SQLite ledger at {path}: {exc}") from exc
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        begin_sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
            dbapi_conn.isolation_level = None
            ensure_wal(dbapi_conn, timeout_ms=SQLITE_BUSY_TIMEOUT_MS,
                       sleep=lambda s: await_only(asyncio.sleep(s)))
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin_sql)

        return engine
    return create_async_engine(
        url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True, pool_recycle=1800
    )


#: The newest migration's revision (tests/spine/test_ledger.py: alembic's head). A ledger already
#: there starts without alembic: importing it and reading its scripts was ~0.25 s of CPU of every
#: worker's start, on the way to its first item (benchmarks/NOTES.md, session 11).
SCHEMA_HEAD = "0006"

_VERSION_TABLE_EXISTS = {
    "postgresql": "SELECT to_regclass('alembic_version') IS NOT NULL",
    "sqlite": "SELECT count(*) FROM sqlite_master"
    " WHERE type = 'table' AND name = 'alembic_version'",
}


def _at_head(connection: Connection) -> bool:
    """Whether the schema is at ``SCHEMA_HEAD`` (read without raising on a new database, which
    on PostgreSQL would abort the transaction)."""
    exists = _VERSION_TABLE_EXISTS.get(connection.dialect.name)
    if exists is None or not connection.execute(text(exists)).scalar():
        return False
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    return list(versions) == [SCHEMA_HEAD]


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Several workers may start at once on a fresh database: one migrates, the rest wait.
        connection.execute(text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
    if _at_head(connection):
        return
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    try:
        command.upgrade(cfg, "head")
    except CommandError as exc:
        raise LedgerError(
            f"cannot upgrade the ledger schema ({exc}); was this database written by a newer "
            "version of workbench? Upgrade workbench, or point WORKBENCH_DATABASE_URL elsewhere."
        ) from exc


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent, safe from several processes)."""
    # the first connection of a process: its error names the database (a driver's "Connection
    # refused" may not: uvloop's does not say where it tried)
    where = engine.url.render_as_string(hide_password=True)
    with translate_errors(f"migrating the ledger at {where}"):
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)


def is_lock_error(exc: BaseException) -> bool:
    """True for errors that a retry of the whole transaction can fix (lock, deadlock, conflict)."""
    if not isinstance(exc, (OperationalError, DBAPIError)):
        return False
    msg = str(exc).lower()
    return any(
        s in msg
        for s in ("database is locked", "deadlock", "could not serialize", "database is busy")
    )


@contextlib.contextmanager
def translate_errors(doing: str) -> Iterator[None]:
    """Re-raise SQLAlchemy/driver errors as ``LedgerError`` saying what we were doing."""
    try:
        yield
    except LedgerError:
        raise
    except (SQLAlchemyError, OSError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
        raise LedgerError(f"ledger error while {doing}: {detail}") from exc
