"""Idle time explained: each gap with no kernel running, classified by what the host and the GPU did meanwhile.

A gap (from :mod:`llmprof.analysis.busy`) belongs to the thread that launched the operation
ending it (for a trailing gap, the one before it). Every nanosecond of the gap goes to the
first class that holds at that instant, in this order:

``copy``         the device's copy engines ran (a copy or memset): the SMs idle, the GPU not;
``profiler``     the profiler's own work (PROFILER_OVERHEAD) in the launching process, on any of its threads;
``rank_wait``    the thread was blocked in a synchronizing call while a collective kernel ran on another device;
``sync``         the thread was blocked in a synchronizing call (``*Synchronize``, a synchronous copy or memset);
``launch``       the thread was inside a launching call (kernel or graph launch): the GPU waited on the launch;
``cuda_api``     the thread was inside another CUDA call;
``host``         the thread was outside every CUDA call: Python, the scheduler, between launches;
``unattributed`` no launching thread is known (the operation's call is not in the export).

Gaps shorter than ``IDLE_GAP_MIN_NS`` are counted, not classified. The host side is read only
near the gaps: calls and windows that overlap no gap are dropped as the tables stream by, and
each thread's gaps are classified with sorted merges (no cross join).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmprof.analysis.busy import IDLE_GAP_MIN_NS, GpuTime, Iterations
from llmprof.analysis.grouped import (
    IntervalUnion,
    SpillBuffer,
    bin_ranges,
    bin_shift,
    int_column,
    read_chunks,
    write_partitions,
)
from llmprof.common.outputs import write_table
from llmprof.common.records import DeviceIdle, IdleGap, IdleMetrics, IterationIdle

CLASSES = ("copy", "profiler", "rank_wait", "sync", "launch", "cuda_api", "host", "unattributed")
HOST_CLASSES = CLASSES[1:-1]  # what the host side explains


class ClassWords(NamedTuple):
    """How an idle class is named: in a list of classes, as a finding's main cause, in the report's table of
    classes, and as a column header."""

    listed: str
    cause: str
    described: str
    header: str


CLASS_WORDS: dict[str, ClassWords] = {
    "copy": ClassWords("copies", "copies", "copy engines busy (SMs idle)", "Copies"),
    "profiler": ClassWords("profiler's own work", "the profiler's own work", "profiler's own work", "Profiler"),
    "rank_wait": ClassWords(
        "waiting on another rank", "waiting on another rank", "waiting on another rank", "Rank wait"
    ),
    "sync": ClassWords("synchronization", "host synchronization", "host blocked in synchronization", "Sync"),
    "launch": ClassWords("launch calls", "launch calls", "host inside launch calls", "Launch calls"),
    "cuda_api": ClassWords("other CUDA calls", "other CUDA calls", "host inside other CUDA calls", "Other CUDA calls"),
    "host": ClassWords(
        "host code",
        "the host between launches (Python, scheduling)",
        "host between launches (Python, scheduling)",
        "Host",
    ),
    "unattributed": ClassWords(
        "unattributed", "unattributed (no launching call)", "unattributed (no launching call)", "Unattributed"
    ),
}
READ_ROWS = 1 << 18
TOP_GAPS = 10
GPU_TABLES = ("kernels", "memcpy", "memset")
#: Sources of the intervals read near the gaps; a call's source is its kind.
COPY, PROFILER, COLLECTIVE, BLOCKING, LAUNCHING, OTHER_CALL = range(6)
RECORD = np.dtype([("start", "i8"), ("end", "i8"), ("code", "i8"), ("source", "i1")])
NEAR_BUDGET = 1 << 20  # records near gaps held at once (25 MiB); more are taken a time window at a time
#: A call blocks its thread until the GPU is done: any ``*Synchronize``, and copies and memsets that are not async.
_BLOCKING = r"Synchronize|^cu(?:da)?Mem(?:cpy|set)(?!.*Async)"
_LAUNCH = r"Launch"

IDLE_GAPS = pa.schema(
    [
        pa.field("device_id", pa.int32()),
        pa.field("start_ns", pa.int64(), nullable=False),
        pa.field("end_ns", pa.int64(), nullable=False),
        pa.field("duration_ns", pa.int64(), nullable=False),
        pa.field("iteration", pa.int32()),  # the iteration window holding the gap's start; null outside every one
        pa.field("pid", pa.int32()),  # the thread that launched the operation ending the gap (null: unknown)
        pa.field("tid", pa.int32()),
        pa.field("cause", pa.string()),  # the class holding most of the gap
        pa.field("next_operation", pa.string()),  # kernel short name, memcpy H2D, memset; null for a trailing gap
        pa.field("next_call", pa.string()),  # the CUDA call that launched it
        *(pa.field(f"{c}_ns", pa.int64(), nullable=False) for c in CLASSES),
    ]
)


def _gap_frame(sm_gaps: dict[int, np.ndarray]) -> pd.DataFrame:
    parts = [
        pd.DataFrame({"device_id": device, "start_ns": g[0], "end_ns": g[1]}) for device, g in sm_gaps.items() if g.size
    ]
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype="int64") for c in ("device_id", "start_ns", "end_ns")})
    return pd.concat(parts, ignore_index=True).sort_values(["device_id", "start_ns"], kind="stable", ignore_index=True)


def _operation_batches(stage: Path) -> Iterator[pd.DataFrame]:
    """Every GPU operation: device, process, correlation id, start, end and a label, a batch at a time."""
    for order, table in enumerate(GPU_TABLES):
        parquet = pq.ParquetFile(stage / f"{table}.parquet")
        label = {"kernels": "short_name", "memcpy": "direction"}.get(table)
        columns = ["device_id", "pid", "correlation_id", "start_ns", "end_ns"] + ([label] if label else [])
        for batch in parquet.iter_batches(columns=columns, batch_size=READ_ROWS):
            frame = batch.to_pandas()
            if table == "kernels":
                frame["label"] = frame.pop("short_name")
            else:
                frame["label"] = "memcpy " + frame.pop("direction").astype(str) if label else "memset"
            yield frame.assign(table=order)


def _neighbours(stage: Path, gaps: pd.DataFrame) -> pd.DataFrame:
    """Per gap: the operation starting at its end or, for a gap no operation ends, the one ending at its start.

    Where several start at once, the first by table (kernels, copies, memsets) and correlation id.
    """
    keys = ["device_id", "time_ns"]
    wanted = pd.concat(
        [
            gaps.reset_index().rename(columns={"index": "gap", "end_ns": "time_ns"})[["gap", *keys]].assign(after=0),
            gaps.reset_index().rename(columns={"index": "gap", "start_ns": "time_ns"})[["gap", *keys]].assign(after=1),
        ]
    )
    found = []
    for frame in _operation_batches(stage):
        starts = frame.rename(columns={"start_ns": "time_ns"}).merge(wanted[wanted.after == 0], on=keys)
        ends = frame.rename(columns={"end_ns": "time_ns"}).merge(wanted[wanted.after == 1], on=keys)
        found += [starts, ends]
    columns = ["gap", "after", "table", "correlation_id", "pid", "label"]
    if not found:
        return pd.DataFrame(columns=columns)
    every = pd.concat(found, ignore_index=True)[columns]
    every = every.sort_values(["gap", "after", "table", "correlation_id"], kind="stable")
    return every.drop_duplicates("gap").reset_index(drop=True)


def _call_batches(stage: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    parquet = pq.ParquetFile(stage / "cuda_api.parquet")
    for batch in parquet.iter_batches(columns=columns, batch_size=READ_ROWS):
        yield batch.to_pandas()


def _launching_calls(stage: Path, neighbours: pd.DataFrame) -> pd.DataFrame:
    """The thread and name of the call that launched each gap's neighbouring operation (where the export has it)."""
    keys = ["pid", "correlation_id"]
    wanted = neighbours.dropna(subset=keys).astype({"pid": "int64", "correlation_id": "int64"})
    found = []
    for calls in _call_batches(stage, ["pid", "tid", "correlation_id", "name"]):
        calls = calls.dropna(subset=keys).astype({"pid": "int64", "correlation_id": "int64"})
        found.append(calls.merge(wanted[["gap", *keys]], on=keys))
    if not found:
        return pd.DataFrame(columns=["gap", "tid", "name"])
    every = pd.concat(found, ignore_index=True).sort_values(["gap", "tid"], kind="stable")
    return every.drop_duplicates("gap")[["gap", "tid", "name"]]


