"""Tables -> chunks of (url, carried columns), in bounded memory.

    table = open_table(df, url_column="link", reserved=WORKBENCH_COLUMNS)  # or a file path
    table.carried            # [CarriedColumn(name, stored, dtype)]: what travels with each item
    for chunk in table.chunks():                                            # TableChunk
        chunk.start, chunk.urls, chunk.columns     # or chunk.rows: one JSON-safe dict per row

Sources: a pandas DataFrame, a polars DataFrame (when polars is installed; a ``LazyFrame`` must
be collected first), or a path to a ``.csv``/``.tsv`` (also ``.gz``, ``.bz2``, ``.zip``,
``.xz``, ``.zst``), ``.parquet``/``.pq``, or ``.jsonl``/``.ndjson`` (also ``.gz``, ``.bz2``,
``.xz``) file. At most
``chunk_rows`` rows are Python objects at a time: a DataFrame is sliced, a CSV read with
pandas' ``chunksize``, a Parquet file by record batches, a JSONL file line by line. A million
rows never exist as a million dicts.

Rules (the client and the CLI rely on them):
- **The URL column** must exist: otherwise ``InvalidTableError`` names it, the columns there
  are, and a likely one (``did you mean 'URL'?``). Its values go to ``TableChunk.urls`` as given
  (a missing value as ``None``): ``submit``'s validation reports each bad one by position. The
  URL column is not carried: each item's ``url`` already holds it.
- **One item per row.** Rows are never merged: two rows with the same URL and different labels
  are two items, so every input row has exactly one row in ``status()``, ``results()`` or
  ``failures()`` and joins back on its own columns (or on ``position``, the row's 0-based number
  in the input, which the client stores as the item's position). A page analysed twice costs
  little: the second fetch is normally a cache hit.
- **Carried columns** are every other column (or those named by ``columns``), stored with each
  item as JSON (``workbench.inputs.values``): numbers, strings, booleans and nulls as they are;
  NaN, NaT, ``pd.NA`` and ±inf as null; datetimes as ISO 8601 strings (an aware column as UTC,
  ``...Z``); lists and dicts (Parquet, JSONL) recursively. ``CarriedColumn.dtype`` keeps the
  input's dtype so ``restore_dtypes`` can give a frame its types back.
- **Name clashes**: a carried column whose name is taken (``reserved``: the columns Workbench
  puts in its frames, such as ``url``, ``status``, ``error_type``, ``final_url``; in
  ``results()`` also the pipeline's own fields) is stored as ``input_<name>`` (again prefixed
  until free). ``carried_names`` is that rule; the client applies it once at submit against
  its own columns, and again when a pipeline's result field has the same name.
- CSV values are typed by pandas per chunk (a number column with a gap reads as float in that
  chunk; pass a DataFrame for exact dtypes). JSONL columns are the keys of the first object and
  any key seen later (``TableInput.carried`` grows as chunks are read).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import pandas as pd

from workbench.core.errors import InvalidTableError
from workbench.inputs.values import column_values, json_list, json_value

__all__ = [
    "CARRIED_PREFIX",
    "CarriedColumn",
    "TableChunk",
    "TableInput",
    "carried_names",
    "open_table",
    "restore_dtypes",
]

CARRIED_PREFIX = "input_"
DEFAULT_CHUNK_ROWS = 50_000
_CSV = (".csv", ".tsv", ".txt")
_PARQUET = (".parquet", ".pq")
_JSONL = (".jsonl", ".ndjson")
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst")
_OPENERS: dict[str, Callable[..., IO[str]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


@dataclass(frozen=True)
class CarriedColumn:
    """A column carried with each item: its ``name`` in the input, the ``stored`` name it is
    kept and shown under (prefixed on a clash), and the input's ``dtype`` as text."""

    name: str
    stored: str
    dtype: str


