"""Summaries equal to ``nsys stats`` reports, computed without nsys.

Each report is a :class:`Report`: a function of the export's rows to a frame with
snake_case columns (units in the names), plus how nsys 2025.3 titles and prints each
column, so ``llmprof stats --format csv`` prints what ``nsys stats --format csv
--timeunit ns`` prints. Reports read their rows through :mod:`llmprof.nsys.events`
as Arrow batches and group them with :class:`~llmprof.analysis.grouped.GroupedValues`
(exact medians included). Scans that several reports share (durations per name, the
join of GPU work to calls behind kern_exec and the NVTX projection) run once per
export through :class:`SharedScans`; ``llmprof extract`` hands in the results of its
own pass, so the export is read once.
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar, cast

import pandas as pd
import pyarrow as pa

from llmprof.analysis.grouped import GroupedValues, sqlite_round
from llmprof.analysis.launches import LaunchResults, launch_results
from llmprof.analysis.projection import nvtx_gpu_projection_summary
from llmprof.common.errors import ConfigError
from llmprof.common.progress import Progress
from llmprof.nsys import events
from llmprof.nsys.events import DataAbsent
from llmprof.nsys.export import Export, open_export
from llmprof.nsys.schema import pids, tids

BYTES_PER_MB = 1_000_000
Value = TypeVar("Value")


class ReportSkipped(Exception):
    """The export holds no data for a report (nsys prints SKIPPED); not an error."""


class KeyedOnce(Generic[Value]):
    """Each value computed once per key, even when threads ask at once; the key names every input."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Value] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def put(self, key: Hashable, value: Value) -> None:
        self._values[key] = value

    def get(self, key: Hashable, compute: Callable[[], Value]) -> Value:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                self._values[key] = compute()
        return self._values[key]


class SharedScans:
    """The scans several summaries of one export share, each run once.

    ``durations`` and ``launches``: results of the same scans made elsewhere (extraction's own pass).
    """

    def __init__(
        self,
        export: Export,
        durations: Mapping[str, pd.DataFrame] | None = None,
        launches: LaunchResults | None = None,
    ) -> None:
        self.export = export
        self._once: KeyedOnce[object] = KeyedOnce()
        for name, frame in (durations or {}).items():
            self._once.put(("durations", name), frame)
        if launches is not None:
            self._once.put(("launches",), launches)

    def durations(self, name: str) -> pd.DataFrame:
        """Duration statistics per name id of kernels, CUDA calls or OS runtime calls."""
        compute = lambda: _summarize(events.duration_batches(self.export, name), ("name_id",))  # noqa: E731
        return cast(pd.DataFrame, self._once.get(("durations", name), compute))

    def launches(self) -> LaunchResults:
        """Calls joined to their GPU work: kern_exec times and the NVTX projection."""
        return cast(LaunchResults, self._once.get(("launches",), lambda: launch_results(self.export)))


@dataclass(frozen=True)
class Column:
    """One output column: its Parquet name, its nsys header and how nsys prints it."""

    name: str
    header: str
    decimals: int | None = None  # None: integer or text, printed as is
    text: bool = False
    scale: int = 1  # printed divided by this (a time column in a --timeunit other than ns)

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
    compute: Callable[[SharedScans], pd.DataFrame]

    def run(self, source: Export | SharedScans) -> pd.DataFrame:
        """The report's rows, typed and in nsys order; raises ReportSkipped when no data."""
        scans = source if isinstance(source, SharedScans) else SharedScans(source)
        try:
            frame = self.compute(scans)
        except DataAbsent as absent:
            raise ReportSkipped(str(absent)) from absent
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
    batches: Iterable[pa.RecordBatch], keys: tuple[str, ...], values: tuple[str, ...] = ("value",)
) -> pd.DataFrame:
    """Per key: count, total, mean, median, min, max and sample standard deviation of each value.

    ``batches`` (in any order) hold the ``keys`` columns (ids or short labels) and the ``values``
    columns; they stream through :class:`GroupedValues`. Rows come back in ascending key order,
    the order nsys breaks ties in.
    """
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


def _require(export: Export, name: str, what: str) -> None:
    if not events.has_events(export, name):
        raise ReportSkipped(f"{export.path} does not contain {what}.")


