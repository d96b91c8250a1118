"""Summaries equal to ``nsys stats`` reports, computed without nsys.

Each report is a :class:`Report`: a function from an open export to a frame
with snake_case columns (units in the names), plus how nsys 2025.3 titles and
prints each column, so ``llmprof stats --format csv`` prints what
``nsys stats --format csv --timeunit ns`` prints. Each report reads only the
columns it needs as Arrow batches and groups them with
:class:`~llmprof.grouped.GroupedValues` (exact medians included); kern_exec and
the NVTX projection share one join of GPU work to calls (``launches``). Inside
``llmprof extract`` the same results come from the extraction's own scan
(left in the export's memo), so the export is read once.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from llmprof.analysis.grouped import GroupedValues
from llmprof.analysis.launches import KERNEL, RUNTIME, LaunchResults, launch_results
from llmprof.analysis.projection import nvtx_gpu_projection_summary
from llmprof.common.errors import ConfigError
from llmprof.nsys.export import (
    NVTX_DOMAIN_CREATE,
    NVTX_PUSH_POP,
    NVTX_RANGE_TYPES,
    NVTXT_PUSH_POP,
    Export,
    api_name_sql,
    open_export,
    sqlite_round,
)

MEMCPY = "CUPTI_ACTIVITY_KIND_MEMCPY"
MEMSET = "CUPTI_ACTIVITY_KIND_MEMSET"
OSRT = "OSRT_API"
NVTX = "NVTX_EVENTS"
BYTES_PER_MB = 1_000_000
OSRT_EVENT_CLASS = 27  # OS runtime calls proper (other classes are bookkeeping rows)
PID_MASK = 0xFFFFFF
GLOBAL_PID_MASK = "0xFFFFFFFFFF000000"  # SQL literal: the pid bits of a globalTid


class ReportSkipped(Exception):
    """The export holds no data for a report (nsys prints SKIPPED); not an error."""


@dataclass(frozen=True)
class Column:
    """One output column: its Parquet name, its nsys header and how nsys prints it."""

    name: str
    header: str
    decimals: int | None = None  # None: integer or text, printed as is
    text: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        if self.text:
            return pa.string()
        return pa.float64() if self.decimals is not None else pa.int64()


def _text(name: str, header: str) -> Column:
    return Column(name, header, text=True)


@dataclass(frozen=True)
class Report:
    """An ``nsys stats`` report: its name, columns and computation."""

    name: str
    columns: tuple[Column, ...]
    compute: Callable[[Export], pd.DataFrame]

    def run(self, export: Export) -> pd.DataFrame:
        """The report's rows, typed and in nsys order; raises ReportSkipped when no data."""
        frame = self.compute(export)
        return frame[[c.name for c in self.columns]].reset_index(drop=True)

    def empty(self) -> pd.DataFrame:
        """A zero-row frame with this report's columns."""
        empty: pd.DataFrame = self.schema.empty_table().to_pandas()
        return empty

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])


def report_table(report: Report, frame: pd.DataFrame) -> pa.Table:
    """The report's rows as an Arrow table with its explicit schema."""
    return pa.Table.from_pandas(frame, schema=report.schema, preserve_index=False)


def _stat_columns(unit: str, unit_header: str, decimals: int = 1) -> tuple[Column, ...]:
    return (
        Column(f"avg_{unit}", f"Avg ({unit_header})", decimals),
        Column(f"med_{unit}", f"Med ({unit_header})", decimals),
        Column(f"min_{unit}", f"Min ({unit_header})", None if unit == "ns" else decimals),
        Column(f"max_{unit}", f"Max ({unit_header})", None if unit == "ns" else decimals),
        Column(f"stddev_{unit}", f"StdDev ({unit_header})", decimals),
    )


