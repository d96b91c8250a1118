"""Nsight Systems' expert rules (``nsys analyze``), computed from an export with nsys's thresholds.

Six rules, each a function from the export to a table whose columns, order and row
limit are those nsys prints: synchronizing CUDA calls (``cuda_api_sync``), synchronous
copies (``cuda_memcpy_sync``), asynchronous copies from pageable memory
(``cuda_memcpy_async``), synchronous memsets (``cuda_memset_sync``), GPU idle gaps
(``gpu_gaps``) and stretches of low GPU time utilization (``gpu_time_util``). The GPU
rules count the profiler's own flushes as GPU time, as nsys does, so a gap the user
cannot close is not reported. A user can check llmprof's findings against NVIDIA's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llmprof.common.errors import ConfigError, InputError
from llmprof.common.records import ExpertRuleRecord
from llmprof.nsys import expert as rows
from llmprof.nsys.export import Export

#: nsys's defaults: rows shown per rule, smallest gap (ms), utilization threshold (%) and chunks.
ROW_LIMIT = 50
GAP_MS = 500
UTIL_THRESHOLD_PCT = 50
UTIL_CHUNKS = 30


@dataclass(frozen=True)
class RuleOptions:
    """A rule's options, as ``nsys analyze -r rule:option=value`` sets them."""

    rows: int = ROW_LIMIT
    gap_ms: int = GAP_MS
    threshold_pct: int = UTIL_THRESHOLD_PCT
    chunks: int = UTIL_CHUNKS


@dataclass(frozen=True)
class RuleResult:
    """What one rule found: a table with nsys's columns (units in ``units``), or why it could not run."""

    rule: str
    table: pd.DataFrame
    error: str | None = None


def _limited(table: pd.DataFrame, options: RuleOptions) -> pd.DataFrame:
    return table if options.rows < 0 else table.head(options.rows)


def _by_duration(table: pd.DataFrame) -> pd.DataFrame:
    """Longest first; equal durations keep the order the export listed them in (as SQLite's sort does)."""
    return table.sort_values("duration_ns", ascending=False, kind="stable").reset_index(drop=True)


def cuda_api_sync(export: Export, options: RuleOptions) -> pd.DataFrame:
    """cudaDeviceSynchronize and cudaStreamSynchronize calls: the host blocked until the GPU finished."""
    calls = rows.runtime_calls_named(export, ("cudaDeviceSynchronize%", "cudaStreamSynchronize%"))
    return _limited(_by_duration(calls), options)


def issued_rule(rule: str) -> Callable[[Export, RuleOptions], pd.DataFrame]:
    """The copy or memset rule ``rule``: its operations, longest first."""

    def check(export: Export, options: RuleOptions) -> pd.DataFrame:
        return _limited(_by_duration(rows.issued_operations(export, rule)), options)

    return check


def _with_overhead(ops: rows.DeviceOperations, overhead: pd.DataFrame) -> rows.DeviceOperations:
    """The device's operations plus the profiler's flushes of its process strictly inside their span
    (a flush stalls every GPU of the process), which nsys counts as time the GPU was not idle."""
    low, high = int(ops.starts.min()), int(ops.ends.max())
    mine = overhead[(overhead.pid == ops.pid) & (overhead.start_ns > low) & (overhead.end_ns < high)]
    if mine.empty:
        return ops
    context = np.full(len(mine), ops.contexts[-1], np.int64)
    return rows.DeviceOperations(
        ops.pid,
        ops.device_id,
        np.concatenate([mine.start_ns.to_numpy(np.int64), ops.starts]),
        np.concatenate([mine.end_ns.to_numpy(np.int64), ops.ends]),
        np.concatenate([context, ops.contexts]),
    )


def _devices(export: Export) -> Iterator[rows.DeviceOperations]:
    overhead = rows.profiler_overhead_spans(export)
    for ops in rows.gpu_operations_by_device(export):
        yield _with_overhead(ops, overhead)