Lookup = Callable[[list[int]], Mapping[int, str | None]]


def _strings(export: Export, transform: str = "value") -> Lookup:
    """A lookup of the names (through an SQL ``transform``) of the ids a summary found."""

    def lookup(ids: list[int]) -> dict[int, str | None]:
        found = events.lookup_strings(export, [int(i) for i in ids if i is not None and i == i], transform)
        return {i: str(v) for i, v in found.items()}

    return lookup


def _labels(ids: pd.Series, names: Mapping[int, str | None]) -> pd.Series:
    """The name of each id; a NULL id, or one StringIds lacks, names nothing (as SQL's LEFT JOIN does)."""
    return pd.Series([names.get(int(i)) if i is not None and i == i else None for i in ids], index=ids.index)


def _by_label(frame: pd.DataFrame, key: str, lookup: Lookup) -> pd.DataFrame:
    """Replace id ``key`` with its label in ``name``; ties in total keep label order, as nsys's do."""
    names = lookup(frame[key].tolist())
    labelled = frame.assign(name=_labels(frame[key], names))
    labelled = labelled.sort_values("name", kind="stable", na_position="first")
    total = "total_ns" if "total_ns" in labelled else "total_bytes"
    return labelled.sort_values(total, ascending=False, kind="stable")


def cuda_gpu_kern_sum(scans: SharedScans) -> pd.DataFrame:
    """GPU time per kernel name (demangled, as nsys prints by default)."""
    _require(scans.export, "kernels", "CUDA kernel data")
    summary = _time_summary(scans.durations("kernels"), ("name_id",), "instances")
    return _by_label(summary, "name_id", _strings(scans.export))


def _call_summary(scans: SharedScans, name: str, what: str) -> pd.DataFrame:
    """Time per function of host calls (ties in total keep name id order)."""
    _require(scans.export, name, what)
    frame = _time_summary(scans.durations(name), ("name_id",), "num_calls")
    names = _strings(scans.export, events.name_transform(name))(frame["name_id"].tolist())
    return frame.assign(name=_labels(frame["name_id"], names))


def cuda_api_sum(scans: SharedScans) -> pd.DataFrame:
    """Host time per CUDA runtime and driver API function."""
    return _call_summary(scans, "cuda_api", "CUDA trace data")


def osrt_sum(scans: SharedScans) -> pd.DataFrame:
    """Host time per OS runtime function (pthread, poll, ioctl, ...)."""
    return _call_summary(scans, "osrt", "OS Runtime trace data")


def cuda_gpu_mem_time_sum(scans: SharedScans) -> pd.DataFrame:
    """GPU time per memory operation kind."""
    batches, labels = events.memory_operations(scans.export, "duration")
    return _by_label(_time_summary(_summarize(batches, ("kind",)), ("kind",), "count"), "kind", lambda ids: labels)


def cuda_gpu_mem_size_sum(scans: SharedScans) -> pd.DataFrame:
    """Bytes moved per memory operation kind, in MB (10^6 bytes) as nsys prints them."""
    batches, labels = events.memory_operations(scans.export, "bytes")
    stats = _summarize(batches, ("kind",))
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
    return _by_label(frame, "kind", lambda ids: labels)


def nvtx_sum(scans: SharedScans) -> pd.DataFrame:
    """Time per NVTX range name and style."""
    stats = _summarize(events.nvtx_durations(scans.export), ("name", "style"))
    frame = _time_summary(stats, ("name", "style"), "instances")
    if frame.empty:
        raise ReportSkipped(f"{scans.export.path} does not contain NV Tools Extension (NVTX) data.")
    return frame


def nvtx_gpu_proj_sum(scans: SharedScans) -> pd.DataFrame:
    """NVTX ranges projected onto the GPU work their CUDA calls launched."""
    events.nvtx_range_sql(scans.export)  # raises DataAbsent without NVTX data
    _require(scans.export, "cuda_api", "CUDA API data")
    projected = scans.launches().projected
    if projected is None or projected.empty:
        raise ReportSkipped(f"{scans.export.path} does not contain NV Tools Extension (NVTX) data.")
    return nvtx_gpu_projection_summary(projected)