def _summarize(
    export: Export,
    source: str | Iterable[pa.RecordBatch],
    keys: tuple[str, ...],
    values: tuple[str, ...] = ("value",),
) -> pd.DataFrame:
    """Per key: count, total, mean, median, min, max and sample standard deviation of each value.

    ``source`` (SQL, or batches in any order) yields the ``keys`` columns (ids or short labels)
    and the ``values`` columns; its rows stream through :class:`GroupedValues`. Rows come back in
    ascending key order, the order nsys breaks ties in.
    """
    batches = export.arrow_batches(source) if isinstance(source, str) else source
    with tempfile.TemporaryDirectory(prefix="llmprof-") as scratch:  # touched only by large scans
        grouped = GroupedValues(keys, values, Path(scratch))
        for batch in batches:
            grouped.add_batch(batch)
        return grouped.frame()


def _rounded(series: pd.Series) -> pd.Series:
    return series.astype("float64").map(sqlite_round)


def _time_summary(stats: pd.DataFrame, keys: tuple[str, ...], count_name: str) -> pd.DataFrame:
    """Duration (``value``, ns) summary per key, from :func:`_summarize`, with its share of the grand total.

    Largest total first; ties keep key order, as nsys's ORDER BY over a GROUP BY does.
    """
    grand = stats["value_total"].sum()
    frame = pd.DataFrame(
        {
            "time_pct": _rounded(stats["value_total"] * 100.0 / grand) if grand else 0.0,
            "total_ns": stats["value_total"].astype("int64"),
            count_name: stats["value_n"].astype("int64"),
            "avg_ns": _rounded(stats["value_mean"]),
            "med_ns": _rounded(stats["value_median"]),
            "min_ns": stats["value_lo"].astype("int64"),
            "max_ns": stats["value_hi"].astype("int64"),
            "stddev_ns": _rounded(stats["value_stddev"]),
        }
    )
    for key in keys:
        frame[key] = stats[key]
    return frame.sort_values("total_ns", ascending=False, kind="stable")


def _require_rows(export: Export, table: str, what: str) -> None:
    if not export.has_rows(table):
        raise ReportSkipped(f"{export.path} does not contain {what}.")


def kernel_name_column(export: Export) -> str:
    """The kernel name column nsys prints by default: demangled where the export has it."""
    return export.first_column(KERNEL, "demangledName", "shortName") or "shortName"


def durations_key(table: str) -> str:
    """Where an export's memo keeps the duration statistics per name id of ``table``."""
    return f"durations:{table}"


def name_durations(export: Export, table: str, name: str, where: str = "") -> pd.DataFrame:
    """Duration statistics per name id of ``table`` (memoized: extraction fills it from its own scan)."""
    batches = export.parallel_batches(table, f'{name} AS name_id, "end" - start AS value', where)
    return export.memoized(durations_key(table), lambda: _summarize(export, batches, ("name_id",)))  # type: ignore[no-any-return]


def cuda_gpu_kern_sum(export: Export) -> pd.DataFrame:
    """GPU time per kernel name (demangled, as nsys prints by default)."""
    _require_rows(export, KERNEL, "CUDA kernel data")
    stats = name_durations(export, KERNEL, kernel_name_column(export))
    return _by_label(_time_summary(stats, ("name_id",), "instances"), "name_id", _strings(export))


def _strings(export: Export, transform: str = "value") -> Callable[[list[int]], dict[int, str]]:
    """A lookup of StringIds values (through an SQL ``transform``) for the ids a summary found."""

    def lookup(ids: list[int]) -> dict[int, str]:
        listed = ",".join(str(int(i)) for i in ids if i is not None and i == i)
        rows = export.query(f"SELECT id, {transform} FROM StringIds WHERE id IN ({listed})") if listed else []
        return {int(i): str(v) for i, v in rows}

    return lookup


def _by_label(frame: pd.DataFrame, key: str, lookup: Callable[[list[int]], dict[int, str]]) -> pd.DataFrame:
    """Replace id ``key`` with its label in ``name``; ties in total keep label order, as nsys's do."""
    names = lookup(frame[key].tolist())
    labelled = frame.assign(
        name=pd.Series([names.get(int(i)) if i == i else None for i in frame[key]], index=frame.index)
    )
    labelled = labelled.sort_values("name", kind="stable", na_position="first")
    total = "total_ns" if "total_ns" in labelled else "total_bytes"
    return labelled.sort_values(total, ascending=False, kind="stable")


