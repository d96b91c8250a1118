"""An open Nsight Systems SQLite export: the one connection every read goes through.

It checks that a file is a whole, readable nsys export, tells which tables and
columns this export has (nsys creates tables lazily and has added and renamed
columns across versions), resolves names through ``StringIds`` and enum labels
through ``ENUM_*`` tables (with built-in fallbacks for exports that predate
them), and streams query results in fixed-size Arrow batches. What the tables
mean is in :mod:`llmprof.nsys.schema`; which rows each llmprof table takes is
in :mod:`llmprof.nsys.events`.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from llmprof.common.errors import InputError, SchemaError, brief
from llmprof.nsys.schema import METADATA_TABLES, STRINGS

try:  # the fast path to Arrow; the standard library's sqlite3 serves where it is not installed
    import adbc_driver_sqlite.dbapi as adbc_dbapi
except ImportError:  # pragma: no cover - depends on the environment
    adbc_dbapi = None  # type: ignore[assignment]

SQLITE_MAGIC = b"SQLite format 3\x00"
BATCH_ROWS = 262_144


@dataclass(frozen=True)
class Export:
    """An open, validated nsys SQLite export and what it contains."""

    path: Path
    connection: sqlite3.Connection
    columns: dict[str, tuple[str, ...]] = field(repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def has(self, table: str, *cols: str) -> bool:
        """True when ``table`` exists and has every one of ``cols``."""
        present = self.columns.get(table)
        return present is not None and all(c in present for c in cols)

    def has_rows(self, table: str) -> bool:
        """True when ``table`` exists and holds at least one row."""
        if table not in self.columns:
            return False
        return bool(self.scalar(f'SELECT EXISTS (SELECT 1 FROM "{table}")') == 1)

    def first_column(self, table: str, *candidates: str) -> str | None:
        """The first of ``candidates`` that ``table`` has (columns were renamed over versions)."""
        present = self.columns.get(table, ())
        return next((c for c in candidates if c in present), None)

    def require(self, table: str, *cols: str) -> None:
        """Raise SchemaError naming the table or column that is missing."""
        if table not in self.columns:
            raise SchemaError(f"{self.path}: table {table} absent from this export")
        missing = [c for c in cols if c not in self.columns[table]]
        if missing:
            raise SchemaError(
                f"{self.path}: table {table} lacks column(s) {', '.join(missing)}: export it again with a newer nsys"
            )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` and return every row (for small results only)."""
        try:
            with self._guard:  # one statement at a time on the shared connection
                return self.connection.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._read_error(exc) from exc

    def _read_error(self, exc: sqlite3.DatabaseError) -> InputError:
        """A missing table or column is a schema problem; anything else is a damaged file."""
        if isinstance(exc, sqlite3.OperationalError) and ("no such column" in str(exc) or "no such table" in str(exc)):
            return SchemaError(
                f"{self.path}: {brief(exc)}: this export lacks data llmprof needs; export it again with a newer nsys"
            )
        return InputError(f"{self.path}: cannot be read ({brief(exc)}); the file is corrupt or truncated")

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run ``sql`` and return the first column of its first row (None when empty)."""
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def arrow_batches(self, sql: str, schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
        """Stream the rows of ``sql`` as Arrow record batches (columns renamed and cast to ``schema``).

        Uses the ADBC SQLite driver, which fills Arrow buffers without Python objects per row, where
        installed; otherwise the standard library's sqlite3. Both yield the same batches, text
        decoded by one policy (:func:`decode_text`).
        """
        try:
            source = _adbc_batches(self.path, sql) if adbc_dbapi is not None else self._sqlite3_batches(sql)
            for batch in source:
                batch = _valid_text(batch)
                yield batch if schema is None else conform(batch, schema)
        except sqlite3.DatabaseError as exc:
            raise self._read_error(exc) from exc
        except Exception as exc:  # ADBC raises its own DB-API error classes
            if adbc_dbapi is not None and isinstance(exc, adbc_dbapi.Error):
                raise self._read_error(sqlite3.OperationalError(str(exc).splitlines()[0])) from exc
            raise

    def parallel_batches(
        self, table: str, select: str, where: str = "", readers: int = 0, min_rows: int = 2 * BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """Rows of ``SELECT {select} FROM {table} [WHERE {where}]``, read over rowid ranges by several readers at once.

        Batches come in no fixed order: for consumers that do not depend on it (grouping). One
        reader (the plain ``arrow_batches``) serves tables under ``min_rows`` and the sqlite3 fallback.
        """
        readers = readers or min(4, (os.cpu_count() or 1) // 4)  # reports run side by side: leave cores to them
        filtered = f"WHERE {where}" if where else ""
        low, high = self.query(f'SELECT min(rowid), max(rowid) FROM "{table}"')[0]
        if low is None or readers < 2 or adbc_dbapi is None or high - low < min_rows:
            yield from self.arrow_batches(f'SELECT {select} FROM "{table}" {filtered}')
            return
        step = -(-(high - low + 1) // readers)
        condition = f"({where}) AND " if where else ""

        def rows_from(first: int) -> Iterator[pa.RecordBatch]:
            sql = f'SELECT {select} FROM "{table}" WHERE {condition}rowid >= {first} AND rowid < {first + step}'
            return self.arrow_batches(sql)

        yield from _interleaved(rows_from(first) for first in range(low, high + 1, step))

    def _sqlite3_batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        cursor = self.connection.execute(sql)
        names = [d[0] for d in cursor.description]
        while rows := cursor.fetchmany(BATCH_ROWS):
            columns = list(zip(*rows))
            yield pa.RecordBatch.from_arrays([pa.array(list(c)) for c in columns], names=names)

    def enum_labels(self, table: str, fallback: dict[int, str]) -> dict[int, str]:
        """Labels of an ``ENUM_*`` table, or ``fallback`` for exports that predate it."""
        if not self.has(table, "id", "label"):
            return dict(fallback)
        labels = dict(fallback)
        labels.update({int(i): str(label) for i, label in self.query(f'SELECT id, label FROM "{table}"')})
        return labels

    def metadata(self) -> dict[str, str]:
        """Export metadata (nsys version, schema); the table was renamed in nsys 2023.3."""
        for table in METADATA_TABLES:
            if self.has(table, "name", "value"):
                return {str(k): str(v) for k, v in self.query(f'SELECT name, value FROM "{table}"')}
        return {}

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _interleaved(sources: Iterable[Iterator[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
    """The batches of several sources, each read on its own thread, in the order they arrive.

    The first failure of a reader is raised to the consumer; when the consumer stops early, every
    reader is let finish its current batch and end.
    """
    readers = list(sources)
    arrived: queue.Queue[pa.RecordBatch | BaseException | None] = queue.Queue(maxsize=2 * len(readers))
    stop = threading.Event()

    def read(source: Iterator[pa.RecordBatch]) -> None:
        try:
            for batch in source:
                if stop.is_set():
                    return
                arrived.put(batch)
        except BaseException as exc:  # handed to the consumer
            arrived.put(exc)
        finally:
            arrived.put(None)

    threads = [threading.Thread(target=read, args=(source,), daemon=True) for source in readers]
    for thread in threads:
        thread.start()
    finished = 0
    try:
        while finished < len(threads):
            item = arrived.get()
            if item is None:
                finished += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        while any(thread.is_alive() for thread in threads):  # let every reader put its last item and end
            try:
                arrived.get(timeout=0.05)
            except queue.Empty:
                pass


def decode_text(raw: bytes) -> str:
    """The one decoding of text read from an export: UTF-8, an undecodable byte shown as U+FFFD.

    Real exports hold bytes that are not UTF-8 in text columns (a Latin-1 user name in the
    metadata, a binary blob stored as text); they are shown as nsys's own tools show them,
    and never make a readable export look corrupt.
    """
    return raw.decode("utf-8", errors="replace")


def _valid_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with every text column valid UTF-8 (ADBC passes the bytes SQLite holds unchecked)."""
    for index, column in enumerate(batch.columns):
        if not pa.types.is_string(column.type):
            continue
        try:
            column.validate(full=True)
        except pa.ArrowInvalid:
            raw = column.cast(pa.binary()).to_pylist()
            texts = pa.array([None if v is None else decode_text(v) for v in raw], type=pa.string())
            batch = batch.set_column(index, batch.schema.field(index), texts)
    return batch