def _overlapping(gap_starts: np.ndarray, gap_ends: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which intervals overlap at least one of some sorted, disjoint gaps."""
    return np.searchsorted(gap_ends, starts, side="right") < np.searchsorted(gap_starts, ends, side="left")


def _call_kinds(names: pa.Array) -> np.ndarray:
    """Per call: its source code, ``BLOCKING``, ``LAUNCHING`` or ``OTHER_CALL``, judged once per distinct name."""
    if not isinstance(names, pa.DictionaryArray):
        names = pc.dictionary_encode(names)
    text = pd.Series(names.dictionary.to_pylist(), dtype=object).fillna("").astype(str)
    launching = np.where(text.str.contains(_LAUNCH), LAUNCHING, OTHER_CALL)
    kinds = np.append(np.where(text.str.contains(_BLOCKING), BLOCKING, launching), OTHER_CALL).astype("int8")
    found: np.ndarray = kinds[int_column(names.indices, null=len(kinds) - 1)]  # no name: another call
    return found


def _records(start: np.ndarray, end: np.ndarray, code: np.ndarray, source: np.ndarray | int) -> np.ndarray:
    found = np.empty(len(start), dtype=RECORD)
    found["start"], found["end"], found["code"], found["source"] = start, end, code, source
    return found


class _Threads:
    """The launching threads of the gaps: a code for each, and its gaps (merged over devices) to filter calls by."""

    def __init__(self, gaps: pd.DataFrame) -> None:
        known = gaps.dropna(subset=["pid", "tid"])
        keys = (known["pid"].to_numpy("int64") << 24) | known["tid"].to_numpy("int64")
        self.keys = np.unique(keys)
        self.gaps = []
        for key in self.keys.tolist():
            mine = known[keys == key]
            self.gaps.append(IntervalUnion(mine["start_ns"].to_numpy("int64"), mine["end_ns"].to_numpy("int64")))

    def codes(self, pid: np.ndarray, tid: np.ndarray) -> np.ndarray:
        """The code of each (pid, tid), -1 for a thread without gaps."""
        keys = (pid << 24) | tid
        at = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        return np.where((len(self.keys) > 0) & (self.keys[at] == keys) & (pid >= 0) & (tid >= 0), at, -1)

    def code(self, pid: int, tid: int) -> int:
        return int(self.codes(np.array([pid]), np.array([tid]))[0])


def _near(stage: Path, every: IntervalUnion, threads: _Threads) -> Iterator[np.ndarray]:
    """Every interval the classes read that overlaps a gap, as records (see ``RECORD``), a batch at a time:
    copies and memsets (code: device), profiler windows (pid), collective kernels (device), and the CUDA calls
    of the gaps' threads (thread code; only those that overlap one of that thread's gaps)."""
    sources = (
        ("memcpy", "device_id", COPY),
        ("memset", "device_id", COPY),
        ("profiler_overhead", "pid", PROFILER),
        ("collectives", "device_id", COLLECTIVE),
    )
    for table, key, source in sources:
        parquet = pq.ParquetFile(stage / f"{table}.parquet")
        for batch in parquet.iter_batches(columns=[key, "start_ns", "end_ns"], batch_size=READ_ROWS):
            code, start, end = (int_column(batch.column(i)) for i in range(3))
            near = _overlapping(every.starts, every.ends, start, end)
            yield _records(start[near], end[near], code[near], source)
    parquet = pq.ParquetFile(stage / "cuda_api.parquet", read_dictionary=["name"])
    for batch in parquet.iter_batches(columns=["pid", "tid", "start_ns", "end_ns", "name"], batch_size=READ_ROWS):
        pid, tid, start, end = (int_column(batch.column(i)) for i in range(4))
        code = threads.codes(pid, tid)
        near = np.zeros(len(code), dtype=bool)
        for value in np.unique(code[code >= 0]).tolist():
            mine = np.flatnonzero(code == value)
            gaps = threads.gaps[value]
            near[mine] = _overlapping(gaps.starts, gaps.ends, start[mine], end[mine])
        rows = np.flatnonzero(near)
        yield _records(start[rows], end[rows], code[rows], _call_kinds(batch.column("name").take(pa.array(rows))))


def _filed(
    stage: Path, every: IntervalUnion, threads: _Threads, scratch: Path
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Time windows in order, each with the records that overlap it (at most about ``NEAR_BUDGET`` filed in each).

    The records are read once: one pass counts them per time bin as it keeps them (on disk past
    ``NEAR_BUDGET``), the next files them by the window of their start; a record that reaches past
    its window's end is carried into the next ones.
    """
    low, high = int(every.starts[0]), int(every.ends[-1])
    shift = bin_shift(low, high)
    histogram = np.zeros(((high - low) >> shift) + 1, dtype="int64")
    kept = SpillBuffer(scratch / "near.bin", NEAR_BUDGET)
    for records in _near(stage, every, threads):
        histogram += np.bincount((np.clip(records["start"], low, high) - low) >> shift, minlength=len(histogram))
        kept.append(records)
    kept.close()
    starts = np.array([low + (first << shift) for first, _ in bin_ranges(histogram, NEAR_BUDGET)], dtype="int64")
    paths = [scratch / f"near-{i}" for i in range(len(starts))]
    handles = [path.open("wb") for path in paths]
    try:
        again = read_chunks(scratch / "near.bin", RECORD, NEAR_BUDGET) if kept.spilled else iter(kept.chunks)
        for records in again:
            clipped = np.clip(records["start"], low, high)
            write_partitions(records, np.searchsorted(starts, clipped, side="right") - 1, handles)
    finally:
        for handle in handles:
            handle.close()
    carried = np.zeros(0, dtype=RECORD)
    for i, path in enumerate(paths):
        end = int(starts[i + 1]) if i + 1 < len(starts) else high + 1
        records = np.concatenate([carried, np.fromfile(path, dtype=RECORD)])
        path.unlink()
        yield int(starts[i]), end, records
        carried = records[records["end"] > end]