def _api_summary(export: Export, table: str, what: str, where: str = "") -> pd.DataFrame:
    """Time per function name id of a table of host calls (ties in total keep name id order)."""
    _require_rows(export, table, what)
    frame = _time_summary(name_durations(export, table, "nameId", where), ("name_id",), "num_calls")
    names = _strings(export, api_name_sql("value"))(frame["name_id"].tolist())
    return frame.assign(name=pd.Series([names.get(int(i)) for i in frame["name_id"]], index=frame.index))


def cuda_api_sum(export: Export) -> pd.DataFrame:
    """Host time per CUDA runtime and driver API function."""
    return _api_summary(export, RUNTIME, "CUDA trace data")


def osrt_sum(export: Export) -> pd.DataFrame:
    """Host time per OS runtime function (pthread, poll, ioctl, ...)."""
    where = f"eventClass = {OSRT_EVENT_CLASS}" if export.has(OSRT, "eventClass") else ""
    return _api_summary(export, OSRT, "OS Runtime trace data", where)


MEMSET_KIND = -1  # the memory-operation code of memsets, beside memcpy's copyKind


def _memory_source(export: Export, value: str) -> tuple[str, Callable[[list[int]], dict[int, str]]]:
    """Union of memcpy (by copy kind) and memset operations with their ``value``, and the kinds' labels."""
    parts = []
    if MEMCPY in export.columns:
        if "ENUM_CUDA_MEMCPY_OPER" not in export.columns:
            # nsys 2025.3 refuses such exports; llmprof extract labels them with built-in names.
            raise ReportSkipped(f"{export.path} does not contain ENUM_CUDA_MEMCPY_OPER table.")
        parts.append(
            f"SELECT m.copyKind AS kind, {value} AS value "
            f"FROM {MEMCPY} m JOIN ENUM_CUDA_MEMCPY_OPER e ON e.id = m.copyKind"
        )
    if MEMSET in export.columns:
        parts.append(f"SELECT {MEMSET_KIND} AS kind, {value} AS value FROM {MEMSET}")
    if not parts:
        raise ReportSkipped(f"{export.path} does not contain GPU memory data.")
    labels = {MEMSET_KIND: "[CUDA memset]"}
    if "ENUM_CUDA_MEMCPY_OPER" in export.columns:
        kinds = export.query("SELECT id, label FROM ENUM_CUDA_MEMCPY_OPER")
        labels.update({int(k): f"[CUDA memcpy {v}]" for k, v in kinds})
    return " UNION ALL ".join(parts), lambda ids: labels


def cuda_gpu_mem_time_sum(export: Export) -> pd.DataFrame:
    """GPU time per memory operation kind."""
    source, labels = _memory_source(export, '"end" - start')
    return _by_label(_time_summary(_summarize(export, source, ("kind",)), ("kind",), "count"), "kind", labels)


def cuda_gpu_mem_size_sum(export: Export) -> pd.DataFrame:
    """Bytes moved per memory operation kind, in MB (10^6 bytes) as nsys prints them."""
    source, labels = _memory_source(export, "bytes")
    stats = _summarize(export, source, ("kind",))
    frame = pd.DataFrame(
        {
            "total_mb": stats["value_total"] / BYTES_PER_MB,
            "count": stats["value_n"].astype("int64"),
            "avg_mb": stats["value_mean"] / BYTES_PER_MB,
            "med_mb": stats["value_median"] / BYTES_PER_MB,
            "min_mb": stats["value_lo"] / BYTES_PER_MB,
            "max_mb": stats["value_hi"] / BYTES_PER_MB,
            "stddev_mb": stats["value_stddev"] / BYTES_PER_MB,
            "kind": stats["kind"],
            "total_bytes": stats["value_total"].astype("int64"),
        }
    )
    return _by_label(frame, "kind", labels)