def read_only_uri(path: Path) -> str:
    """A read-only SQLite URI of ``path``, every byte of the name percent-encoded.

    So that ``#``, ``?`` or ``%`` in a folder name, and names that are not UTF-8, open the file they name.
    """
    return f"file:{urllib.parse.quote_from_bytes(os.fsencode(path.resolve()))}?mode=ro"


def _adbc_batches(path: Path, sql: str) -> Iterator[pa.RecordBatch]:
    assert adbc_dbapi is not None
    with adbc_dbapi.connect(read_only_uri(path)) as connection, connection.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})
        cursor.execute(sql)
        yield from cursor.fetch_record_batch()


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Rename columns positionally to ``schema`` and cast them (all-NULL columns come typed as anything).

    Raises:
        pyarrow.ArrowInvalid: a column the schema declares non-nullable holds NULL, or a value does not cast.
    """
    arrays = []
    for column, target in zip(batch.columns, schema):
        if column.null_count and not target.nullable:
            raise pa.ArrowInvalid(f"column {target.name} holds {column.null_count} NULL value(s)")
        if column.type != target.type:
            empty = column.null_count == len(column)
            column = pa.nulls(len(column), target.type) if empty else column.cast(target.type)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); export the capture again")
    with path.open("rb") as handle:
        header = handle.read(100)
    if not header.startswith(SQLITE_MAGIC):
        raise InputError(
            f"{path}: not an SQLite file; make one with `nsys export --type sqlite` "
            "(a .nsys-rep goes through the export stage first)"
        )
    if len(header) < 100:
        raise InputError(f"{path}: truncated SQLite file ({size} bytes, header incomplete)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    page_count = int.from_bytes(header[28:32], "big")
    change_counter = header[24:28]
    valid_for = header[92:96]
    if page_count and change_counter == valid_for and size < page_size * page_count:
        raise InputError(
            f"{path}: truncated SQLite file ({size} bytes, header says {page_size * page_count}); "
            "copy or export it again"
        )


def open_export(path: str | Path) -> Export:
    """Open an nsys SQLite export read-only and check that it is whole and from nsys.

    Raises:
        InputError: the file is missing, empty, truncated, corrupt or not an nsys export.
    """
    path = Path(path)
    _check_file(path)
    try:
        connection = sqlite3.connect(read_only_uri(path), uri=True, check_same_thread=False)
        connection.text_factory = decode_text
        names = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
        columns = {name: tuple(r[1] for r in connection.execute(f'PRAGMA table_info("{name}")')) for name in names}
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: cannot be read as SQLite ({brief(exc)}); the file is corrupt") from exc
    if STRINGS not in columns:
        connection.close()
        raise InputError(
            f"{path}: not an Nsight Systems export (no StringIds table); make one with `nsys export --type sqlite`"
        )
    return Export(path=path, connection=connection, columns=columns)