def _set(records: np.ndarray, mine: np.ndarray) -> IntervalUnion | None:
    return IntervalUnion(records["start"][mine], records["end"][mine]) if mine.any() else None


def _classify(
    gs: np.ndarray, ge: np.ndarray, sets: list[IntervalUnion | None], known: bool, iterations: Iterations
) -> tuple[np.ndarray, np.ndarray]:
    """Time of each class (columns, in ``CLASSES`` order) in each gap, and in each iteration (last row: outside).

    ``sets``: copy, profiler, collective elsewhere, blocking, launching, other calls (None: none);
    ``known``: whether the gaps' thread is known (else their host side is ``unattributed``).
    """
    present = [s for s in sets if s is not None]
    points = np.concatenate([gs, ge, iterations.starts, iterations.ends, *(s.bounds() for s in present)])
    points = points[(points >= gs[0]) & (points <= ge[-1])]
    points.sort()  # a sort, not np.unique: hashing is far slower on millions of times
    points = points[np.concatenate(([True], points[1:] != points[:-1]))]
    begin, end = points[:-1], points[1:]
    gap = np.searchsorted(gs, begin, side="right") - 1
    inside = (gap >= 0) & (begin < ge[np.maximum(gap, 0)])
    begin, end, gap = begin[inside], end[inside], gap[inside]
    held = [s.covers(begin) if s is not None else np.zeros(len(begin), bool) for s in sets]
    copy, profiler, elsewhere, blocking, launching, other = held
    rows = [copy, profiler, blocking & elsewhere, blocking, launching, other] if known else [copy]
    rows += [np.ones(len(begin), bool)]  # the rest: host (thread known) or unattributed
    first = np.argmax(np.stack(rows), axis=0)
    classes = np.array([0, 1, 2, 3, 4, 5, 6] if known else [0, 7])[first]
    per_gap = np.zeros((len(gs), len(CLASSES)), dtype="int64")
    np.add.at(per_gap, (gap, classes), end - begin)
    iteration = iterations.locate(begin)
    per_iteration = np.zeros((len(iterations.starts) + 1, len(CLASSES)), dtype="int64")
    np.add.at(per_iteration, (np.where(iteration >= 0, iteration, -1), classes), end - begin)
    return per_gap, per_iteration


