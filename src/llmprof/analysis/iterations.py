"""Per-iteration numbers: what each step ran on the GPU, what the host spent launching it, and which side bounds it.

For every step window (:mod:`llmprof.analysis.steps`), the kernels that started in it
are counted and timed, apart by whether a CUDA graph launched them (``graph_node_id``
set) or a launch call of their own. Each kernel is joined to the CUDA call that
launched it (same process, same correlation id; a graph's kernels share their
``cudaGraphLaunch``), so the host side of a step is the time in those launch calls
plus the time between them on the launching thread, from the step's first launch to
its last. The step's critical path is the largest of host (launch calls and time
between them), GPU (compute kernels), communication (collective kernels) and copy
(copies and memsets), with the margin to the runner-up. Copies count apart: a step
whose copy engines are busy throughout is copy-bound, and its launch calls, blocked
by the full launch queue, look as long as the copies.

Kernels stream in batches; the launch calls are held as arrays (about 50 bytes per
launch call), the only memory that grows with the capture (500 MiB at 10 M kernels and
3.3 M calls, below extraction's own peak).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmprof.analysis.grouped import int_column
from llmprof.analysis.steps import (
    READ_ROWS,
    StepWindows,
    kernel_batches,
    launch_key,
    marked_iterations,
    step_windows,
    waits_on_gpu,
    window_of,
)
from llmprof.common.outputs import write_table
from llmprof.common.records import LaunchCost, StepDevice, StepMetrics, StepSpread

#: Fewer steady steps than this make per-iteration numbers anecdotal.
MIN_STEADY_STEPS = 3
#: Non-graph kernels listed by host time.
TOP_LAUNCHES = 10
LAUNCH_KINDS = ("launch", "graph")
#: The sides a step's critical path can be on: the host issuing it, compute kernels, collective kernels, copies.
PATHS = ("host", "gpu", "communication", "copy")

STEPS = pa.schema(
    [
        pa.field("device_id", pa.int32(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),  # position among the device's steps
        pa.field("start_ns", pa.int64(), nullable=False),
        pa.field("end_ns", pa.int64(), nullable=False),  # end of the step's last GPU work
        pa.field("interval_ns", pa.int64()),  # to the next step's start: the step's latency; null for the last
        pa.field("method", pa.string(), nullable=False),  # vllm_step_ranges or kernel_sequence
        pa.field("phase", pa.string()),  # prefill, decode, mixed (from vLLM's ranges)
        pa.field("iteration", pa.int64()),  # the workload's ``iteration k`` range holding the step
        pa.field("steady", pa.bool_(), nullable=False),  # the most common kernel count, latency known, not the
        # last of a marked iteration
        pa.field("kernels", pa.int64(), nullable=False),
        pa.field("graph_kernels", pa.int64(), nullable=False),  # launched from a CUDA graph
        pa.field("kernel_ns", pa.int64(), nullable=False),  # summed kernel durations
        pa.field("graph_kernel_ns", pa.int64(), nullable=False),
        pa.field("communication_ns", pa.int64(), nullable=False),  # summed collective kernel durations
        pa.field("copy_ns", pa.int64(), nullable=False),  # summed durations of copies and memsets
        pa.field("matched_kernels", pa.int64(), nullable=False),  # kernels joined to the call that launched them
        pa.field("launch_calls", pa.int64(), nullable=False),  # distinct calls that launched the step's kernels
        pa.field("graph_launches", pa.int64(), nullable=False),
        pa.field("host_launch_ns", pa.int64(), nullable=False),  # time inside those calls
        pa.field("host_between_ns", pa.int64(), nullable=False),  # time between them on the launching thread,
        # less the time it waited on the GPU there (synchronizations, synchronous copies)
        pa.field("nongraph_host_ns", pa.int64(), nullable=False),  # both, for the kernels launched one by one
        pa.field("critical_path", pa.string(), nullable=False),  # host, gpu, communication; unknown: a kernel
        # without its launch call, so the host side is not known
        pa.field("critical_margin", pa.float64()),  # (first - runner-up) / first; null when unknown
    ]
)

_COUNTS = ("kernels", "graph_kernels", "kernel_ns", "graph_kernel_ns", "communication_ns", "matched_kernels")


def no_step_reasons(steps: StepMetrics) -> str:
    """Why no step was found, per GPU that says why ("" when none does)."""
    return "; ".join(f"GPU {d['device_id']}: {d['reason']}" for d in steps["devices"] if d["reason"])


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """Arrays read batch by batch, end to end (an empty int64 array when no batch held rows)."""
    return np.concatenate(parts) if parts else np.zeros(0, dtype="int64")


@dataclass
class Waits:
    """Calls in which a launching thread waits on the GPU (synchronizations, synchronous copies), per thread."""

    threads: np.ndarray  # (pid << 32 | tid) of each launching-thread code
    thread: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def blocked(self, codes: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Time each thread (by launching-thread code) spent in waiting calls lying inside ``[low, high]``."""
        out = np.zeros(len(codes), dtype="int64")
        for code, thread in enumerate(self.threads.tolist()):
            mine = np.flatnonzero(codes == code)
            calls = np.flatnonzero(self.thread == thread)
            if not len(mine) or not len(calls):
                continue
            calls = calls[np.argsort(self.start[calls], kind="stable")]
            start, end = self.start[calls], self.end[calls]
            total = np.concatenate([[0], np.cumsum(end - start)])
            first = np.searchsorted(start, low[mine], side="left")
            last = np.searchsorted(end, high[mine], side="right")
            out[mine] = np.where(last > first, total[np.maximum(last, first)] - total[first], 0)
        return out