def cuda_kern_exec_sum(scans: SharedScans) -> pd.DataFrame:
    """Per launching thread, API and kernel: total, API, queue and kernel time.

    Queue time runs from the end of the launch call to the kernel start; launches whose
    kernel started before the call returned have none (``q_count`` counts the others).
    """
    _require(scans.export, "kernels", "CUDA kernel data")
    _require(scans.export, "cuda_api", "CUDA API data")
    stats = scans.launches().times.copy()
    global_tid = stats["global_tid"].to_numpy(dtype="int64")
    stats["pid"], stats["tid"] = pids(global_tid), tids(global_tid)
    kernel_names = _strings(scans.export)(stats["kernel_id"].tolist())
    stats["kernel_name"] = _labels(stats["kernel_id"], kernel_names)
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


#: ``--timeunit`` as nsys stats takes it (its long spellings too): the unit in headers, and ns per unit.
TIME_UNITS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9}
TIME_UNIT_NAMES = {"nsec": "ns", "usec": "us", "msec": "ms", "sec": "s", **{unit: unit for unit in TIME_UNITS}}


def in_time_unit(report: Report, unit: str) -> Report:
    """The report with its time columns (headers ending ``(ns)``) in ``unit``: headers say the unit, values are
    scaled, with the decimals that keep every nanosecond (``12345`` ns → ``12.345`` us)."""
    factor = TIME_UNITS[TIME_UNIT_NAMES[unit]]
    if factor == 1:
        return report
    digits = len(str(factor)) - 1
    header = f"({TIME_UNIT_NAMES[unit]})"
    columns = tuple(
        replace(c, header=c.header.replace("(ns)", header), decimals=(c.decimals or 0) + digits, scale=factor)
        if c.header.endswith("(ns)")
        else c
        for c in report.columns
    )
    return replace(report, columns=columns)


def _format_value(value: object, decimals: int | None, scale: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if scale != 1:
        return f"{float(value) / scale:.{decimals}f}"  # type: ignore[arg-type]  # time columns are numbers
    if decimals is not None:
        return f"{float(value):.{decimals}f}"  # type: ignore[arg-type]  # numbers only, by the column spec
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def to_csv_text(report: Report, frame: pd.DataFrame) -> str:
    """The report as ``nsys stats --format csv --timeunit ns`` prints it."""
    lines = [",".join(_csv_field(c.header) for c in report.columns)]
    for row in frame.itertuples(index=False):
        values = (_format_value(v, c.decimals, c.scale) for v, c in zip(row, report.columns))
        lines.append(",".join(_csv_field(v) for v in values))
    return "\n".join(lines) + "\n"


def _csv_field(text: str) -> str:
    """nsys quotes a field only when it holds a comma or a line break."""
    if "," in text or "\n" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def to_table_text(report: Report, frame: pd.DataFrame) -> str:
    """The report as an aligned text table (numbers right-aligned), as nsys prints to a terminal."""
    cells = [
        [_format_value(v, c.decimals, c.scale) for v, c in zip(row, report.columns)]
        for row in frame.itertuples(index=False)
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


def run_reports(sqlite: str | Path, spec: str, fmt: str = "csv", timeunit: str = "ns") -> list[ReportOutput]:
    """Compute the named reports of one export and format them (``csv`` or ``table``), times in ``timeunit``.

    Reports run on threads, each scanning the export through its own reader (SQLite and the
    numpy sorts release the GIL); results come back in the order asked.
    """
    render = to_csv_text if fmt == "csv" else to_table_text

    def one(report: Report, scans: SharedScans) -> ReportOutput:
        try:
            return ReportOutput(report, render(in_time_unit(report, timeunit), report.run(scans)), None)
        except ReportSkipped as reason:
            return ReportOutput(report, None, str(reason))

    reports = select_reports(spec)
    with open_export(sqlite) as export, ThreadPoolExecutor(max_workers=min(len(reports), 8) or 1) as pool:
        scans = SharedScans(export)
        futures = [pool.submit(one, report, scans) for report in reports]
        with Progress("stats", len(reports), "reports") as counter:
            for _ in as_completed(futures):
                counter.advance()
        return [future.result() for future in futures]