def _with_threads(stage: Path, gaps: pd.DataFrame) -> pd.DataFrame:
    """The gaps with the process, thread and call that launched their neighbouring operation, and its label."""
    neighbours = _neighbours(stage, gaps)
    calls = _launching_calls(stage, neighbours)
    found = neighbours.set_index("gap")[["pid", "label", "after"]].join(calls.set_index("gap"), how="left")
    found = found.rename(columns={"name": "next_call", "label": "next_operation"})
    found.loc[found["after"] == 1, ["next_operation", "next_call"]] = None  # a trailing gap: nothing came next
    joined = gaps.join(found[["pid", "tid", "next_operation", "next_call"]], how="left")
    return joined.astype({"pid": "Int64", "tid": "Int64"})


class _Groups:
    """The gaps by (device, launching thread), each group's gaps sorted by start, with their row in the table."""

    def __init__(self, gaps: pd.DataFrame, threads: _Threads) -> None:
        pid = gaps["pid"].fillna(-1).to_numpy("int64")
        codes = threads.codes(pid, gaps["tid"].fillna(-1).to_numpy("int64"))
        self.groups = []
        for (device, code), part in gaps.assign(code=codes, pid_=pid).groupby(["device_id", "code"], sort=True):
            ordered = part.sort_values("start_ns", kind="stable")
            self.groups.append(
                (
                    _int(device),
                    _int(code),
                    _int(ordered["pid_"].iloc[0]),
                    ordered["start_ns"].to_numpy("int64"),
                    ordered["end_ns"].to_numpy("int64"),
                    ordered.index.to_numpy(),
                )
            )