@dataclass
class LaunchCalls:
    """The launch calls (kernel launches and graph launches) of a capture, sorted by (process, correlation id).

    ``step`` and ``name`` are filled as kernels are matched: the step of the call's kernels,
    and the kernel name code of a call that launched one kernel outside a graph (-1 otherwise).
    """

    key: np.ndarray
    start: np.ndarray
    end: np.ndarray
    thread: np.ndarray  # int32 code of (pid, tid)
    graph: np.ndarray  # a cudaGraphLaunch
    step: np.ndarray
    name: np.ndarray
    kernel_ns: np.ndarray  # duration of the one kernel a non-graph launch started
    waits: Waits | None = None

    @classmethod
    def read(cls, stage: Path) -> LaunchCalls:
        launches: list[tuple[np.ndarray, ...]] = []
        waits: list[tuple[np.ndarray, ...]] = []
        parquet = pq.ParquetFile(stage / "cuda_api.parquet")
        columns = ["pid", "tid", "start_ns", "end_ns", "correlation_id", "kind", "name"]
        for batch in parquet.iter_batches(columns=columns, batch_size=READ_ROWS):
            kind = batch.column("kind").to_numpy(zero_copy_only=False)
            name = batch.column("name").to_numpy(zero_copy_only=False)
            pid, tid = int_column(batch.column("pid")), int_column(batch.column("tid"))
            thread, start, end = (
                (pid << 32) | (tid & 0xFFFFFFFF),
                int_column(batch.column("start_ns")),
                int_column(batch.column("end_ns")),
            )
            keep = np.flatnonzero(np.isin(kind, LAUNCH_KINDS))
            launches.append(
                (
                    launch_key(pid[keep], int_column(batch.column("correlation_id"))[keep]),
                    start[keep],
                    end[keep],
                    thread[keep],
                    (kind[keep] == "graph").astype("int64"),
                )
            )
            blocked = np.flatnonzero(waits_on_gpu(kind, name))
            waits.append((thread[blocked], start[blocked], end[blocked]))
        key, start, end, thread, graph = (_joined([p[i] for p in launches]) for i in range(5))
        order = np.argsort(key, kind="stable")
        threads, codes = np.unique(thread, return_inverse=True)
        size = len(key)
        calls = cls(
            key[order],
            start[order],
            end[order],
            codes.astype("int32")[order],
            graph[order].astype(bool),
            np.full(size, -1, "int32"),
            np.full(size, -1, "int32"),
            np.zeros(size, "int64"),
        )
        calls.waits = Waits(threads, *(_joined([w[i] for w in waits]) for i in range(3)))
        return calls

    def find(self, pid: np.ndarray, correlation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the calls with these keys, and whether each was found."""
        keys = launch_key(pid, correlation)
        position = np.minimum(np.searchsorted(self.key, keys), max(len(self.key) - 1, 0))
        found = (self.key[position] == keys) if len(self.key) else np.zeros(len(keys), dtype=bool)
        return position, found & (correlation >= 0)

    def between(self) -> np.ndarray:
        """Per call: host time since the previous launch call of the same step on the same thread ended (else 0)."""
        order = np.lexsort((self.start, self.step, self.thread))
        start, end, step, thread = self.start[order], self.end[order], self.step[order], self.thread[order]
        same = np.concatenate([[False], (thread[1:] == thread[:-1]) & (step[1:] == step[:-1])])
        gap = np.zeros(len(order), dtype="int64")
        gap[1:] = np.where(same[1:], np.maximum(start[1:] - end[:-1], 0), 0)  # a thread's calls never overlap
        if self.waits is not None:
            previous_end = np.concatenate([[0], end[:-1]])
            gap -= np.where(same, self.waits.blocked(thread, previous_end, start), 0)
        out = np.zeros(len(order), dtype="int64")
        out[order] = gap
        return out


class StepTotals:
    """Per-step sums of the kernels that started in each step window, all devices in one flat array."""

    def __init__(self, windows: StepWindows) -> None:
        self.devices = sorted(windows.devices)
        sizes = [len(windows.devices[d].start_ns) for d in self.devices]
        self.offset = dict(zip(self.devices, np.cumsum([0, *sizes[:-1]]).tolist()))
        self.windows = windows
        self.sums = {name: np.zeros(sum(sizes), dtype="int64") for name in _COUNTS}
        self.names: dict[str, int] = {}

    def step_ids(self, device: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Global step id of each kernel (-1: outside every step window)."""
        out = np.full(len(start), -1, dtype="int64")
        for value in self.devices:
            window = self.windows.devices[value]
            mine = np.flatnonzero(device == value)
            step = window_of(window.start_ns, window.end_ns, start[mine])
            inside = step >= 0
            out[mine[inside]] = step[inside] + self.offset[value]
        return out

    def name_codes(self, names: pa.Array) -> np.ndarray:
        """A code per kernel short name, the same across batches (from the batch's dictionary, once per name)."""
        encoded = names if pa.types.is_dictionary(names.type) else pc.dictionary_encode(names)
        mapped = np.array(
            [self.names.setdefault(str(v), len(self.names)) for v in encoded.dictionary.to_pylist()]
            + [self.names.setdefault("None", len(self.names))],
            dtype="int32",
        )
        codes: np.ndarray = mapped[int_column(encoded.indices, len(mapped) - 1)]
        return codes


def _is_communication(categories: pa.Array) -> np.ndarray:
    """Whether each kernel's category is communication (dictionary-encoded column: one comparison per value)."""
    encoded = categories if pa.types.is_dictionary(categories.type) else pc.dictionary_encode(categories)
    chosen = np.flatnonzero(np.asarray(encoded.dictionary.to_pylist(), dtype=object) == "communication")
    return np.isin(int_column(encoded.indices), chosen)


def _add_batch(totals: StepTotals, calls: LaunchCalls, batch: pa.RecordBatch) -> None:
    step = totals.step_ids(int_column(batch.column("device_id")), int_column(batch.column("start_ns")))
    inside = np.flatnonzero(step >= 0)
    if not len(inside):
        return
    step = step[inside]
    size = len(totals.sums["kernels"])
    graph = batch.column("graph_node_id").is_valid().to_numpy(zero_copy_only=False)[inside]
    duration = int_column(batch.column("duration_ns"))[inside]
    communication = _is_communication(batch.column("category"))[inside]
    for name, weights, mask in (
        ("kernels", None, None),
        ("graph_kernels", None, graph),
        ("kernel_ns", duration, None),
        ("graph_kernel_ns", duration, graph),
        ("communication_ns", duration, communication),
    ):
        chosen = step if mask is None else step[mask]
        values = None if weights is None else (weights if mask is None else weights[mask])
        totals.sums[name] += np.bincount(chosen, weights=values, minlength=size).astype("int64")
    codes = totals.name_codes(batch.column("short_name"))[inside]
    pid, correlation = int_column(batch.column("pid"))[inside], int_column(batch.column("correlation_id"))[inside]
    position, found = calls.find(pid, correlation)
    calls.step[position[found]] = step[found]
    totals.sums["matched_kernels"] += np.bincount(step[found], minlength=size)
    single = found & ~graph
    calls.name[position[single]] = codes[single]
    calls.kernel_ns[position[single]] = duration[single]


def _call_sums(size: int, calls: LaunchCalls, between: np.ndarray) -> dict[str, np.ndarray]:
    """Per step: launch calls, graph launches, and host time in and between them."""
    mine = np.flatnonzero(calls.step >= 0)
    step, graph, single = calls.step[mine], calls.graph[mine], calls.name[mine] >= 0
    inside, between = (calls.end - calls.start)[mine], between[mine]

    def per_step(weights: np.ndarray | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        chosen = step if mask is None else step[mask]
        values = None if weights is None else (weights if mask is None else weights[mask])
        return np.bincount(chosen, weights=values, minlength=size).astype("int64")

    return {
        "launch_calls": per_step(),
        "graph_launches": per_step(mask=graph),
        "host_launch_ns": per_step(inside),
        "host_between_ns": per_step(between),
        "nongraph_host_ns": per_step(inside + between, single),
    }


def launch_costs(calls: LaunchCalls, between: np.ndarray, counted: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """Per kernel name launched outside CUDA graphs in the ``counted`` steps: launches, host time in and before
    the launch call, and GPU time, sorted by host time (most first)."""
    mine = np.flatnonzero((calls.step >= 0) & (calls.name >= 0))
    mine = mine[counted[calls.step[mine]]]
    frame = (
        pd.DataFrame(
            {
                "name": np.asarray(names, dtype=object)[calls.name[mine]] if len(names) else np.zeros(0, dtype=object),
                "launches": np.ones(len(mine), dtype="int64"),
                "host_launch_ns": calls.end[mine] - calls.start[mine],
                "host_between_ns": between[mine],
                "kernel_ns": calls.kernel_ns[mine],
            }
        )
        .groupby("name", sort=True)
        .sum()
        .reset_index()
    )
    frame["host_ns"] = frame["host_launch_ns"] + frame["host_between_ns"]
    return frame.sort_values(["host_ns", "name"], ascending=[False, True], kind="stable").reset_index(drop=True)


def critical_paths(*sides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per step: which side (in ``PATHS`` order) takes longest, and its margin to the runner-up (share of it)."""
    stacked = np.stack(sides).astype("float64")
    order = np.argsort(-stacked, axis=0, kind="stable")
    first = np.take_along_axis(stacked, order[:1], axis=0)[0]
    second = np.take_along_axis(stacked, order[1:2], axis=0)[0]
    margin = np.where(first > 0, (first - second) / np.where(first > 0, first, 1), 0.0)
    return np.array(PATHS, dtype=object)[order[0]], margin


def _iteration_of(marked: pd.DataFrame, start: np.ndarray) -> np.ndarray:
    """The workload's ``iteration k`` (of ``marked``) holding each step start (-1: none)."""
    if marked.empty:
        return np.full(len(start), -1, dtype="int64")
    index = window_of(marked["start_ns"].to_numpy(), marked["end_ns"].to_numpy(), start)
    return np.where(index >= 0, marked["iteration"].to_numpy()[np.maximum(index, 0)], -1)


def _windows_frame(windows: StepWindows) -> pd.DataFrame:
    parts = []
    for device in sorted(windows.devices):
        window = windows.devices[device]
        interval = np.diff(window.start_ns).astype("float64")
        parts.append(
            pd.DataFrame(
                {
                    "device_id": device,
                    "step": np.arange(len(window.start_ns)),
                    "start_ns": window.start_ns,
                    "end_ns": window.end_ns,
                    "interval_ns": np.concatenate([interval, [np.nan]]),
                    "method": window.method,
                    "phase": window.phase or [None] * len(window.start_ns),
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["device_id", "step"])


def steady_steps(kernels: np.ndarray, interval: np.ndarray, iteration: np.ndarray) -> np.ndarray:
    """Steps of their device's most common kernel count whose latency is known (the steady state).

    The last step of a marked iteration is left out: its latency runs into the pause before the next one.
    """
    if not len(kernels):
        return np.zeros(0, dtype=bool)
    last_of_iteration = (iteration >= 0) & np.concatenate([iteration[1:] != iteration[:-1], [True]])
    steady: np.ndarray = (kernels == np.bincount(kernels).argmax()) & ~np.isnan(interval) & ~last_of_iteration
    return steady


def _copy_ns(stage: Path, totals: StepTotals) -> np.ndarray:
    """Per step: summed duration of the copies and memsets that started in it."""
    copies = np.zeros(len(totals.sums["kernels"]), dtype="int64")
    for table in ("memcpy", "memset"):
        parquet = pq.ParquetFile(stage / f"{table}.parquet")
        for batch in parquet.iter_batches(columns=["device_id", "start_ns", "duration_ns"], batch_size=READ_ROWS):
            step = totals.step_ids(int_column(batch.column("device_id")), int_column(batch.column("start_ns")))
            inside = step >= 0
            weights = int_column(batch.column("duration_ns"))[inside]
            copies += np.bincount(step[inside], weights=weights, minlength=len(copies)).astype("int64")
    return copies


def _critical(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each step's critical path and margin; ``unknown`` (margin NaN) where a kernel lacks its launch call."""
    sides = {
        "host": frame["host_launch_ns"] + frame["host_between_ns"],
        "gpu": frame["kernel_ns"] - frame["communication_ns"],
        "communication": frame["communication_ns"],
        "copy": frame["copy_ns"],
    }
    path, margin = critical_paths(*(sides[name].to_numpy() for name in PATHS))
    known = frame["matched_kernels"].to_numpy() == frame["kernels"].to_numpy()  # else the host side is partial
    return np.where(known, path, "unknown"), np.where(known, margin, np.nan)


def step_frame(stage: Path, windows: StepWindows, marked: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per step (the ``STEPS`` columns), and the host cost of each kernel name launched outside graphs;
    ``marked``: the workload's iterations (:func:`llmprof.analysis.steps.marked_iterations`)."""
    totals, calls = StepTotals(windows), LaunchCalls.read(stage)
    columns = [
        "device_id",
        "start_ns",
        "duration_ns",
        "short_name",
        "category",
        "graph_node_id",
        "pid",
        "correlation_id",
    ]
    if windows.devices:
        for batch in kernel_batches(stage, columns):
            _add_batch(totals, calls, batch)
    between = calls.between()
    frame = _windows_frame(windows)
    for name, values in {**totals.sums, **_call_sums(len(frame), calls, between)}.items():
        frame[name] = values
    if frame.empty:
        return STEPS.empty_table().to_pandas(), launch_costs(calls, between, np.zeros(0, dtype=bool), [])
    frame["iteration"] = _iteration_of(marked, frame["start_ns"].to_numpy())
    frame["steady"] = np.concatenate(
        [
            steady_steps(part["kernels"].to_numpy(), part["interval_ns"].to_numpy(), part["iteration"].to_numpy())
            for _, part in frame.groupby("device_id", sort=True)
        ]
    )
    frame["copy_ns"] = _copy_ns(stage, totals) if windows.devices else np.zeros(len(frame), dtype="int64")
    frame["critical_path"], frame["critical_margin"] = _critical(frame)
    counted = (frame["steady"] & (frame["critical_path"] != "unknown")).to_numpy()
    return frame, launch_costs(calls, between, counted, list(totals.names))


def steps_table(frame: pd.DataFrame) -> pa.Table:
    """The step rows under the ``STEPS`` schema (null for a missing interval, phase or iteration)."""
    data = frame.assign(
        interval_ns=frame["interval_ns"].astype("Int64"),
        iteration=frame["iteration"].astype("Int64").where(frame["iteration"] >= 0),
    )
    return pa.Table.from_pandas(data[STEPS.names], schema=STEPS, preserve_index=False)


def latency_spread(interval: np.ndarray) -> StepSpread | None:
    """Median, 10th and 90th percentile, range and relative spread of step latencies (ns)."""
    if not len(interval):
        return None
    p10, median, p90 = (float(v) for v in np.percentile(interval, [10, 50, 90]))
    return {
        "median_ns": median,
        "p10_ns": p10,
        "p90_ns": p90,
        "min_ns": float(interval.min()),
        "max_ns": float(interval.max()),
        "spread": (p90 - p10) / median if median else 0.0,
    }


PER_STEP = (
    "kernels",
    "graph_kernels",
    "kernel_ns",
    "graph_kernel_ns",
    "communication_ns",
    "copy_ns",
    "launch_calls",
    "graph_launches",
    "host_launch_ns",
    "host_between_ns",
    "nongraph_host_ns",
)


HOST_PER_STEP = ("launch_calls", "graph_launches", "host_launch_ns", "host_between_ns", "nongraph_host_ns", "host_ns")


def _per_step(steady: pd.DataFrame, known: pd.DataFrame) -> dict[str, float]:
    """Medians over the steady steps; the host's over those whose every kernel was joined to its launch call."""
    frame = steady.assign(
        nongraph_kernels=steady["kernels"] - steady["graph_kernels"],
        nongraph_kernel_ns=steady["kernel_ns"] - steady["graph_kernel_ns"],
        host_ns=steady["host_launch_ns"] + steady["host_between_ns"],
        gpu_ns=steady["kernel_ns"] - steady["communication_ns"],
    )
    host = frame.loc[known.index]
    return {
        name: float(host[name].median()) if name in HOST_PER_STEP else float(frame[name].median())
        for name in (*PER_STEP, "nongraph_kernels", "nongraph_kernel_ns", "host_ns", "gpu_ns")
        if name not in HOST_PER_STEP or len(host)
    }


def _costs(costs: pd.DataFrame, steady_steps: int) -> list[LaunchCost]:
    out: list[LaunchCost] = []
    for row in costs.head(TOP_LAUNCHES).to_dict("records"):
        launches = float(row["launches"])
        out.append(
            {
                "name": str(row["name"]),
                "per_step": launches / steady_steps,
                "host_ns_per_step": float(row["host_ns"]) / steady_steps,
                "launch_call_ns_per_launch": float(row["host_launch_ns"]) / launches,
                "host_ns_per_launch": float(row["host_ns"]) / launches,
                "kernel_ns_per_launch": float(row["kernel_ns"]) / launches,
            }
        )
    return out


def _device_records(frame: pd.DataFrame, windows: StepWindows) -> list[StepDevice]:
    found = {d.device_id: d for d in windows.detections}
    out: list[StepDevice] = []
    for device in sorted({*windows.devices, *found}):
        window, detection = windows.devices.get(device), found.get(device)
        mine = frame[frame["device_id"] == device]
        out.append(
            {
                "device_id": device,
                "method": window.method if window is not None else "none",
                "confidence": window.confidence if window is not None else None,
                "steps": len(mine),
                "steady_steps": int(mine["steady"].sum()),
                "period_kernels": detection.period if detection is not None else None,
                "match": detection.match if detection is not None else None,
                "signature": detection.signature if detection is not None else None,
                "regularity": detection.regularity if detection is not None else None,
                "reason": detection.reason if detection is not None and window is None else None,
            }
        )
    return out


def _steps_per_iteration(frame: pd.DataFrame) -> float | None:
    """Median number of steps in a marked iteration, over devices and iterations (None without marks)."""
    marked = frame[frame["iteration"] >= 0] if len(frame) else frame
    if not len(marked):
        return None
    return float(marked.groupby(["device_id", "iteration"]).size().median())


def step_metrics(frame: pd.DataFrame, costs: pd.DataFrame, windows: StepWindows, marked: int) -> StepMetrics:
    """The ``steps`` section of metrics.json: how steps were found, their latency and what bounds them."""
    devices = _device_records(frame, windows)
    steady = frame[frame["steady"]] if len(frame) else frame
    known = steady[steady["critical_path"] != "unknown"] if len(steady) else steady
    counts = [d["steady_steps"] for d in devices if d["steps"]]
    per_step = _per_step(steady, known) if len(steady) else {}
    medians = [per_step.get(f"{path}_ns", 0.0) for path in PATHS] if len(known) else []
    ranked = sorted(zip(medians, PATHS), key=lambda m: -m[0])
    confidences = sorted({d["confidence"] for d in devices if d["confidence"] is not None})
    return {
        "method": windows.method,
        "confidence": "medium" if "medium" in confidences else (confidences[0] if confidences else None),
        "devices": devices,
        "steps": len(frame),
        "steady_steps": min(counts) if counts else 0,
        "marked_iterations": marked,
        "steps_per_iteration": _steps_per_iteration(frame),
        "latency": latency_spread(steady["interval_ns"].to_numpy("float64")) if len(steady) else None,
        "per_step": per_step,
        "critical_path": ranked[0][1] if ranked and ranked[0][0] > 0 else None,
        "critical_margin": (ranked[0][0] - ranked[1][0]) / ranked[0][0] if ranked and ranked[0][0] > 0 else None,
        "host_known_steps": len(known),
        "host_critical_share": float((known["critical_path"] == "host").mean()) if len(known) else None,
        "nongraph_launches": _costs(costs, len(known)) if len(known) else [],
    }


def write_steps(stage: Path) -> tuple[int, StepMetrics]:
    """``steps.parquet`` (one row per step of every device) and the ``steps`` section of metrics.json."""
    windows, marked = step_windows(stage), marked_iterations(stage)
    frame, costs = step_frame(stage, windows, marked)
    write_table(stage / "steps.parquet", steps_table(frame))
    return len(frame), step_metrics(frame, costs, windows, len(marked))
