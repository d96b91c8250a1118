"""Which rows of an export each llmprof table and summary reads, as SQL over this export's own schema.

Every query selects only the columns it needs, reads a column an older nsys lacks as
NULL, turns enum ids into labels inside SQLite, and leaves names as ``StringIds`` ids
where they repeat (kernels, CUDA calls), to be resolved once per distinct id
(:class:`NameResolver`). Rows come as Arrow batches; nothing here computes a result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from llmprof.common.errors import InputError
from llmprof.nsys import schema
from llmprof.nsys.export import Export
from llmprof.nsys.schema import (
    GPU_INFO,
    KERNEL,
    MEMCPY,
    MEMSET,
    NVTX,
    OSRT,
    PROFILER_OVERHEAD,
    RUNTIME,
    STRINGS,
    SYNC,
    api_name_sql,
    global_pid_sql,
    pid_sql,
    tid_sql,
)

LOOKUP_CHUNK = 10_000  # ids per StringIds query
#: The SQL transform that prints a CUDA API name as nsys does (version suffix dropped).
API_NAME = api_name_sql("value")

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


class DataAbsent(Exception):
    """The export holds no data of a kind (``nsys stats`` prints SKIPPED for its reports); not an error."""


def lookup_strings(export: Export, ids: list[int], transform: str = "value") -> dict[int, str | None]:
    """The ``StringIds`` text of each id (through an SQL ``transform`` of ``value``); absent ids are left out."""
    found: dict[int, str | None] = {}
    for start in range(0, len(ids), LOOKUP_CHUNK):
        listed = ",".join(str(int(i)) for i in ids[start : start + LOOKUP_CHUNK])
        rows = export.query(f"SELECT id, {transform} FROM {STRINGS} WHERE id IN ({listed})")
        found.update({int(i): v for i, v in rows})
    return found


class NameResolver:
    """StringIds ids to text, looked up once per distinct id: cheaper than joining every row in SQLite."""

    def __init__(self, export: Export, transform: str) -> None:
        self.export, self.transform = export, transform
        self.known: dict[int, str | None] = {}

    def __call__(self, ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        codes, uniques = pd.factorize(ids.to_numpy(zero_copy_only=False), use_na_sentinel=True)
        missing = [int(i) for i in uniques if i == i and int(i) not in self.known]
        self.known.update(lookup_strings(self.export, missing, self.transform))
        texts = pa.array([self.known.get(int(i)) if i == i else None for i in uniques], type=pa.string())
        return texts.take(pa.array(codes, mask=codes < 0))


def _col(export: Export, table: str, column: str, default: str = "NULL") -> str:
    """``t.column`` when the export has it, else ``default`` (columns came and went over versions)."""
    return f't."{column}"' if export.has(table, column) else default


def _case(column: str, labels: Mapping[int, str], otherwise: str = "'Unknown'") -> str:
    """SQL CASE that turns an enum id into its label (``otherwise``, an SQL value, for an id without one)."""
    whens = " ".join(f"WHEN {k} THEN '{v.replace(chr(39), chr(39) * 2)}'" for k, v in sorted(labels.items()))
    return f"CASE {column} {whens} ELSE {otherwise} END"


#: The same two helpers for the other readers of this subpackage.
column_or_null, enum_case = _col, _case


def kernel_name_column(export: Export) -> str:
    """The kernel name column nsys prints by default: demangled where the export has it."""
    return export.first_column(KERNEL, "demangledName", "shortName") or "shortName"


def _gpu_columns(export: Export, table: str) -> str:
    return (
        f"t.deviceId, {_col(export, table, 'contextId')}, {_col(export, table, 'streamId')}, "
        f't.correlationId, {pid_sql("t.globalPid")}, t.start, t."end", t."end" - t.start'
    )


def _kernels_sql(export: Export) -> str:
    return f"""
        SELECT {_gpu_columns(export, KERNEL)}, t.{kernel_name_column(export)}, t.shortName, NULL,
               t.gridX, t.gridY, t.gridZ, t.blockX, t.blockY, t.blockZ,
               {_col(export, KERNEL, "registersPerThread")}, {_col(export, KERNEL, "staticSharedMemory")},
               {_col(export, KERNEL, "dynamicSharedMemory")}, {_col(export, KERNEL, "graphNodeId")},
               t.globalPid
        FROM {KERNEL} t
    """


def _cuda_api_sql(export: Export) -> str:
    return f"""
        SELECT {pid_sql("t.globalTid")}, {tid_sql("t.globalTid")}, t.start, t."end", t."end" - t.start,
               t.correlationId, t.nameId, NULL, {_col(export, RUNTIME, "returnValue")}, t.globalTid
        FROM {RUNTIME} t
    """


def _memcpy_sql(export: Export) -> str:
    kinds = export.enum_labels(schema.MEMCPY_KINDS, schema.MEMCPY_KIND_LABELS)
    mem = export.enum_labels(schema.MEM_KINDS, schema.MEM_KIND_LABELS)
    directions = {k: DIRECTIONS.get(v, "other") for k, v in kinds.items()}
    return f"""
        SELECT {_gpu_columns(export, MEMCPY)}, t.bytes, {_case("t.copyKind", kinds)},
               {_case("t.copyKind", directions).replace("'Unknown'", "'other'")},
               {_case(_col(export, MEMCPY, "srcKind"), mem)}, {_case(_col(export, MEMCPY, "dstKind"), mem)},
               t.globalPid
        FROM {MEMCPY} t
    """


def _memset_sql(export: Export) -> str:
    mem = export.enum_labels(schema.MEM_KINDS, schema.MEM_KIND_LABELS)
    return f"""
        SELECT {_gpu_columns(export, MEMSET)}, t.bytes, {_col(export, MEMSET, "value")},
               {_case(_col(export, MEMSET, "memKind"), mem)}, t.globalPid
        FROM {MEMSET} t
    """


def _sync_sql(export: Export) -> str:
    labels = export.enum_labels(schema.SYNC_TYPES, schema.SYNC_TYPE_LABELS)
    return f"""
        SELECT {_gpu_columns(export, SYNC)}, {_case(_col(export, SYNC, "syncType"), labels)}
        FROM {SYNC} t
    """


def _nvtx_sql(export: Export) -> str:
    return f"""
        SELECT {pid_sql("global_tid")}, {tid_sql("global_tid")}, start, "end", "end" - start, domain, name, style
        FROM ({nvtx_range_sql(export)}) ORDER BY start, global_tid, name
    """


def _osrt_filter(export: Export, column: str = "eventClass") -> str:
    """The condition keeping OS runtime calls proper, where the export tells them from bookkeeping rows."""
    return f"{column} = {schema.OSRT_EVENT_CLASS}" if export.has(OSRT, "eventClass") else ""


def _osrt_sql(export: Export) -> str:
    condition = _osrt_filter(export, "t.eventClass")
    return f"""
        SELECT {pid_sql("t.globalTid")}, {tid_sql("t.globalTid")}, t.start, t."end", t."end" - t.start, s.value
        FROM {OSRT} t LEFT JOIN {STRINGS} s ON s.id = t.nameId {f"WHERE {condition}" if condition else ""}
    """


def _gpus_sql(export: Export) -> str | None:
    device = export.first_column(GPU_INFO, "id", "deviceId")
    if device is None:
        return None
    capability = (
        "t.computeMajor || '.' || t.computeMinor" if export.has(GPU_INFO, "computeMajor", "computeMinor") else "NULL"
    )
    return f"""
        SELECT t.{device}, t.name, {_col(export, GPU_INFO, "busLocation")}, {_col(export, GPU_INFO, "totalMemory")},
               {_col(export, GPU_INFO, "smCount")}, {capability}, {_col(export, GPU_INFO, "memoryBandwidth")},
               {_col(export, GPU_INFO, "clockRate")}
        FROM {GPU_INFO} t ORDER BY t.{device}, t.busLocation
    """


def _profiler_overhead_sql(export: Export) -> str:
    """The profiler's own work: where nsys records it, on which thread, and its kind where the export labels it."""
    kind, join = "NULL", ""
    if export.has(PROFILER_OVERHEAD, "overheadType") and schema.OVERHEAD_TYPES in export.columns:
        kind, join = "o.label", f"LEFT JOIN {schema.OVERHEAD_TYPES} o ON o.id = t.overheadType"
    return f"""
        SELECT {pid_sql("t.globalTid")}, {tid_sql("t.globalTid")}, t.start, t."end", t."end" - t.start, s.value, {kind}
        FROM {PROFILER_OVERHEAD} t LEFT JOIN {STRINGS} s ON s.id = t.nameId {join}
        ORDER BY t.start, t.globalTid
    """


