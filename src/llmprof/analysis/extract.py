"""Extract stage: an nsys SQLite export in, typed Parquet tables and ``metrics.json`` out.

Every event table is read with one SQL query that selects only the columns it
needs, resolves names through ``StringIds`` and enum labels inside SQLite, and
streams rows as Arrow batches into a Parquet writer, so memory does not grow
with the export. Columns that older nsys versions lack are read as NULL. Event
rows keep the export's own order, which is fixed for a given file: sorting tens
of millions of rows inside SQLite would cost more than the extraction itself.

The summaries are fed from the same batches as they pass (:class:`EventScan`, on
its own thread): calls are read first, then GPU operations are joined to them, so
the export is scanned once. Past fixed budgets, calls, operations and grouped
values wait on disk in the staging folder and come back a partition or key range at
a time, so memory stays bounded whatever the size of the export.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from llmprof.analysis import tables
from llmprof.analysis.categories import API_KIND, Classifier, kernel_classifier
from llmprof.analysis.grouped import GroupedValues
from llmprof.analysis.launches import KERNEL, LAUNCHES_KEY, RUNTIME, LaunchScan
from llmprof.analysis.metrics import capture_window, compute_metrics, gpu_activity
from llmprof.analysis.stats import (
    GLOBAL_PID_MASK,
    MEMCPY,
    MEMSET,
    OSRT,
    OSRT_EVENT_CLASS,
    PID_MASK,
    REPORTS,
    ReportSkipped,
    durations_key,
    kernel_name_column,
    launches,
    nvtx_range_source,
    nvtx_ranges,
    report_table,
)
from llmprof.common.outputs import OrderedWorker, ParquetSink, staged_directory, write_json, write_table
from llmprof.nsys.export import (
    MEM_KIND_LABELS,
    MEMCPY_KIND_LABELS,
    SYNC_TYPE_LABELS,
    Export,
    api_name_sql,
    conform,
    open_export,
)

log = logging.getLogger(__name__)

SYNC = "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION"

#: Short direction of each memcpy kind label.
DIRECTIONS = {
    "Host-to-Device": "H2D",
    "Device-to-Host": "D2H",
    "Device-to-Device": "D2D",
    "Host-to-Host": "H2H",
    "Peer-to-Peer": "P2P",
    "Unified Host-to-Device": "H2D",
    "Unified Device-to-Host": "D2H",
    "Unified Device-to-Device": "D2D",
}


def _col(export: Export, table: str, column: str, default: str = "NULL") -> str:
    """``t.column`` when the export has it, else ``default`` (columns came and went over versions)."""
    return f't."{column}"' if export.has(table, column) else default


def _case(column: str, labels: Mapping[int, str]) -> str:
    """SQL CASE that turns an enum id into its label."""
    whens = " ".join(f"WHEN {k} THEN '{v.replace(chr(39), chr(39) * 2)}'" for k, v in sorted(labels.items()))
    return f"CASE {column} {whens} ELSE 'Unknown' END"


def _pid(column: str) -> str:
    return f"(({column} >> 24) & {PID_MASK})"


def _tid(column: str) -> str:
    return f"({column} & {PID_MASK})"


def _gpu_columns(export: Export, table: str) -> str:
    return (
        f"t.deviceId, {_col(export, table, 'contextId')}, {_col(export, table, 'streamId')}, "
        f't.correlationId, {_pid("t.globalPid")}, t.start, t."end", t."end" - t.start'
    )


def _kernels_sql(export: Export) -> str:
    """Kernel rows; the name columns carry StringIds ids, resolved per batch (see ``TableReader.names``)."""
    return f"""
        SELECT {_gpu_columns(export, KERNEL)}, t.{kernel_name_column(export)}, t.shortName, NULL,
               t.gridX, t.gridY, t.gridZ, t.blockX, t.blockY, t.blockZ,
               {_col(export, KERNEL, "registersPerThread")}, {_col(export, KERNEL, "staticSharedMemory")},
               {_col(export, KERNEL, "dynamicSharedMemory")}, {_col(export, KERNEL, "graphNodeId")},
               t.globalPid
        FROM {KERNEL} t
    """


def _cuda_api_sql(export: Export) -> str:
    """CUDA call rows; ``name`` carries the StringIds id, resolved per batch."""
    return f"""
        SELECT {_pid("t.globalTid")}, {_tid("t.globalTid")}, t.start, t."end", t."end" - t.start,
               t.correlationId, t.nameId, NULL, {_col(export, RUNTIME, "returnValue")}, t.globalTid
        FROM {RUNTIME} t
    """


def _memcpy_sql(export: Export) -> str:
    kinds = export.enum_labels("ENUM_CUDA_MEMCPY_OPER", MEMCPY_KIND_LABELS)
    mem = export.enum_labels("ENUM_CUDA_MEM_KIND", MEM_KIND_LABELS)
    directions = {k: DIRECTIONS.get(v, "other") for k, v in kinds.items()}
    return f"""
        SELECT {_gpu_columns(export, MEMCPY)}, t.bytes, {_case("t.copyKind", kinds)},
               {_case("t.copyKind", directions).replace("'Unknown'", "'other'")},
               {_case(_col(export, MEMCPY, "srcKind"), mem)}, {_case(_col(export, MEMCPY, "dstKind"), mem)},
               t.globalPid
        FROM {MEMCPY} t
    """


def _memset_sql(export: Export) -> str:
    mem = export.enum_labels("ENUM_CUDA_MEM_KIND", MEM_KIND_LABELS)
    return f"""
        SELECT {_gpu_columns(export, MEMSET)}, t.bytes, {_col(export, MEMSET, "value")},
               {_case(_col(export, MEMSET, "memKind"), mem)}, t.globalPid
        FROM {MEMSET} t
    """


def _sync_sql(export: Export) -> str:
    labels = export.enum_labels("ENUM_CUPTI_SYNC_TYPE", SYNC_TYPE_LABELS)
    return f"""
        SELECT {_gpu_columns(export, SYNC)}, {_case(_col(export, SYNC, "syncType"), labels)}
        FROM {SYNC} t
    """


def _nvtx_sql(export: Export) -> str:
    return f"""
        SELECT {_pid("global_tid")}, {_tid("global_tid")}, start, "end", "end" - start, domain, name, style
        FROM ({nvtx_range_source(export)}) ORDER BY start, global_tid, name
    """


def _osrt_sql(export: Export) -> str:
    where = f"WHERE t.eventClass = {OSRT_EVENT_CLASS}" if export.has(OSRT, "eventClass") else ""
    return f"""
        SELECT {_pid("t.globalTid")}, {_tid("t.globalTid")}, t.start, t."end", t."end" - t.start, s.value
        FROM {OSRT} t LEFT JOIN StringIds s ON s.id = t.nameId {where}
    """


def _gpus_sql(export: Export) -> str | None:
    table = "TARGET_INFO_GPU"
    device = export.first_column(table, "id", "deviceId")
    if device is None:
        return None
    capability = (
        "t.computeMajor || '.' || t.computeMinor" if export.has(table, "computeMajor", "computeMinor") else "NULL"
    )
    return f"""
        SELECT t.{device}, t.name, {_col(export, table, "busLocation")}, {_col(export, table, "totalMemory")},
               {_col(export, table, "smCount")}, {capability}, {_col(export, table, "memoryBandwidth")},
               {_col(export, table, "clockRate")}
        FROM {table} t ORDER BY t.{device}, t.busLocation
    """


def _processes_sql(export: Export) -> str | None:
    """Processes that made CUDA calls, ran kernels, NVTX ranges or OS runtime calls in the capture."""
    sources = [
        f"SELECT DISTINCT {column} AS gpid FROM {table}"
        for table, column in (
            (RUNTIME, f"globalTid & {GLOBAL_PID_MASK}"),
            (OSRT, f"globalTid & {GLOBAL_PID_MASK}"),
            ("NVTX_EVENTS", f"globalTid & {GLOBAL_PID_MASK}"),
            (KERNEL, "globalPid"),
        )
        if export.has(table, column.split()[0])
    ]
    if not sources:
        return None
    seen = " UNION ".join(sources)
    if export.has("PROCESSES", "globalPid", "pid", "name"):
        name, join = "p.name", "LEFT JOIN PROCESSES p ON p.globalPid = seen.gpid"
    elif export.has("ThreadNames", "nameId", "globalTid"):  # nsys 2020: the main thread's name names the process
        name = "s.value"
        join = (
            f"LEFT JOIN ThreadNames th ON th.globalTid = seen.gpid + {_pid('seen.gpid')} "
            "LEFT JOIN StringIds s ON s.id = th.nameId"
        )
    else:
        name, join = "NULL", ""
    return f"SELECT DISTINCT {_pid('seen.gpid')}, {name} FROM ({seen}) seen {join} ORDER BY 1, 2"


@dataclass(frozen=True)
class TableReader:
    """How one event table is read: its source table, query and per-batch derived columns."""

    name: str
    source: str | None
    query: Callable[[Export], str | None]
    required: tuple[str, ...] = ()
    derive: Callable[[pa.RecordBatch, Classifier], pa.RecordBatch] | None = None
    #: Output columns that the query fills with StringIds ids → the SQL that turns ``value`` into the text.
    names: Mapping[str, str] = field(default_factory=dict)
    #: Columns the query yields after the table's own, for the scan only (not written).
    extra: tuple[str, ...] = ()


class NameResolver:
    """StringIds ids to text, looked up once per distinct id: cheaper than joining every row in SQLite."""

    def __init__(self, export: Export, transform: str) -> None:
        self.export, self.transform = export, transform
        self.known: dict[int, str | None] = {}

    def __call__(self, ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        codes, uniques = pd.factorize(ids.to_numpy(zero_copy_only=False), use_na_sentinel=True)
        missing = [int(i) for i in uniques if i == i and int(i) not in self.known]
        for start in range(0, len(missing), 10_000):
            listed = ",".join(str(i) for i in missing[start : start + 10_000])
            rows = self.export.query(f"SELECT id, {self.transform} FROM StringIds WHERE id IN ({listed})")
            self.known.update({int(i): v for i, v in rows})
        texts = pa.array([self.known.get(int(i)) if i == i else None for i in uniques], type=pa.string())
        return texts.take(pa.array(codes, mask=codes < 0))


def _classified(batch: pa.RecordBatch, column: str, classifier: Classifier, detail: str | None = None) -> pa.Array:
    """Classify each distinct value of ``column`` once (``detail`` is tried where it matches nothing)."""
    codes, uniques = pd.factorize(batch.column(column).to_pandas(), use_na_sentinel=False)
    if detail is None:
        labels = classifier.map(list(uniques))
    else:
        _, first = np.unique(codes, return_index=True)
        details = batch.column(detail).take(pa.array(first)).to_pylist()
        labels = classifier.map(list(uniques), details)
    return pa.array(np.asarray(labels, dtype=object)[codes], type=pa.string())


def _derive_kernel_category(batch: pa.RecordBatch, classifier: Classifier) -> pa.RecordBatch:
    index = batch.schema.get_field_index("category")
    return batch.set_column(index, "category", _classified(batch, "short_name", classifier, detail="name"))


def _derive_api_kind(batch: pa.RecordBatch, classifier: Classifier) -> pa.RecordBatch:
    return batch.set_column(batch.schema.get_field_index("kind"), "kind", _classified(batch, "name", API_KIND))


_SPAN = ("start", "end")
_GPU_KEYS = (*_SPAN, "deviceId", "correlationId", "globalPid")
READERS = (
    TableReader(
        "kernels",
        KERNEL,
        _kernels_sql,
        (*_GPU_KEYS, "shortName"),
        _derive_kernel_category,
        names={"name": "value", "short_name": "value"},
        extra=("global_pid",),
    ),
    TableReader(
        "cuda_api",
        RUNTIME,
        _cuda_api_sql,
        (*_SPAN, "globalTid", "correlationId", "nameId"),
        _derive_api_kind,
        names={"name": api_name_sql("value")},
        extra=("global_tid",),
    ),
    TableReader("memcpy", MEMCPY, _memcpy_sql, (*_GPU_KEYS, "bytes", "copyKind"), extra=("global_pid",)),
    TableReader("memset", MEMSET, _memset_sql, (*_GPU_KEYS, "bytes"), extra=("global_pid",)),
    TableReader("sync", SYNC, _sync_sql, _GPU_KEYS),
    TableReader("nvtx", "NVTX_EVENTS", _nvtx_sql, (*_SPAN, "eventType", "globalTid")),
    TableReader("osrt", OSRT, _osrt_sql, (*_SPAN, "globalTid", "nameId")),
    TableReader("gpus", "TARGET_INFO_GPU", _gpus_sql, ("name",)),
    TableReader("processes", None, _processes_sql),
)


class EventScan:
    """The summaries computed from the event batches as they stream, instead of scanning the export again.

    Calls are read before GPU operations, so each operation is joined to its call as it passes
    (see ``launches``); kernel and call durations are grouped by name id on the way.
    """

    ORDER = ("cuda_api", "memcpy", "memset", "kernels")  # calls first; kernels last, then the calls go

    def __init__(self, export: Export, spill: Path) -> None:
        """``spill``: a scratch folder for the grouped values (8 bytes per value), removed by :meth:`finish`."""
        self.spill = spill
        self.launches = LaunchScan(export, nvtx_ranges(export), spill)
        self.durations = {table: GroupedValues(("name_id",), ("value",), spill) for table in (KERNEL, RUNTIME)}
        self.worker: OrderedWorker[tuple[str, pa.RecordBatch]] = OrderedWorker(
            lambda item: self._feed(*item), name="event-scan"
        )

    def feed(self, table: str, batch: pa.RecordBatch) -> None:
        """One raw batch of an event table, names still as StringIds ids (consumed on the scan's thread)."""
        self.worker.submit((table, batch))

    def _feed(self, table: str, batch: pa.RecordBatch) -> None:
        if table == "cuda_api":
            self.launches.add_calls(batch)
        elif table in ("kernels", "memcpy", "memset"):
            self.launches.add_operations(batch, kernels=table == "kernels")
        source = {"kernels": KERNEL, "cuda_api": RUNTIME}.get(table)
        if source is not None:
            self.durations[source].add_batch(
                pa.record_batch({"name_id": batch.column("name"), "value": batch.column("duration_ns")})
            )

    def close(self) -> None:
        """Wait until every batch fed has been consumed."""
        self.worker.close()

    def finish(self, export: Export) -> None:
        """Leave the results where the summaries look for them first."""
        self.close()
        with ThreadPoolExecutor(max_workers=1) as beside:  # the sorts release the GIL: overlap them
            frames = {
                table: beside.submit(grouped.frame)
                for table, grouped in self.durations.items()
                if export.has_rows(table)
            }
            export.memo[LAUNCHES_KEY] = self.launches.finish()
            for table, frame in frames.items():
                export.memo[durations_key(table)] = frame.result()
        shutil.rmtree(self.spill, ignore_errors=True)


def _write_events(
    export: Export,
    reader: TableReader,
    path: Path,
    classifier: Classifier,
    progress: bool,
    scan: EventScan | None = None,
) -> int:
    schema = tables.EVENT_TABLES[reader.name]
    if reader.source is not None and reader.source in export.columns:
        export.require(reader.source, *reader.required)
    sink = ParquetSink(path, schema)
    try:
        sql = None
        if reader.source is None or export.has_rows(reader.source):
            try:
                sql = reader.query(export)
            except ReportSkipped:
                sql = None
        if sql is not None:
            resolvers = {column: NameResolver(export, transform) for column, transform in reader.names.items()}
            for raw in export.arrow_batches(sql):
                if scan is not None and reader.name in EventScan.ORDER:
                    scan.feed(
                        reader.name, pa.RecordBatch.from_arrays(raw.columns, names=[*schema.names, *reader.extra])
                    )
                columns = list(raw.columns)[: len(schema)]
                for column, resolve in resolvers.items():
                    index = schema.get_field_index(column)
                    columns[index] = resolve(columns[index])
                batch = pa.RecordBatch.from_arrays(columns, names=schema.names)
                batch = conform(batch, schema)
                sink.write(batch if reader.derive is None else reader.derive(batch, classifier))
                if progress:
                    log.info("%s: %d rows read", reader.name, sink.rows)
    finally:
        sink.close()
    return sink.rows


def _write_nvtx_gpu(export: Export, path: Path) -> int:
    """Per NVTX range: the GPU work its CUDA calls launched (phase attribution)."""
    projected = launches(export).projected
    if projected is None or projected.empty:
        write_table(path, tables.NVTX_GPU.empty_table())
        return 0
    global_tid = projected["global_tid"].to_numpy(dtype="int64")
    projected = projected.assign(pid=(global_tid >> 24) & PID_MASK, tid=global_tid & PID_MASK).sort_values(
        ["start_ns", "pid", "tid", "name"], kind="stable"
    )
    write_table(
        path, pa.Table.from_pandas(projected[tables.NVTX_GPU.names], schema=tables.NVTX_GPU, preserve_index=False)
    )
    return len(projected)


def extract(
    sqlite: str | Path,
    out: str | Path,
    *,
    categories: Mapping[str, str] | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict[str, object]:
    """Extract every table, the nsys-equal summaries and the headline metrics of one export.

    Args:
        sqlite: an nsys SQLite export (any nsys from 2020.3 on).
        out: the output folder; it appears only when everything was written.
        categories: kernel category → regular expression, replacing the defaults.
        force: replace ``out`` if it exists.
        progress: log rows read per table as they stream.

    Returns:
        The metrics written to ``out/metrics.json``.
    """
    classifier = kernel_classifier(categories)
    with open_export(sqlite) as export, staged_directory(Path(out), force) as stage:
        row_counts: dict[str, int] = {}
        scan = EventScan(export, stage / ".scan")
        readers = sorted(READERS, key=lambda r: EventScan.ORDER.index(r.name) if r.name in EventScan.ORDER else 9)
        try:
            for reader in readers:
                row_counts[reader.name] = _write_events(
                    export, reader, stage / f"{reader.name}.parquet", classifier, progress, scan
                )
        finally:
            scan.close()  # also on failure: no thread is left behind
        with ThreadPoolExecutor(max_workers=1) as beside:  # GPU busy time needs only the tables written
            activity = beside.submit(gpu_activity, stage, capture_window(stage))
            scan.finish(export)
            activity_result = activity.result()
        row_counts = {reader.name: row_counts[reader.name] for reader in READERS}
        row_counts["nvtx_gpu"] = _write_nvtx_gpu(export, stage / "nvtx_gpu.parquet")
        skipped: dict[str, str] = {}
        for name, report in REPORTS.items():
            try:
                frame = report.run(export)
            except ReportSkipped as reason:
                frame, skipped[name] = report.empty(), str(reason).replace(str(export.path), Path(sqlite).name)
            write_table(stage / f"{name}.parquet", report_table(report, frame))
            row_counts[name] = len(frame)
        metrics = compute_metrics(export, stage, classifier, activity_result)
        metrics["tables"] = row_counts
        metrics["skipped_summaries"] = skipped
        metrics["schema_version"] = tables.SCHEMA_VERSION
        write_json(stage / "metrics.json", metrics)
    return metrics
