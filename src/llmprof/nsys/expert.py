"""The rows Nsight Systems' expert rules (``nsys analyze``) read, selected as those rules select them.

Each reader returns the rows one rule looks at, with the same filters nsys applies
(operations with a start time, the CUDA calls named like the rule's patterns, the
copies and memsets joined to the call that issued them by correlation id alone,
as nsys joins them), and nothing computed: the rules themselves live in
``llmprof.analysis.expert``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llmprof.nsys import schema
from llmprof.nsys.events import EVENT_QUERIES, column_or_null, enum_case
from llmprof.nsys.export import Export
from llmprof.nsys.schema import KERNEL, MEMCPY, MEMSET, RUNTIME, STRINGS, pid_sql, tid_sql

#: ``PROFILER_OVERHEAD`` rows that nsys's GPU rules count as GPU time the user cannot address
#: (the names changed across versions; every spelling seen in exports from 2020.3 to 2026.2).
CUDA_OVERHEAD_NAMES = (
    "CUDA profiling data flush overhead",
    "CUDA profiling stop overhead",
    "CUDA profiling overhead",
)


class RuleDataAbsent(Exception):
    """The export lacks what a rule reads; the message is the one nsys prints for it."""


@dataclass(frozen=True)
class DeviceOperations:
    """The GPU operations of one process on one device: spans (ns) and the context of each."""

    pid: int
    device_id: int
    starts: np.ndarray  # int64
    ends: np.ndarray  # int64
    contexts: np.ndarray  # int64


def _gpu_tables(export: Export) -> list[str]:
    tables = [table for table in (KERNEL, MEMCPY, MEMSET) if table in export.columns]
    if not tables:
        raise RuleDataAbsent(
            f"{export.path} could not be analyzed because it does not contain the required data. "
            "Does the application launch GPU operations?"
        )
    return tables


def _int_columns(export: Export, select: str, where: str, table: str) -> list[np.ndarray]:
    """``select`` from ``table`` as int64 arrays (a NULL as 0), filled batch by batch into arrays sized
    by a count first, so the rows are held once."""
    count = int(export.scalar(f"SELECT count(*) FROM {table} t WHERE {where}"))
    width = select.count(",") + 1
    columns = [np.empty(count, np.int64) for _ in range(width)]
    filled = 0
    for batch in export.arrow_batches(f"SELECT {select} FROM {table} t WHERE {where}"):
        for column, values in zip(columns, batch.columns):
            column[filled : filled + len(batch)] = values.fill_null(0).to_numpy()
        filled += len(batch)
    return [column[:filled] for column in columns]


def gpu_operations_by_device(export: Export) -> Iterator[DeviceOperations]:
    """Every kernel, copy and memset with a start time, one process and device at a time (in that order).

    Each group is read on its own, so memory holds one device's operations, not the capture's.

    Raises:
        RuleDataAbsent: the export has none of the three tables.
    """
    tables = _gpu_tables(export)
    pid = pid_sql("t.globalPid")
    keys = sorted(
        {
            (int(p), int(d))
            for table in tables
            for p, d in export.query(f"SELECT DISTINCT {pid}, t.deviceId FROM {table} t")
        }
    )
    for process, device in keys:
        parts = [
            _int_columns(
                export,
                f't.start, t."end", {column_or_null(export, table, "contextId", "0")}',
                f"t.start > 0 AND t.deviceId = {device} AND {pid} = {process}",
                table,
            )
            for table in tables
        ]
        starts, ends, contexts = (np.concatenate([part[i] for part in parts]) for i in range(3))
        if len(starts):
            yield DeviceOperations(process, device, starts, ends, contexts)


def profiler_overhead_spans(export: Export, names: Sequence[str] = CUDA_OVERHEAD_NAMES) -> pd.DataFrame:
    """The profiler's own work named ``names``: ``start_ns``, ``end_ns`` and the ``pid`` it stalled.

    Read through the same query as the ``profiler_overhead`` table (process, thread, span, name, kind).
    """
    sql = next(query for query in EVENT_QUERIES if query.name == "profiler_overhead").rows_sql(export)
    rows = [] if sql is None else export.query(sql)
    wanted = [(start, end, pid) for pid, _, start, end, _, name, _ in rows if name in names]
    return pd.DataFrame(wanted, columns=["start_ns", "end_ns", "pid"], dtype="int64")


def _name_ids(export: Export, like: str, unlike: str | None) -> str:
    """The StringIds ids whose text matches ``like`` (and not ``unlike``), as an SQL list."""
    exclude = f" AND value NOT LIKE '{unlike}'" if unlike else ""
    ids = [row[0] for row in export.query(f"SELECT id FROM {STRINGS} WHERE value LIKE '{like}'{exclude}")]
    return ",".join(str(int(i)) for i in ids) or "NULL"


def runtime_calls_named(export: Export, patterns: Sequence[str]) -> pd.DataFrame:
    """CUDA runtime calls whose name matches one of the LIKE ``patterns``: span, ids and name as recorded."""
    columns = ["duration_ns", "start_ns", "pid", "tid", "api_name"]
    for needed in (STRINGS, RUNTIME):
        if needed not in export.columns:
            _require(export, needed)
    wanted = " OR ".join(f"value LIKE '{p}'" for p in patterns)
    rows = export.query(
        f'SELECT r."end" - r.start, r.start, {pid_sql("r.globalTid")}, {tid_sql("r.globalTid")}, s.value '
        f"FROM {RUNTIME} r JOIN (SELECT id, value FROM {STRINGS} WHERE {wanted}) s ON s.id = r.nameId"
    )
    return pd.DataFrame(rows, columns=columns)


def _mem_kind(export: Export, column: str, table: str) -> str:
    labels = export.enum_labels(schema.MEM_KINDS, schema.MEM_KIND_LABELS)
    return enum_case(column_or_null(export, table, column), labels, otherwise="NULL")


#: What each copy and memset rule reads: the operations table, the issuing call's name pattern
#: (and the pattern it must not match), and which operations count.
ISSUED_SELECTIONS = {
    "cuda_memcpy_sync": (
        MEMCPY,
        "cudaMemcpy%",
        "%Async%",
        "NOT (bytes <= 64000 AND copyKind = 1) AND NOT (srcDeviceId IS NOT NULL AND srcDeviceId = dstDeviceId)",
    ),
    "cuda_memcpy_async": (MEMCPY, "cudaMemcpy%Async%", None, "srcKind = 0 OR dstKind = 0"),
    "cuda_memset_sync": (MEMSET, "cudaMemset%", "%async%", "memKind = 1 OR memKind = 4"),
}


def _require(export: Export, table: str) -> None:
    """RuleDataAbsent, with nsys's words, for the first of the tables ``table``'s rule reads that is missing."""
    needs = {
        STRINGS: f"{export.path} file does not contain StringIds table.",
        RUNTIME: f"{export.path} could not be analyzed because it does not contain the required CUDA data. "
        "Does the application use CUDA runtime APIs?",
    }
    if table in (MEMCPY, MEMSET):
        needs[table] = (
            f"{export.path} could not be analyzed because it does not contain the required CUDA data. "
            f"Does the application use CUDA {'memcpy' if table == MEMCPY else 'memset'} APIs?"
        )
        needs[schema.MEM_KINDS] = f"{export.path} does not contain {schema.MEM_KINDS} table."
    for needed, message in needs.items():
        if needed not in export.columns:
            raise RuleDataAbsent(message)
    if not export.has(table, "greenContextId"):
        raise RuleDataAbsent(
            f"{export.path} could not be analyzed due to missing 'greenContextId'. "
            "Please re-export the report file with a recent version of Nsight Systems."
        )


def issued_operations(export: Export, rule: str) -> pd.DataFrame:
    """The copies or memsets the rule ``rule`` reads, with the name of the CUDA call that issued each.

    Calls are matched by correlation id alone, as nsys's rules match them.

    Raises:
        RuleDataAbsent: the export lacks a table the rule reads.
    """
    table, call_like, call_unlike, where = ISSUED_SELECTIONS[rule]
    _require(export, table)
    kinds = (
        f"{_mem_kind(export, 'srcKind', table)} AS src_kind, {_mem_kind(export, 'dstKind', table)} AS dst_kind"
        if table == MEMCPY
        else f"{_mem_kind(export, 'memKind', table)} AS memory_kind"
    )
    sql = f"""
        SELECT t."end" - t.start AS duration_ns, t.start AS start_ns, {kinds}, t.bytes AS bytes,
               {pid_sql("t.globalPid")} AS pid, t.deviceId AS device_id,
               {column_or_null(export, table, "contextId")} AS context_id,
               NULLIF({column_or_null(export, table, "greenContextId")}, 0) AS green_context_id,
               {column_or_null(export, table, "streamId")} AS stream_id, s.value AS api_name
        FROM (SELECT * FROM {table} WHERE {where}) t
        JOIN {RUNTIME} r ON r.correlationId = t.correlationId
        JOIN {STRINGS} s ON s.id = r.nameId AND s.id IN ({_name_ids(export, call_like, call_unlike)})
    """
    rows = export.query(sql)
    names = ["duration_ns", "start_ns", *(["src_kind", "dst_kind"] if table == MEMCPY else ["memory_kind"])]
    names += ["bytes", "pid", "device_id", "context_id", "green_context_id", "stream_id", "api_name"]
    return pd.DataFrame(rows, columns=names)