def _process_name_join(export: Export) -> tuple[str, str]:
    """The SQL naming a process by its globalPid ``seen.gpid``, and the joins it needs."""
    if export.has(schema.PROCESSES, "globalPid", "pid", "name"):
        return "p.name", f"LEFT JOIN {schema.PROCESSES} p ON p.globalPid = seen.gpid"
    if export.has(schema.THREAD_NAMES, "nameId", "globalTid"):  # nsys 2020: the main thread's name names the process
        join = (
            f"LEFT JOIN {schema.THREAD_NAMES} th ON th.globalTid = seen.gpid + {pid_sql('seen.gpid')} "
            f"LEFT JOIN {STRINGS} s ON s.id = th.nameId"
        )
        return "s.value", join
    return "NULL", ""


def _processes_sql(export: Export) -> str | None:
    """Processes that made CUDA calls, ran kernels, NVTX ranges or OS runtime calls in the capture."""
    sources = [
        f"SELECT DISTINCT {global_pid_sql('globalTid')} AS gpid FROM {table}"
        for table in (RUNTIME, OSRT, NVTX)
        if export.has(table, "globalTid")
    ]
    if export.has(KERNEL, "globalPid"):
        sources.append(f"SELECT DISTINCT globalPid AS gpid FROM {KERNEL}")
    if not sources:
        return None
    name, join = _process_name_join(export)
    return f"SELECT DISTINCT {pid_sql('seen.gpid')}, {name} FROM ({' UNION '.join(sources)}) seen {join} ORDER BY 1, 2"


