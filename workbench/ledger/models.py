"""SQLAlchemy 2 models of the ledger: batches, items, results, stored pages, workers.

Times are stored as naive UTC (SQLite has no time zones) and handed back as aware UTC.
``ItemRow.status`` holds one of ``workbench.core.status.ITEM_STATUSES``. ``ItemRow.carried`` holds
the input row's other columns (``workbench.inputs.tables``) as JSON text, ``BatchRow.carried``
their names and dtypes. A result is stored in
parts (``workbench.ledger.shapes``): its small fields in ``results.data``, its bulky values in
``result_bulk``, and the shape of its fields once per distinct shape in ``result_shapes``.
``batch_counts`` holds each batch's items per status (``workbench.ledger.counters``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database (same on SQLite and PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


# SQLite only aliases rowid for INTEGER PRIMARY KEY, so keep BigInteger off SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class BatchRow(Base):
    """A batch. ``total`` is the number of its items: they are inserted with it, by
    ``create_batch`` alone, and never deleted alone (its ``batch_counts`` rely on it)."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    pipeline: Mapped[str] = mapped_column(String(100))
    pipeline_version: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    params_hash: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    total: Mapped[int] = mapped_column(Integer)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    invalid: Mapped[int] = mapped_column(Integer, default=0)
    # a rerun analyses the pages stored for this batch's URLs instead of refetching them
    use_stored_pages: Mapped[bool] = mapped_column(Boolean, default=False)
    source_batch_id: Mapped[str | None] = mapped_column(String(40))
    notify: Mapped[str | None] = mapped_column(String(320))
    # claimed by exactly one worker when the batch settles (one email per batch)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # the columns carried with each item (workbench.inputs.tables): [[name, stored, dtype], ...]
    carried: Mapped[list[list[str]] | None] = mapped_column(JSON)


class ItemRow(Base):
    __tablename__ = "items"
    __table_args__ = (
        # id last: a batch's items of one status in item order, for keyset pagination (SQLite
        # appends the rowid anyway; PostgreSQL needs it named)
        Index("ix_items_batch_status_id", "batch_id", "status", "id"),
        # the running items by worker (reconcile's lost items). Partial: queued and settled
        # items are never in it, so a submit, a cancel or a completion of a million items does
        # not write a million entries of one key (a full (status, worker_id) index was ~40 % of
        # a 1M-item cancel's UPDATE)
        Index("ix_items_running_worker", "worker_id",
              sqlite_where=text("status = 'running'"), postgresql_where=text("status = 'running'")),
        # the failures that finished since a time (the notebook monitor's read at each tick):
        # a range, where (batch_id, status, id) visited every failed item of the batch. Partial,
        # so that only an item entering or leaving "failed" writes to it, not every completion
        Index("ix_items_failed_finished", "batch_id", "finished_at",
              sqlite_where=text("status = 'failed'"), postgresql_where=text("status = 'failed'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    normalized_url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    # the attempt number of the current job: job id is "<id>:<attempts>"; only that job may write
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    # tries in the current round (reset by a manual retry); bounded by max_tries
    tries: Mapped[int] = mapped_column(Integer, default=0)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_try_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    worker_id: Mapped[str | None] = mapped_column(String(120))
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    error_type: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    retryable: Mapped[bool | None] = mapped_column(Boolean)
    # the input row's other columns, a JSON object of stored name -> value (or None)
    carried: Mapped[str | None] = mapped_column(Text)


class BatchCountRow(Base):
    """How many of a batch's items are in a status: the sum of its rows over ``shard``
    (``workbench.ledger.counters``; kept by the transactions that change statuses)."""

    __tablename__ = "batch_counts"
    # on SQLite the key is the row: one B-tree, not a table and its key's index
    __table_args__ = ({"sqlite_with_rowid": False},)

    batch_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    # 0 for the batch's first counts and on SQLite; a PostgreSQL connection's backend pid
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class CountPauseRow(Base):
    """A row here, never committed, pauses SQLite's counter trigger for the bulk statement of
    the transaction that inserted it (``counters.bulk``). PostgreSQL's trigger needs no pause."""

    __tablename__ = "count_pause"

    paused: Mapped[int] = mapped_column(Integer, primary_key=True)


class ResultRow(Base):
    __tablename__ = "results"
    __table_args__ = (
        Index(
            "ix_results_cache_key", "pipeline", "pipeline_version", "params_hash", "normalized_url"
        ),
        # the distinct shapes of a batch, and the first item of each, by index seeks alone
        Index("ix_results_batch_shape", "batch_id", "shape", "item_id"),
    )

    item_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    batch_id: Mapped[str] = mapped_column(String(40))
    normalized_url: Mapped[str] = mapped_column(Text)
    pipeline: Mapped[str] = mapped_column(String(100))
    pipeline_version: Mapped[str] = mapped_column(String(64))
    params_hash: Mapped[str] = mapped_column(String(32))
    workbench_version: Mapped[str] = mapped_column(String(32))
    # the pipeline's dict, encoded by workbench.core.codec (JSON, numpy arrays compact), with
    # its bulky values null here and kept in result_bulk (workbench.ledger.shapes)
    data: Mapped[str] = mapped_column(Text)
    shape: Mapped[str] = mapped_column(String(16), server_default="")
    final_url: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None] = mapped_column(Integer)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    from_stored_page: Mapped[bool] = mapped_column(Boolean, default=False)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ResultBulkRow(Base):
    """The bulky values of one result (a JSON object: field -> value), apart from the small
    fields so that reading those never reads these."""

    __tablename__ = "result_bulk"

    item_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[str] = mapped_column(Text)


class ResultShapeRow(Base):
    """One distinct shape of results: its fields in order, with JSON kind and storage
    (``workbench.ledger.shapes``)."""

    __tablename__ = "result_shapes"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    fields: Mapped[str] = mapped_column(Text)


class PageBlobRow(Base):
    """A raw page body, zlib-compressed and addressed by the sha256 of the uncompressed bytes."""

    __tablename__ = "page_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class SnapshotRow(Base):
    """One fetch of a URL: what came back and which blob holds the body."""

    __tablename__ = "snapshots"
    __table_args__ = (Index("ix_snapshots_url_time", "normalized_url", "fetched_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    normalized_url: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    final_url: Mapped[str] = mapped_column(Text)
    http_status: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(200))
    encoding: Mapped[str] = mapped_column(String(40))
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkerRow(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    concurrency: Mapped[int] = mapped_column(Integer)
    pipelines: Mapped[list[str]] = mapped_column(JSON, default=list)
    items_done: Mapped[int] = mapped_column(Integer, default=0)