def nvtx_range_source(export: Export, same_thread_only: bool = False) -> str:
    """SQL yielding every NVTX push/pop and start/end range as name, style, start, end, global_tid.

    The name is ``domain:text`` (the default domain has an empty name); text comes from
    ``text`` or, for registered strings, ``textId``. A range never closed ends at the last
    NVTX timestamp. ``same_thread_only`` keeps ranges that ended on their starting thread.
    """
    if not export.has_rows(NVTX):
        raise ReportSkipped(f"{export.path} does not contain NV Tools Extension (NVTX) data.")
    has_text_id = export.has(NVTX, "textId")
    text = "coalesce(st.value, e.text, '')" if has_text_id else "coalesce(e.text, '')"
    text_join = "LEFT JOIN StringIds st ON st.id = e.textId" if has_text_id else ""
    domain, domain_join = "''", ""
    if export.has(NVTX, "domainId"):
        domain_text = "coalesce(ds.value, d.text)" if has_text_id else "d.text"
        ds_join = "LEFT JOIN StringIds ds ON ds.id = d.textId" if has_text_id else ""
        domain = "coalesce(dom.name, '')"
        domain_join = f"""
        LEFT JOIN (SELECT d.domainId AS id, d.globalTid >> 24 AS pid, {domain_text} AS name, min(d.start)
                   FROM {NVTX} d {ds_join} WHERE d.eventType = {NVTX_DOMAIN_CREATE}
                   GROUP BY 1, 2) dom
            ON dom.id = e.domainId AND dom.pid = (e.globalTid >> 24) & {PID_MASK}"""
    thread_filter = "AND e.endGlobalTid IS NULL" if same_thread_only and export.has(NVTX, "endGlobalTid") else ""
    return f"""
        SELECT {domain} AS domain, {domain} || ':' || {text} AS name,
               CASE WHEN e.eventType IN ({NVTX_PUSH_POP}, {NVTXT_PUSH_POP}) THEN 'PushPop' ELSE 'StartEnd' END AS style,
               e.start AS start,
               coalesce(e."end", (SELECT max(max(start), max("end")) FROM {NVTX})) AS "end",
               e.globalTid AS global_tid
        FROM {NVTX} e {text_join} {domain_join}
        WHERE e.eventType IN ({", ".join(str(t) for t in NVTX_RANGE_TYPES)}) {thread_filter}
    """


def nvtx_sum(export: Export) -> pd.DataFrame:
    """Time per NVTX range name and style."""
    source = f'SELECT name, style, "end" - start AS value FROM ({nvtx_range_source(export)})'
    frame = _time_summary(_summarize(export, source, ("name", "style")), ("name", "style"), "instances")
    if frame.empty:
        raise ReportSkipped(f"{export.path} does not contain NV Tools Extension (NVTX) data.")
    return frame


def nvtx_ranges(export: Export) -> pd.DataFrame | None:
    """The NVTX ranges that ended on their starting thread, the ones projected onto GPU work."""
    try:
        source = nvtx_range_source(export, same_thread_only=True)
    except ReportSkipped:
        return None
    return pd.DataFrame(
        export.query(f'SELECT name, style, start, "end", global_tid FROM ({source})'),
        columns=["name", "style", "start_ns", "end_ns", "global_tid"],
    )


def launches(export: Export) -> LaunchResults:
    """Calls joined to their GPU work: kern_exec times and the NVTX projection (once per export)."""
    return launch_results(export, nvtx_ranges(export))


def nvtx_gpu_proj_sum(export: Export) -> pd.DataFrame:
    """NVTX ranges projected onto the GPU work their CUDA calls launched."""
    nvtx_range_source(export)  # raises ReportSkipped without NVTX data
    _require_rows(export, RUNTIME, "CUDA API data")
    projected = launches(export).projected
    if projected is None or projected.empty:
        raise ReportSkipped(f"{export.path} does not contain NV Tools Extension (NVTX) data.")
    return nvtx_gpu_projection_summary(projected)