@dataclass(frozen=True)
class EventQuery:
    """How the rows of one llmprof event table are read from the export."""

    name: str
    source: str | None  # the export table; None where rows come from several
    sql: Callable[[Export], str | None]
    required: tuple[str, ...] = ()
    #: Output columns that the query fills with StringIds ids → the SQL that turns ``value`` into the text.
    names: Mapping[str, str] = field(default_factory=dict)
    #: Columns the query yields after the table's own, for the summaries' scan only (not written).
    extra: tuple[str, ...] = ()

    def source_rows(self, export: Export) -> int | None:
        """Rows of the source table (what reading it goes through), or None where rows come from several."""
        if self.source is None or self.source not in export.columns:
            return None
        return int(export.scalar(f'SELECT count(*) FROM "{self.source}"'))

    def rows_sql(self, export: Export) -> str | None:
        """The query of this table's rows; None when the export holds none.

        Raises:
            SchemaError: the source table lacks a column every nsys version has written.
        """
        if self.source is not None and self.source in export.columns:
            export.require(self.source, *self.required)
        if self.source is not None and not export.has_rows(self.source):
            return None
        try:
            return self.sql(export)
        except DataAbsent:
            return None


_SPAN = ("start", "end")
_GPU_KEYS = (*_SPAN, "deviceId", "correlationId", "globalPid")
#: Every event table, in the order they are written.
EVENT_QUERIES = (
    EventQuery(
        "kernels",
        KERNEL,
        _kernels_sql,
        (*_GPU_KEYS, "shortName"),
        names={"name": "value", "short_name": "value"},
        extra=("global_pid",),
    ),
    EventQuery(
        "cuda_api",
        RUNTIME,
        _cuda_api_sql,
        (*_SPAN, "globalTid", "correlationId", "nameId"),
        names={"name": API_NAME},
        extra=("global_tid",),
    ),
    EventQuery("memcpy", MEMCPY, _memcpy_sql, (*_GPU_KEYS, "bytes", "copyKind"), extra=("global_pid",)),
    EventQuery("memset", MEMSET, _memset_sql, (*_GPU_KEYS, "bytes"), extra=("global_pid",)),
    EventQuery("sync", SYNC, _sync_sql, _GPU_KEYS),
    EventQuery("nvtx", NVTX, _nvtx_sql, (*_SPAN, "eventType", "globalTid")),
    EventQuery("osrt", OSRT, _osrt_sql, (*_SPAN, "globalTid", "nameId")),
    EventQuery("gpus", GPU_INFO, _gpus_sql, ("name",)),
    EventQuery("processes", None, _processes_sql),
    EventQuery("profiler_overhead", PROFILER_OVERHEAD, _profiler_overhead_sql, (*_SPAN, "globalTid", "nameId")),
)


