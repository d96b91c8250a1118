"""Writing results: deterministic Parquet and JSON (outputs appear whole or not at all: see ``staging``)."""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from llmprof.common.staging import refuse_existing, staged_directory, staged_file, write_text_files

__all__ = [
    "OrderedWorker",
    "ParquetSink",
    "refuse_existing",
    "staged_directory",
    "staged_file",
    "write_json",
    "write_table",
    "write_text_files",
]

Item = TypeVar("Item")

#: Fixed writer settings: the same rows give byte-identical files.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "version": "2.6",
    "use_dictionary": True,
    "write_statistics": True,
    "store_schema": True,
}


class OrderedWorker(Generic[Item]):
    """Calls ``work(item)`` on one thread, in the order items were submitted.

    Lets work that releases the GIL (Parquet encoding, numpy) overlap with reading the next
    batch. At most ``queued`` items wait in memory; the first failure is raised to the submitter
    on its next call or by :meth:`close`, and later items are dropped.
    """

    def __init__(self, work: Callable[[Item], object], name: str, queued: int = 2) -> None:
        self._work = work
        self._pending: queue.Queue[tuple[Item] | None] = queue.Queue(maxsize=queued)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (item := self._pending.get()) is not None:
            if self._failure is None:
                try:
                    self._work(item[0])
                except BaseException as exc:  # handed to the submitter
                    self._failure = exc

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def submit(self, item: Item) -> None:
        self._raise_failure()
        self._pending.put((item,))

    def close(self) -> None:
        """Wait for every submitted item, then raise what the thread met (safe to call twice)."""
        if self._thread.is_alive():
            self._pending.put(None)
            self._thread.join()
        self._raise_failure()


class ParquetSink:
    """Streams record batches of one schema into one Parquet file; an empty table still gets a file.

    Encoding and compression run on an :class:`OrderedWorker` thread (pyarrow releases the GIL
    there), so they overlap with reading the next batch; batches are written in the order given,
    so the bytes are those of a plain sequential write.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self._writer = pq.ParquetWriter(str(path), schema, **PARQUET_OPTIONS)
        self._worker = OrderedWorker(self._writer.write_batch, name=f"parquet:{path.name}")

    def write(self, batch: pa.RecordBatch) -> None:
        self._worker.submit(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        """Wait for every queued batch, close the file and raise what the writer thread met."""
        try:
            self._worker.close()
        finally:
            self._writer.close()


def write_table(path: Path, table: pa.Table) -> None:
    """Write one in-memory table with the fixed settings."""
    pq.write_table(table, str(path), **PARQUET_OPTIONS)


def write_json(path: Path, data: Any) -> None:
    """Sorted keys, fixed indentation and a final newline: stable bytes for the same data.

    Written beside the target and renamed into place, so a reader never sees half a file.
    """
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)