def cuda_kern_exec_sum(export: Export) -> pd.DataFrame:
    """Per launching thread, API and kernel: total, API, queue and kernel time.

    Queue time runs from the end of the launch call to the kernel start; launches whose
    kernel started before the call returned have none (``q_count`` counts the others).
    """
    _require_rows(export, KERNEL, "CUDA kernel data")
    _require_rows(export, RUNTIME, "CUDA API data")
    stats = launches(export).times.copy()
    global_tid = stats["global_tid"].to_numpy(dtype="int64")
    stats["pid"], stats["tid"] = (global_tid >> 24) & PID_MASK, global_tid & PID_MASK
    kernel_names = _strings(export)(stats["kernel_id"].tolist())
    stats["kernel_name"] = [kernel_names.get(int(i)) if i == i and i is not None else None for i in stats["kernel_id"]]
    keys = ("pid", "tid", "device_id", "api_name", "kernel_name")
    stats = stats.sort_values(list(keys), kind="stable").reset_index(drop=True)  # nsys's tie order
    frame = stats[list(keys)].copy()
    frame["count"] = stats["t_n"].astype("int64")
    frame["q_count"] = stats["q_n"].astype("int64")
    for p in "taqk":
        frame[f"{p}_avg_ns"] = _rounded(stats[f"{p}_mean"])
        frame[f"{p}_med_ns"] = _rounded(stats[f"{p}_median"])
        frame[f"{p}_min_ns"] = stats[f"{p}_lo"].astype("Int64")
        frame[f"{p}_max_ns"] = stats[f"{p}_hi"].astype("Int64")
        frame[f"{p}_stddev_ns"] = _rounded(stats[f"{p}_stddev"])
    return frame.sort_values("t_avg_ns", ascending=False, kind="stable")


_TIME = _stat_columns("ns", "ns")
REPORTS: dict[str, Report] = {
    r.name: r
    for r in (
        Report(
            "cuda_gpu_kern_sum",
            (
                Column("time_pct", "Time (%)", 1),
                Column("total_ns", "Total Time (ns)"),
                Column("instances", "Instances"),
                *_TIME,
                _text("name", "Name"),
            ),
            cuda_gpu_kern_sum,
        ),
        Report(
            "cuda_api_sum",
            (
                Column("time_pct", "Time (%)", 1),
                Column("total_ns", "Total Time (ns)"),
                Column("num_calls", "Num Calls"),
                *_TIME,
                _text("name", "Name"),
            ),
            cuda_api_sum,
        ),
        Report(
            "cuda_gpu_mem_time_sum",
            (
                Column("time_pct", "Time (%)", 1),
                Column("total_ns", "Total Time (ns)"),
                Column("count", "Count"),
                *_TIME,
                _text("name", "Operation"),
            ),
            cuda_gpu_mem_time_sum,
        ),
        Report(
            "cuda_gpu_mem_size_sum",
            (
                Column("total_mb", "Total (MB)", 3),
                Column("count", "Count"),
                *_stat_columns("mb", "MB", 3),
                _text("name", "Operation"),
            ),
            cuda_gpu_mem_size_sum,
        ),
        Report(
            "nvtx_sum",
            (
                Column("time_pct", "Time (%)", 1),
                Column("total_ns", "Total Time (ns)"),
                Column("instances", "Instances"),
                *_TIME,
                _text("style", "Style"),
                _text("name", "Range"),
            ),
            nvtx_sum,
        ),
        Report(
            "osrt_sum",
            (
                Column("time_pct", "Time (%)", 1),
                Column("total_ns", "Total Time (ns)"),
                Column("num_calls", "Num Calls"),
                *_TIME,
                _text("name", "Name"),
            ),
            osrt_sum,
        ),
        Report(
            "nvtx_gpu_proj_sum",
            (
                _text("name", "Range"),
                _text("style", "Style"),
                Column("total_proj_ns", "Total Proj Time (ns)"),
                Column("total_range_ns", "Total Range Time (ns)"),
                Column("range_instances", "Range Instances"),
                Column("proj_avg_ns", "Proj Avg (ns)", 1),
                Column("proj_med_ns", "Proj Med (ns)", 1),
                Column("proj_min_ns", "Proj Min (ns)"),
                Column("proj_max_ns", "Proj Max (ns)"),
                Column("proj_stddev_ns", "Proj StdDev (ns)", 1),
                Column("total_gpu_ops", "Total GPU Ops"),
                Column("avg_gpu_ops", "Avg GPU Ops", 1),
                Column("avg_range_level", "Avg Range Lvl", 1),
                Column("avg_num_child", "Avg Num Child", 1),
            ),
            nvtx_gpu_proj_sum,
        ),
        Report(
            "cuda_kern_exec_sum",
            (
                Column("pid", "PID"),
                Column("tid", "TID"),
                Column("device_id", "DevId"),
                Column("count", "Count"),
                Column("q_count", "QCount"),
                *(
                    Column(f"{p}_{s}_ns", f"{p.upper()}{h} (ns)", d)
                    for p in "taqk"
                    for s, h, d in (
                        ("avg", "Avg", 1),
                        ("med", "Med", 1),
                        ("min", "Min", None),
                        ("max", "Max", None),
                        ("stddev", "StdDev", 1),
                    )
                ),
                _text("api_name", "API Name"),
                _text("kernel_name", "Kernel Name"),
            ),
            cuda_kern_exec_sum,
        ),
    )
}