def _classified(stage: Path, gaps: pd.DataFrame, iterations: Iterations) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Class times of every gap (``{class}_ns`` columns), and per device per iteration (rows; last: outside all).

    Time window by time window (see :func:`_filed`), each group's gaps are cut to the window and classified
    against the records overlapping it.
    """
    threads = _Threads(gaps)
    every = IntervalUnion(gaps["start_ns"].to_numpy("int64"), gaps["end_ns"].to_numpy("int64"))
    per_gap = np.zeros((len(gaps), len(CLASSES)), dtype="int64")
    per_iteration: dict[int, np.ndarray] = {}
    groups = _Groups(gaps, threads).groups
    with tempfile.TemporaryDirectory(prefix=".idle-", dir=stage) as scratch:
        for low, high, records in _filed(stage, every, threads, Path(scratch)):
            source, code = records["source"], records["code"]
            for device, thread, pid, gs, ge, rows in groups:
                first, last = np.searchsorted(ge, low, side="right"), np.searchsorted(gs, high, side="left")
                if first >= last:
                    continue
                sets = [_set(records, (source == COPY) & (code == device))]
                sets += [_set(records, (source == PROFILER) & (code == pid)) if thread >= 0 else None]
                sets += [_set(records, (source == COLLECTIVE) & (code != device))]
                sets += [_set(records, (source == k) & (code == thread)) for k in (BLOCKING, LAUNCHING, OTHER_CALL)]
                cut_start, cut_end = np.maximum(gs[first:last], low), np.minimum(ge[first:last], high)
                gap_ns, iteration_ns = _classify(cut_start, cut_end, sets, thread >= 0, iterations)
                per_gap[rows[first:last]] += gap_ns
                per_iteration[device] = per_iteration.get(device, 0) + iteration_ns
    return gaps.assign(**{f"{c}_ns": per_gap[:, i] for i, c in enumerate(CLASSES)}), per_iteration


def _cause(frame: pd.DataFrame) -> pd.Series:
    """The class holding most of each gap (the first in ``CLASSES`` order on a tie)."""
    times = frame[[f"{c}_ns" for c in CLASSES]].to_numpy("int64")
    return pd.Series(np.array(CLASSES, dtype=object)[np.argmax(times, axis=1)], index=frame.index)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or value != value


def _int(value: Any) -> int:
    return int(value)


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def _gap_record(row: dict[Any, Any]) -> IdleGap:
    iteration = row["iteration"]
    return {
        "device_id": int(row["device_id"]),
        "start_ns": int(row["start_ns"]),
        "duration_ns": int(row["duration_ns"]),
        "iteration": None if iteration is None or iteration is pd.NA else int(iteration),
        "cause": str(row["cause"]),
        "next_operation": _text(row["next_operation"]),
        "next_call": _text(row["next_call"]),
        "classes": {c: int(row[f"{c}_ns"]) for c in CLASSES},
    }


def _device_idle(device: int, gaps: pd.DataFrame, iteration_ns: np.ndarray | None, gpu: GpuTime) -> DeviceIdle:
    busy = next(d for d in gpu.busy["devices"] if d["device_id"] == device)
    window = gpu.busy["window_ns"]
    classes = {c: int(gaps[f"{c}_ns"].sum()) for c in CLASSES}
    idle_ns = window - busy["union_ns"]
    explained = sum(classes[c] for c in HOST_CLASSES)
    host_side = {c: classes[c] for c in (*HOST_CLASSES, "unattributed")}
    iterations: list[IterationIdle] = [
        {"index": i, "classes": {c: int(row[k]) for k, c in enumerate(CLASSES)}}
        for i, row in enumerate(iteration_ns[:-1] if iteration_ns is not None else [])
    ]
    return {
        "device_id": device,
        "sm_idle_ns": window - busy["kernel_ns"],
        "idle_ns": idle_ns,
        "gaps": len(gaps),
        "gap_ns": int(gaps["duration_ns"].sum()),
        "short_gap_ns": window - busy["kernel_ns"] - int(gaps["duration_ns"].sum()),
        "classes": classes,
        "explained_ns": explained,
        "explained_share": explained / idle_ns if idle_ns > 0 else None,
        "dominant": max(host_side, key=lambda c: (host_side[c], -CLASSES.index(c))) if explained else None,
        "iterations": iterations,
    }


def explain_idle(stage: Path, gpu: GpuTime, out: Path) -> IdleMetrics:
    """Classify every SM gap of an extract folder, write them to ``out`` (Parquet), and sum them up.

    Args:
        stage: an extract folder (GPU tables, ``cuda_api``, ``profiler_overhead``, ``collectives``).
        gpu: the busy sweep of that folder (:func:`llmprof.analysis.busy.gpu_time`), its SM gaps.
        out: the ``idle_gaps`` Parquet file to write (one row per gap, ``IDLE_GAPS`` schema).
    """
    gaps, iterations = _gap_frame(gpu.sm_gaps), gpu.iterations
    per_iteration: dict[int, np.ndarray] = {}
    if len(gaps):
        gaps, per_iteration = _classified(stage, _with_threads(stage, gaps), iterations)
    else:
        gaps = gaps.assign(pid=None, tid=None, next_operation=None, next_call=None, **{f"{c}_ns": 0 for c in CLASSES})
    starts = gaps["start_ns"].to_numpy("int64")
    found = iterations.locate(starts)
    gaps = gaps.assign(
        duration_ns=gaps["end_ns"] - gaps["start_ns"],
        iteration=pd.Series(found, index=gaps.index, dtype="Int64").mask(found < 0),
        cause=_cause(gaps) if len(gaps) else pd.Series([], dtype=object),
    )
    write_table(out, pa.Table.from_pandas(gaps[IDLE_GAPS.names], schema=IDLE_GAPS, preserve_index=False))
    devices = [
        _device_idle(d["device_id"], gaps[gaps["device_id"] == d["device_id"]], per_iteration.get(d["device_id"]), gpu)
        for d in gpu.busy["devices"]
    ]
    largest = gaps.sort_values(["duration_ns", "device_id", "start_ns"], ascending=[False, True, True]).head(TOP_GAPS)
    return {
        "gap_min_ns": IDLE_GAP_MIN_NS,
        "classes": list(CLASSES),
        "devices": devices,
        "largest": [_gap_record(row) for row in largest.to_dict("records")],
    }