def _device_gaps(ops: rows.DeviceOperations, min_gap_ns: int) -> pd.DataFrame:
    """Pairs the k-th end with the (k+1)-th start, both in time order, as nsys pairs them.

    Sorts the group's own arrays in place (they are read once), so a device's ten million
    operations cost no copies beyond one difference array.
    """
    ops.starts.sort()
    if (ops.contexts == ops.contexts[0]).all():
        ops.ends.sort()
        contexts = ops.contexts
    else:
        order = np.argsort(ops.ends, kind="stable")
        ops.ends[:] = ops.ends[order]
        contexts = ops.contexts[order]
    keep = np.flatnonzero(ops.starts[1:] - ops.ends[:-1] > min_gap_ns)
    return pd.DataFrame(
        {
            "duration_ns": ops.starts[keep + 1] - ops.ends[keep],
            "start_ns": ops.ends[keep],
            "pid": ops.pid,
            "device_id": ops.device_id,
            "context_id": contexts[keep],
        }
    )


def gpu_gaps(export: Export, options: RuleOptions) -> pd.DataFrame:
    """Stretches longer than ``gap_ms`` where a process's device runs nothing (nor the profiler's flush)."""
    columns = ["duration_ns", "start_ns", "pid", "device_id", "context_id"]
    found = [_device_gaps(ops, options.gap_ms * 1_000_000) for ops in _devices(export)]
    gaps = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=columns)
    gaps = gaps.sort_values(["duration_ns", "start_ns"], ascending=[False, True], kind="stable")
    return _limited(gaps.reset_index(drop=True), options)