@dataclass(frozen=True)
class TableChunk:
    """Rows ``start`` to ``start + len(urls) - 1`` of the input (0-based positions).

    ``columns`` maps each carried column's stored name to its values, one per row; ``rows``
    gives the same values as one dict per row (built on first use: a dict per row is most of
    the cost of reading a DataFrame, so a caller that can use the columns should)."""

    start: int
    urls: list[object]
    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.urls)

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        names, cols = list(self.columns), list(self.columns.values())
        if not names:
            return [{} for _ in self.urls]
        return [dict(zip(names, values, strict=True)) for values in zip(*cols, strict=True)]

    def positions(self) -> range:
        return range(self.start, self.start + len(self.urls))


@dataclass
class TableInput:
    """An opened table. ``rows`` is known up front for DataFrames and Parquet, else None."""

    source: str
    url_column: str
    carried: list[CarriedColumn]
    rows: int | None
    _chunks: Callable[[], Iterator[TableChunk]] = field(repr=False)

    def chunks(self) -> Iterator[TableChunk]:
        """The table in chunks, from the first row; call again to read it again."""
        return self._chunks()


def carried_names(
    names: Iterable[str], taken: Collection[str], *, prefix: str = CARRIED_PREFIX
) -> dict[str, str]:
    """Each carried name -> the name it is stored under: itself, or ``prefix`` + it (repeated)
    while that is in ``taken`` or already given to an earlier column."""
    out: dict[str, str] = {}
    used = set(taken)
    for name in names:
        stored = name
        while stored in used:
            stored = prefix + stored
        used.add(stored)
        out[name] = stored
    return out