def has_events(export: Export, name: str) -> bool:
    """True when the export holds rows for the llmprof table ``name`` (kernels, cuda_api, memcpy, ...)."""
    return export.has_rows(schema.EVENT_SOURCES[name])


def count_kernels(export: Export) -> int:
    """Kernels recorded in the export (0 when the capture missed the GPU work)."""
    return int(export.scalar(f"SELECT count(*) FROM {KERNEL}")) if export.has_rows(KERNEL) else 0


#: Where each duration summary's names and rows come from: table, name id column (or a function of the export).
_DURATION_SOURCES: dict[str, tuple[str, Callable[[Export], str]]] = {
    "kernels": (KERNEL, kernel_name_column),
    "cuda_api": (RUNTIME, lambda export: "nameId"),
    "osrt": (OSRT, lambda export: "nameId"),
}


def complete_values(batches: Iterator[pa.RecordBatch], export: Export, table: str) -> Iterator[pa.RecordBatch]:
    """``batches`` as they come, stopped with a clear error at the first row without its value: nsys writes every
    start, end and size, so a NULL there means the export is damaged (summing around it would misstate totals)."""
    for batch in batches:
        if batch.column("value").null_count:
            raise InputError(
                f"{export.path}: rows of {table} without their start, end or size; the export is damaged: "
                "export the capture again"
            )
        yield batch


def duration_batches(export: Export, name: str) -> Iterator[pa.RecordBatch]:
    """``name_id`` and ``value`` (duration, ns) of every kernel, CUDA call or OS runtime call, in no fixed order."""
    table, name_column = _DURATION_SOURCES[name]
    where = _osrt_filter(export) if name == "osrt" else ""
    batches = export.parallel_batches(table, f'{name_column(export)} AS name_id, "end" - start AS value', where)
    return complete_values(batches, export, table)


def name_transform(name: str) -> str:
    """How the names of a duration summary are printed (CUDA API versions dropped)."""
    return "value" if name == "kernels" else API_NAME


MEMSET_KIND = -1  # the memory-operation code of memsets, beside memcpy's copyKind


def memory_operations(export: Export, measure: str) -> tuple[Iterator[pa.RecordBatch], dict[int, str]]:
    """``kind`` and ``value`` (``duration`` in ns or ``bytes``) of every memcpy and memset, and the kinds' labels.

    Raises:
        DataAbsent: no memory operation, or (as nsys 2025.3 does) copies without ENUM_CUDA_MEMCPY_OPER.
    """
    value = '"end" - start' if measure == "duration" else "bytes"
    parts = []
    if MEMCPY in export.columns:
        if schema.MEMCPY_KINDS not in export.columns:
            raise DataAbsent(f"{export.path} does not contain {schema.MEMCPY_KINDS} table.")
        parts.append(
            f"SELECT m.copyKind AS kind, {value} AS value "
            f"FROM {MEMCPY} m JOIN {schema.MEMCPY_KINDS} e ON e.id = m.copyKind"
        )
    if MEMSET in export.columns:
        parts.append(f"SELECT {MEMSET_KIND} AS kind, {value} AS value FROM {MEMSET}")
    if not parts:
        raise DataAbsent(f"{export.path} does not contain GPU memory data.")
    labels = {MEMSET_KIND: "[CUDA memset]"}
    if schema.MEMCPY_KINDS in export.columns:
        kinds = export.query(f"SELECT id, label FROM {schema.MEMCPY_KINDS}")
        labels.update({int(k): f"[CUDA memcpy {v}]" for k, v in kinds})
    tables = " and ".join(t for t in (MEMCPY, MEMSET) if t in export.columns)
    return complete_values(export.arrow_batches(" UNION ALL ".join(parts)), export, tables), labels