def _busy_before(starts: np.ndarray, ends: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Summed operation time before each of ``times`` (operations overlapping each other add up).

    All integers (ns, relative to the first time), so the sums stay exact for any capture length.
    Works in place on ``starts`` and ``ends`` (a device's operations are read once per rule).
    """
    origin = int(times.min())
    times = times - origin
    busy = np.zeros(len(times), np.int64)
    for values, sign in ((starts, 1), (ends, -1)):
        values -= origin
        values.sort()
        before = np.searchsorted(values, times, side="left")
        np.cumsum(values, out=values)
        summed = np.where(before > 0, values[np.maximum(before - 1, 0)], 0)
        busy += sign * (before * times - summed)
    return busy


def _chunks(ops: rows.DeviceOperations, options: RuleOptions) -> pd.DataFrame:
    """The equal chunks of one process's device span, each with its summed utilization (%)."""
    low, high = int(ops.starts.min()), int(ops.ends.max())
    size = math.ceil((high - low) / options.chunks)
    first = np.arange(options.chunks, dtype=np.int64) * size + low
    last = np.minimum(first + size, high)
    live = first < last
    first, last = first[live], last[live]
    busy = _busy_before(ops.starts, ops.ends, np.concatenate([first, last]))
    used = busy[len(first) :] - busy[: len(first)]
    return pd.DataFrame(
        {
            "chunk": np.arange(len(first)),
            "chunk_start": first,
            "chunk_end": last,
            "percent": used / (last - first) * 100,
        }
    )


def _coalesced(low: pd.DataFrame) -> pd.DataFrame:
    """Runs of consecutive low chunks merged into one row, weighted by chunk length."""
    run = low.chunk - np.arange(len(low))
    size = low.chunk_end - low.chunk_start
    merged = (
        low.assign(run=run, size=size, weighted=size * low.percent)
        .groupby("run", sort=False)
        .agg(start=("chunk_start", "min"), end=("chunk_end", "max"), size=("size", "sum"), weighted=("weighted", "sum"))
    )
    return pd.DataFrame(
        {
            "in_use_pct": (merged.weighted / merged["size"]).round(1),
            "duration_ns": merged.end - merged.start,
            "start_ns": merged.start,
        }
    )


def gpu_time_util(export: Export, options: RuleOptions) -> pd.DataFrame:
    """Stretches of each process's device span where GPU operations fill less than ``threshold_pct`` of the time."""
    if not 1 <= options.chunks <= 1000:
        raise InputError("gpu_time_util: argument chunks: value must be between 1 and 1000")
    found = []
    for ops in _devices(export):
        chunks = _chunks(ops, options)
        low = chunks[chunks.percent < options.threshold_pct]
        if not low.empty:
            found.append(_coalesced(low).assign(pid=ops.pid, device_id=ops.device_id, context_id=ops.contexts[-1]))
    columns = ["in_use_pct", "duration_ns", "start_ns", "pid", "device_id", "context_id"]
    table = pd.concat(found, ignore_index=True)[columns] if found else pd.DataFrame(columns=columns)
    table = table.sort_values(["in_use_pct", "duration_ns"], kind="stable").reset_index(drop=True)
    return _limited(table, options)


#: How each output column is written: ``int`` (ns, ids), ``text``, ``mb`` (bytes shown in MB) or ``pct``.
Column = tuple[str, str, str]  # header, table column, kind

#: Every rule's table leads with the span of what it found.
_SPAN_COLUMNS: tuple[Column, ...] = (("Duration (ns)", "duration_ns", "int"), ("Start (ns)", "start_ns", "int"))
_COPY_COLUMNS: tuple[Column, ...] = (
    *_SPAN_COLUMNS,
    ("Src Kind", "src_kind", "text"),
    ("Dst Kind", "dst_kind", "text"),
    ("Bytes (MB)", "bytes", "mb"),
    ("PID", "pid", "int"),
    ("Device ID", "device_id", "int"),
    ("Context ID", "context_id", "int"),
    ("Green Context ID", "green_context_id", "int"),
    ("Stream ID", "stream_id", "int"),
    ("API Name", "api_name", "text"),
)
_MEMSET_COLUMNS = (*_SPAN_COLUMNS, ("Memory Kind", "memory_kind", "text"), *_COPY_COLUMNS[4:])
_DEVICE_COLUMNS: tuple[Column, ...] = (
    ("PID", "pid", "int"),
    ("Device ID", "device_id", "int"),
    ("Context ID", "context_id", "int"),
)
_SYNC_ADVICE = (
    "The following are synchronization APIs that block the host until all issued CUDA calls are complete.\n\n"
    "Suggestions:\n   1. Avoid excessive use of synchronization.\n"
    "   2. Use asynchronous CUDA event calls, such as cudaStreamWaitEvent() and cudaEventSynchronize(), "
    "to prevent host synchronization."
)
_SYNC_NONE = "There were no problems detected related to synchronization APIs."
_CPU_SUGGESTIONS = (
    "Suggestions:\n   1. Use CPU sampling data, OS Runtime blocked state backtraces, and/or OS Runtime APIs "
    "related to thread synchronization to understand if a sluggish or blocked CPU is causing the gaps.\n"
    "   2. Add NVTX annotations to CPU code to understand the reason behind the gaps."
)


@dataclass(frozen=True)
class ExpertRule:
    """One ``nsys analyze`` rule: its name, title, check, output columns and the messages nsys prints.

    ``advice`` heads a non-empty result, ``no_result`` replaces an empty one; both may name the
    options ``{gap}`` and ``{threshold}``.
    """

    name: str
    title: str
    check: Callable[[Export, RuleOptions], pd.DataFrame]
    columns: tuple[Column, ...]
    advice: str
    no_result: str


EXPERT_RULES: dict[str, ExpertRule] = {
    rule.name: rule
    for rule in (
        ExpertRule(
            "cuda_api_sync",
            "CUDA Synchronization APIs",
            cuda_api_sync,
            (
                *_SPAN_COLUMNS,
                ("PID", "pid", "int"),
                ("TID", "tid", "int"),
                ("API Name", "api_name", "text"),
            ),
            _SYNC_ADVICE,
            _SYNC_NONE,
        ),
        ExpertRule(
            "cuda_memcpy_sync",
            "CUDA Synchronous Memcpy",
            issued_rule("cuda_memcpy_sync"),
            _COPY_COLUMNS,
            "The following are synchronous memory transfers that block the host. This does not include host to "
            "device transfers of a memory block of 64 KB or less.\n\nSuggestion: Use cudaMemcpy*Async() APIs instead.",
            "There were no problems detected related to synchronous memcpy operations.",
        ),
        ExpertRule(
            "cuda_memcpy_async",
            "CUDA Async Memcpy with Pageable Memory",
            issued_rule("cuda_memcpy_async"),
            _COPY_COLUMNS,
            "The following APIs use PAGEABLE memory which causes asynchronous CUDA memcpy operations to block and "
            "be executed synchronously. This leads to low GPU utilization.\n\n"
            "Suggestion: If applicable, use PINNED memory instead.",
            "There were no problems detected related to memcpy operations using pageable memory.",
        ),
        ExpertRule(
            "cuda_memset_sync",
            "CUDA Synchronous Memset",
            issued_rule("cuda_memset_sync"),
            _MEMSET_COLUMNS,
            _SYNC_ADVICE,
            _SYNC_NONE,
        ),
        ExpertRule(
            "gpu_gaps",
            "GPU Gaps",
            gpu_gaps,
            (("Row#", "row", "int"), *_SPAN_COLUMNS, *_DEVICE_COLUMNS),
            "The following are ranges where a GPU is idle for more than {gap}ms. Addressing these gaps might "
            "improve application performance.\n\n" + _CPU_SUGGESTIONS,
            "There were no problems detected with GPU utilization. GPU was not found to be idle for more than {gap}ms.",
        ),
        ExpertRule(
            "gpu_time_util",
            "GPU Time Utilization",
            gpu_time_util,
            (
                ("Row#", "row", "int"),
                ("In-Use (%)", "in_use_pct", "pct"),
                *_SPAN_COLUMNS,
                *_DEVICE_COLUMNS,
            ),
            # nsys prints the doubled percent sign of its format string as it is.
            "The following are time regions with an average GPU utilization below {threshold}%%. Addressing the "
            "gaps might improve application performance.\n\n" + _CPU_SUGGESTIONS,
            "There were no problems detected with GPU utilization. No time regions have an average GPU "
            "utilization below {threshold}%%.",
        ),
    )
}


def run_rule(export: Export, name: str, options: RuleOptions = RuleOptions()) -> RuleResult:
    """Run the rule ``name``; a missing table becomes the rule's error, as nsys reports it, not an exception."""
    rule = EXPERT_RULES[name]
    try:
        table = rule.check(export, options)
    except (InputError, rows.RuleDataAbsent) as exc:
        return RuleResult(name, pd.DataFrame(), error=str(exc))
    return RuleResult(name, table.assign(row=np.arange(1, len(table) + 1)))


_OPTION_FIELDS = {"rows": "rows", "gap": "gap_ms", "threshold": "threshold_pct", "chunks": "chunks"}
_RULE_OPTIONS = {
    "gpu_gaps": ("rows", "gap"),
    "gpu_time_util": ("rows", "threshold", "chunks"),
}


def parse_rules(spec: str) -> list[tuple[str, RuleOptions, str]]:
    """Rules named as ``nsys analyze -r`` names them (``gpu_gaps:gap=100,cuda_api_sync``), each with its
    options and the tag nsys puts in output file names (``gpu_gaps_gap=100``); ``all`` for the six rules.

    Raises:
        ConfigError: an unknown rule, an option the rule does not take, or a value that is not an integer.
    """
    if spec.strip() in ("", "all"):
        return [(name, RuleOptions(), name) for name in EXPERT_RULES]
    parsed = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, *settings = item.split(":")
        if name not in EXPERT_RULES:
            raise ConfigError(f"unknown rule {name!r}; choose from {', '.join(EXPERT_RULES)}")
        values: dict[str, int] = {}
        for setting in settings:
            key, _, value = setting.partition("=")
            if key not in _RULE_OPTIONS.get(name, ("rows",)) or not value.lstrip("-").isdigit():
                raise ConfigError(f"rule {name}: bad option {setting!r}")
            values[_OPTION_FIELDS[key]] = int(value)
        parsed.append((name, RuleOptions(**values), item.replace(":", "_")))
    return parsed


#: Rows of each rule kept in metrics.json (the CLI prints them all).
TOP_ROWS = 3


def expert_rule_records(export: Export) -> list[ExpertRuleRecord]:
    """Every rule with nsys's defaults, as metrics.json keeps it: how many rows, the first few, or why skipped."""
    found: list[ExpertRuleRecord] = []
    for name, rule in EXPERT_RULES.items():
        result = run_rule(export, name, RuleOptions(rows=-1))
        keys = [key for _, key, _ in rule.columns if key != "row"]
        top = result.table[keys].head(TOP_ROWS) if result.error is None else pd.DataFrame()
        found.append(
            {
                "rule": name,
                "title": rule.title,
                "rows": len(result.table),
                "skipped": None if result.error is None else result.error.replace(str(export.path), export.path.name),
                "top": [{str(k): _plain(v) for k, v in row.items()} for row in top.to_dict("records")],
            }
        )
    return found


def _plain(value: object) -> int | float | str | None:
    """A table value as JSON writes it (numpy scalars to Python, NaN to None)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value if isinstance(value, int | float | str) else str(value)