def _format_value(value: object, decimals: int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if decimals is not None:
        return f"{float(value):.{decimals}f}"  # type: ignore[arg-type]  # numbers only, by the column spec
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def to_csv_text(report: Report, frame: pd.DataFrame) -> str:
    """The report as ``nsys stats --format csv --timeunit ns`` prints it."""
    lines = [",".join(_csv_field(c.header) for c in report.columns)]
    for row in frame.itertuples(index=False):
        lines.append(",".join(_csv_field(_format_value(v, c.decimals)) for v, c in zip(row, report.columns)))
    return "\n".join(lines) + "\n"


def _csv_field(text: str) -> str:
    """nsys quotes a field only when it holds a comma or a line break."""
    if "," in text or "\n" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def to_table_text(report: Report, frame: pd.DataFrame) -> str:
    """The report as an aligned text table (numbers right-aligned), as nsys prints to a terminal."""
    cells = [
        [_format_value(v, c.decimals) for v, c in zip(row, report.columns)] for row in frame.itertuples(index=False)
    ]
    widths = [max([len(c.header), *(len(r[i]) for r in cells)]) for i, c in enumerate(report.columns)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if c.text else v.rjust(w) for v, w, c in zip(values, widths, report.columns)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line([c.header for c in report.columns]), rule, *(line(r) for r in cells)]) + "\n"


def select_reports(spec: str) -> list[Report]:
    """Reports named in a comma-separated list ('all' for every one), in the order given."""
    names = list(REPORTS) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in REPORTS]
    if unknown:
        raise ConfigError(f"unknown report(s) {', '.join(unknown)}; choose from {', '.join(REPORTS)}")
    return [REPORTS[n] for n in names]


@dataclass(frozen=True)
class ReportOutput:
    """One report's result: its text, or why nsys would have skipped it."""

    report: Report
    text: str | None
    skipped: str | None


def run_reports(sqlite: str | Path, spec: str, fmt: str = "csv") -> list[ReportOutput]:
    """Compute the named reports of one export and format them (``csv`` or ``table``).

    Reports run on threads, each scanning the export through its own reader (SQLite and the
    numpy sorts release the GIL); results come back in the order asked.
    """
    render = to_csv_text if fmt == "csv" else to_table_text

    def one(report: Report, export: Export) -> ReportOutput:
        try:
            return ReportOutput(report, render(report, report.run(export)), None)
        except ReportSkipped as reason:
            return ReportOutput(report, None, str(reason))

    reports = select_reports(spec)
    with open_export(sqlite) as export, ThreadPoolExecutor(max_workers=min(len(reports), 8) or 1) as pool:
        return list(pool.map(lambda report: one(report, export), reports))