def nvtx_range_sql(export: Export, same_thread_only: bool = False) -> str:
    """SQL yielding every NVTX push/pop and start/end range as domain, name, style, start, end, global_tid.

    The name is ``domain:text`` (the default domain has an empty name); text comes from
    ``text`` or, for registered strings, ``textId``. A range never closed ends at the last
    NVTX timestamp. ``same_thread_only`` keeps ranges that ended on their starting thread.

    Raises:
        DataAbsent: the export holds no NVTX events.
    """
    if not export.has_rows(NVTX):
        raise DataAbsent(f"{export.path} does not contain NV Tools Extension (NVTX) data.")
    has_text_id = export.has(NVTX, "textId")
    text = "coalesce(st.value, e.text, '')" if has_text_id else "coalesce(e.text, '')"
    text_join = f"LEFT JOIN {STRINGS} st ON st.id = e.textId" if has_text_id else ""
    domain, domain_join = _nvtx_domains(export, has_text_id)
    thread_filter = "AND e.endGlobalTid IS NULL" if same_thread_only and export.has(NVTX, "endGlobalTid") else ""
    return f"""
        SELECT {domain} AS domain, {domain} || ':' || {text} AS name,
               CASE WHEN e.eventType IN ({schema.NVTX_PUSH_POP}, {schema.NVTXT_PUSH_POP})
                    THEN 'PushPop' ELSE 'StartEnd' END AS style,
               e.start AS start,
               coalesce(e."end", (SELECT max(max(start), max("end")) FROM {NVTX})) AS "end",
               e.globalTid AS global_tid
        FROM {NVTX} e {text_join} {domain_join}
        WHERE e.eventType IN ({", ".join(str(t) for t in schema.NVTX_RANGE_TYPES)}) {thread_filter}
    """


def _nvtx_domains(export: Export, has_text_id: bool) -> tuple[str, str]:
    """The SQL naming each range's domain (empty for the default one) and the join it needs."""
    if not export.has(NVTX, "domainId"):
        return "''", ""
    domain_text = "coalesce(ds.value, d.text)" if has_text_id else "d.text"
    ds_join = f"LEFT JOIN {STRINGS} ds ON ds.id = d.textId" if has_text_id else ""
    join = f"""
        LEFT JOIN (SELECT d.domainId AS id, {pid_sql("d.globalTid")} AS pid, {domain_text} AS name, min(d.start)
                   FROM {NVTX} d {ds_join} WHERE d.eventType = {schema.NVTX_DOMAIN_CREATE}
                   GROUP BY 1, 2) dom
            ON dom.id = e.domainId AND dom.pid = {pid_sql("e.globalTid")}"""
    return "coalesce(dom.name, '')", join


def nvtx_durations(export: Export) -> Iterator[pa.RecordBatch]:
    """``name``, ``style`` and ``value`` (duration, ns) of every NVTX range (raises DataAbsent without NVTX)."""
    return export.arrow_batches(f'SELECT name, style, "end" - start AS value FROM ({nvtx_range_sql(export)})')


def nvtx_ranges(export: Export) -> pd.DataFrame | None:
    """The NVTX ranges that ended on their starting thread, the ones projected onto GPU work (None without NVTX)."""
    try:
        source = nvtx_range_sql(export, same_thread_only=True)
    except DataAbsent:
        return None
    return pd.DataFrame(
        export.query(f'SELECT name, style, start, "end", global_tid FROM ({source})'),
        columns=["name", "style", "start_ns", "end_ns", "global_tid"],
    )


def call_batches(export: Export) -> Iterator[pa.RecordBatch]:
    """Every CUDA call: ``global_tid``, ``start_ns``, ``end_ns``, ``correlation_id`` and its name id ``name``."""
    if RUNTIME not in export.columns:
        return iter(())
    return export.arrow_batches(
        f'SELECT globalTid AS global_tid, start AS start_ns, "end" AS end_ns, '
        f"correlationId AS correlation_id, nameId AS name FROM {RUNTIME}"
    )


def gpu_operation_batches(export: Export) -> Iterator[tuple[bool, pa.RecordBatch]]:
    """Every GPU operation a call can launch, as (is a kernel, batch of ``global_pid``, ``correlation_id``,
    ``start_ns``, ``end_ns``, and for kernels ``device_id`` and the name id ``name``)."""
    for table in (KERNEL, MEMCPY, MEMSET):
        if table not in export.columns:
            continue
        kernel = table == KERNEL
        extra = f", deviceId AS device_id, {kernel_name_column(export)} AS name" if kernel else ""
        sql = (
            "SELECT globalPid AS global_pid, correlationId AS correlation_id, "
            f'start AS start_ns, "end" AS end_ns{extra} FROM {table}'
        )
        for batch in export.arrow_batches(sql):
            yield kernel, batch