def open_table(
    source: object,
    *,
    url_column: str = "url",
    reserved: Collection[str],
    columns: Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> TableInput:
    """Open a DataFrame or a table file for chunked reading (see the module doc).

    ``reserved``: names a carried column may not take (the client passes its frames' columns).
    ``columns``: the columns to carry (default: all but the URL column).
    """
    if chunk_rows < 1:
        raise InvalidTableError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if isinstance(source, pd.DataFrame):
        return _pandas(source, "the DataFrame", url_column, reserved, columns, chunk_rows)
    if type(source).__module__.split(".")[0] == "polars":
        return _polars(source, url_column, reserved, columns, chunk_rows)
    if isinstance(source, str | Path):
        return _file(Path(source), url_column, reserved, columns, chunk_rows)
    raise InvalidTableError(
        f"cannot read a table from {type(source).__name__}: give a pandas or polars DataFrame, "
        "or the path of a .csv, .parquet or .jsonl file"
    )


def restore_dtypes(df: pd.DataFrame, carried: Sequence[CarriedColumn]) -> pd.DataFrame:
    """Give carried columns of ``df`` (under their stored names) their input dtypes back where
    the JSON values allow it; a column that will not convert is left as it is."""
    for col in carried:
        if col.stored not in df.columns:
            continue
        try:
            if col.dtype.startswith("datetime64"):
                utc = "UTC" in col.dtype or "," in col.dtype
                df[col.stored] = pd.to_datetime(df[col.stored], utc=utc, format="ISO8601")
            elif col.dtype in ("object", "str"):
                continue
            else:
                df[col.stored] = df[col.stored].astype(col.dtype)
        except (ValueError, TypeError, OverflowError):
            continue
    return df


# -- sources --


def _pick(
    names: list[str], url_column: str, columns: Sequence[str] | None, source: str
) -> list[str]:
    """The carried columns' input names, after checking the URL column and ``columns``."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidTableError(f"{source} has duplicate column names: {dupes}")
    if url_column not in names:
        shown = ", ".join(repr(n) for n in names[:20]) + (" ..." if len(names) > 20 else "")
        hint = next((n for n in names if n.lower() in ("url", "urls", "link", "href", "uri")), None)
        raise InvalidTableError(
            f"{source} has no URL column {url_column!r}; its columns are: {shown or '(none)'}"
            + (f" (did you mean {hint!r}? pass url_column={hint!r})" if hint else "")
        )
    if columns is None:
        return [n for n in names if n != url_column]
    missing = [c for c in columns if c not in names]
    if missing:
        raise InvalidTableError(f"{source} has no column(s) {missing} to carry")
    return [c for c in dict.fromkeys(columns) if c != url_column]


def _carried(
    picked: list[str], dtypes: dict[str, str], reserved: Collection[str]
) -> list[CarriedColumn]:
    stored = carried_names(picked, reserved)
    return [CarriedColumn(n, stored[n], dtypes.get(n, "object")) for n in picked]


def _pandas(
    df: pd.DataFrame,
    source: str,
    url_column: str,
    reserved: Collection[str],
    columns: Sequence[str] | None,
    chunk_rows: int,
) -> TableInput:
    df = df.rename(columns=str) if any(not isinstance(c, str) for c in df.columns) else df
    names = list(df.columns)
    picked = _pick(names, url_column, columns, source)
    carried = _carried(picked, {n: str(df[n].dtype) for n in picked}, reserved)

    def chunks() -> Iterator[TableChunk]:
        for start in range(0, len(df), chunk_rows):
            yield _pandas_chunk(df.iloc[start : start + chunk_rows], start, url_column, carried)

    return TableInput(source, url_column, carried, len(df), chunks)


def _pandas_chunk(
    part: pd.DataFrame, start: int, url_column: str, carried: list[CarriedColumn]
) -> TableChunk:
    urls = column_values(part[url_column])
    cols = [column_values(part[c.name]) for c in carried]
    return TableChunk(start, urls, dict(zip([c.stored for c in carried], cols, strict=True)))


def _polars(
    df: Any, url_column: str, reserved: Collection[str], columns: Sequence[str] | None,
    chunk_rows: int,
) -> TableInput:
    if not hasattr(df, "slice") or not hasattr(df, "get_column"):
        raise InvalidTableError(
            f"cannot read a polars {type(df).__name__}: collect() it into a DataFrame first"
        )
    names = [str(c) for c in df.columns]
    picked = _pick(names, url_column, columns, "the polars DataFrame")
    carried = _carried(picked, {n: str(df.schema[n]) for n in picked}, reserved)

    def chunks() -> Iterator[TableChunk]:
        for start in range(0, df.height, chunk_rows):
            part = df.slice(start, chunk_rows)
            urls = json_list(part.get_column(url_column).to_list())
            cols = [json_list(part.get_column(c.name).to_list()) for c in carried]
            yield TableChunk(start, urls, dict(zip([c.stored for c in carried], cols, strict=True)))

    return TableInput("the polars DataFrame", url_column, carried, df.height, chunks)


def _file(
    path: Path, url_column: str, reserved: Collection[str], columns: Sequence[str] | None,
    chunk_rows: int,
) -> TableInput:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if not path.is_file():
        raise InvalidTableError(f"no such file: {path}")
    if kind in _CSV:
        return _csv(path, kind, url_column, reserved, columns, chunk_rows)
    if kind in _PARQUET:
        return _parquet(path, url_column, reserved, columns, chunk_rows)
    if kind in _JSONL:
        return _jsonl(path, url_column, reserved, columns, chunk_rows)
    raise InvalidTableError(
        f"cannot tell the format of {path} from its name: use .csv, .tsv, .parquet or .jsonl "
        "(CSV may end in .gz, .bz2, .zip, .xz or .zst; JSONL in .gz, .bz2 or .xz)"
    )


def _csv(
    path: Path, kind: str, url_column: str, reserved: Collection[str],
    columns: Sequence[str] | None, chunk_rows: int,
) -> TableInput:
    sep = "\t" if kind == ".tsv" else ","
    source = f"the file {path}"
    try:
        header = pd.read_csv(path, sep=sep, nrows=0)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InvalidTableError(f"cannot read {path} as CSV: {exc}") from exc
    names = [str(c) for c in header.columns]
    picked = _pick(names, url_column, columns, source)
    carried = _carried(picked, {}, reserved)

    def chunks() -> Iterator[TableChunk]:
        start = 0
        try:
            reader = pd.read_csv(
                path, sep=sep, chunksize=chunk_rows, usecols=[url_column, *picked],
                dtype={url_column: object},
            )
            with reader:
                for part in reader:
                    yield _pandas_chunk(part, start, url_column, carried)
                    start += len(part)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise InvalidTableError(f"cannot read {path} past row {start}: {exc}") from exc

    return TableInput(source, url_column, carried, None, chunks)


def _parquet(
    path: Path, url_column: str, reserved: Collection[str], columns: Sequence[str] | None,
    chunk_rows: int,
) -> TableInput:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = f"the file {path}"
    try:
        meta = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidTableError(f"cannot read {path} as Parquet: {exc}") from exc
    schema = meta.schema_arrow
    names = list(schema.names)
    picked = _pick(names, url_column, columns, source)
    carried = _carried(picked, {n: str(schema.field(n).type) for n in picked}, reserved)

    def chunks() -> Iterator[TableChunk]:
        start = 0
        with pq.ParquetFile(path) as f:
            for batch in f.iter_batches(batch_size=chunk_rows, columns=[url_column, *picked]):
                urls = json_list(batch.column(url_column).to_pylist())
                cols = [json_list(batch.column(c.name).to_pylist()) for c in carried]
                yield TableChunk(start, urls, dict(zip([c.stored for c in carried], cols,
                                                       strict=True)))
                start += batch.num_rows

    return TableInput(source, url_column, carried, meta.metadata.num_rows, chunks)


def _jsonl(
    path: Path, url_column: str, reserved: Collection[str], columns: Sequence[str] | None,
    chunk_rows: int,
) -> TableInput:
    source = f"the file {path}"
    with _open_text(path) as f:
        first = _json_line(next((line for line in f if line.strip()), "{}"), path, 1)
    picked = _pick(list(first), url_column, columns, source)
    carried = _carried(picked, {}, reserved)
    names = {c.name for c in carried}
    taken = set(reserved) | {c.stored for c in carried}
    fixed = columns is not None

    def chunks() -> Iterator[TableChunk]:
        start = 0
        urls: list[object] = []
        rows: list[dict[str, Any]] = []
        with _open_text(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                obj = _json_line(line, path, number)
                if not fixed:
                    for key in obj:
                        if key not in names and key != url_column:  # a column first seen here
                            col = CarriedColumn(key, carried_names([key], taken)[key], "object")
                            carried.append(col)
                            names.add(key)
                            taken.add(col.stored)
                urls.append(obj.get(url_column))
                rows.append({c.stored: json_value(obj.get(c.name)) for c in carried})
                if len(urls) >= chunk_rows:
                    yield _rows_chunk(start, urls, rows, carried)
                    start += len(urls)
                    urls, rows = [], []
        if urls:
            yield _rows_chunk(start, urls, rows, carried)

    return TableInput(source, url_column, carried, None, chunks)


def _open_text(path: Path) -> IO[str]:
    opener = _OPENERS.get(path.suffix.lower())
    return opener(path, "rt", encoding="utf-8") if opener else path.open(encoding="utf-8")


def _json_line(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise InvalidTableError(f"line {number} of {path} is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidTableError(
            f"line {number} of {path} is a JSON {type(obj).__name__}, not an object"
        )
    return obj


# -- values --


def _rows_chunk(
    start: int, urls: list[object], rows: list[dict[str, Any]], carried: list[CarriedColumn]
) -> TableChunk:
    columns = {c.stored: [row.get(c.stored) for row in rows] for c in carried}
    return TableChunk(start, urls, columns)
