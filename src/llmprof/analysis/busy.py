"""What kept each GPU busy: kernels (the SMs), each copy direction (the copy engines), memsets, and their union.

A GPU "busy" because its copy engines move weights is not computing. One sweep per device
measures, in the capture window and in each iteration window, the time during which at least
one operation of each kind ran, and collects the stretches with no kernel running (the SMs'
idle gaps, with the copy time inside them) for :mod:`llmprof.analysis.idle` to explain.

Memory stays bounded as in every sweep of the package: one pass counts operation starts and
ends per time bin, one files them by time window, and windows are then read, sorted and swept
in time order, with each kind's depth carried from window to window.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from llmprof.analysis.grouped import bin_ranges, bin_shift, int_column, write_partitions
from llmprof.common.errors import InputError
from llmprof.common.records import (
    BusyMetrics,
    BusyTime,
    CaptureWindow,
    DeviceActivity,
    DeviceBusy,
    GpuActivity,
    IterationBusy,
)

GPU_TABLES = ("kernels", "memcpy", "memset")
#: Copy directions told apart (the ``direction`` column of the memcpy table); any other goes to ``other``.
DIRECTIONS = ("H2D", "D2H", "D2D", "P2P", "H2H", "other")
#: Kinds of GPU operation swept: kernels, one per copy direction, memsets; then iteration bounds (no depth).
KERNEL, MEMSET, BOUND = 0, 1 + len(DIRECTIONS), 2 + len(DIRECTIONS)
COPIES = range(1, 1 + len(DIRECTIONS))
KIND_BITS = 4
CODE_BITS = 1 + KIND_BITS  # the low bits of an event: kind, then the end flag
SWEEP_BUDGET = 1 << 20  # events sorted at once (8 MiB); more are taken a time window at a time
READ_ROWS = 1 << 18
TOP_GAPS = 5
#: SM gaps (no kernel running on a device) shorter than this are counted but not listed or explained.
IDLE_GAP_MIN_NS = 10_000


class Iterations(NamedTuple):
    """Iteration windows: start and end (ns) of each, sorted by start, not overlapping."""

    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def none(cls) -> Iterations:
        return cls(np.zeros(0, dtype="int64"), np.zeros(0, dtype="int64"))

    def locate(self, times: np.ndarray) -> np.ndarray:
        """The iteration holding each time (-1 outside every window)."""
        at = np.searchsorted(self.starts, times, side="right") - 1
        inside = (at >= 0) & (times < self.ends[np.maximum(at, 0)]) if len(self.starts) else at >= 0
        return np.where(inside, at, -1)


def iteration_windows(stage: Path) -> tuple[Iterations, str | None]:
    """The capture's per-iteration NVTX ranges (``iteration 0``, ``iteration 1``, ...), and where they came from.

    Captures without such ranges give no windows; another detection can hand its own
    :class:`Iterations` to :func:`gpu_time` instead.
    """
    table = pq.read_table(stage / "nvtx.parquet", columns=["name", "start_ns", "end_ns"]).to_pandas()
    named = table["name"].astype(str).str.fullmatch(r"[^:]*:iteration \d+")
    mine = table[named.fillna(False).astype(bool)].sort_values(["start_ns", "end_ns"], kind="stable")
    if mine.empty:
        return Iterations.none(), None
    return Iterations(mine["start_ns"].to_numpy("int64"), mine["end_ns"].to_numpy("int64")), "nvtx_iteration_ranges"


def _copy_kinds(directions: np.ndarray | None, rows: int) -> np.ndarray:
    """The sweep kind of each copy, from its direction label (``other`` where unknown or absent)."""
    other = 1 + DIRECTIONS.index("other")
    if directions is None:
        return np.full(rows, other)
    inverse, uniques = pd.factorize(directions, use_na_sentinel=False)
    codes = np.array([1 + DIRECTIONS.index(u) if u in DIRECTIONS else other for u in uniques], dtype="int64")
    return codes[inverse] if len(codes) else np.full(rows, other)


def _batches(stage: Path) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(device, kind, start, end) of every GPU operation, a Parquet batch at a time."""
    for table in GPU_TABLES:
        parquet = pq.ParquetFile(stage / f"{table}.parquet")
        columns = ["device_id", "start_ns", "end_ns"]
        with_direction = table == "memcpy" and "direction" in parquet.schema_arrow.names
        for batch in parquet.iter_batches(columns=columns + ["direction"] * with_direction, batch_size=READ_ROWS):
            device, start, end = (int_column(batch.column(c)) for c in columns)
            if table == "memcpy":
                names = batch.column("direction").to_numpy(zero_copy_only=False) if with_direction else None
                kind = _copy_kinds(names, len(start))
            else:
                kind = np.full(len(start), KERNEL if table == "kernels" else MEMSET)
            yield device, kind, start, np.maximum(end, start)


class _Runs:
    """Runs of consecutive idle stretches, merged across windows as they come: (start, end, copy time inside).

    The run still open at the end of a window waits for the next one. Runs shorter than ``min_ns``
    or starting before ``keep_from`` are dropped; with ``top``, only the longest ``top`` are kept.
    """

    def __init__(self, min_ns: int, top: int | None = None) -> None:
        self.min_ns, self.top = min_ns, top
        self.keep_from = np.iinfo("int64").min
        self.open: tuple[int, int, int] | None = None
        self.chunks: list[np.ndarray] = []

    def add(self, begin: np.ndarray, finish: np.ndarray, idle: np.ndarray, copying: np.ndarray) -> None:
        if not len(idle):
            return
        was_open = self.open is not None
        prev = np.concatenate(([was_open], idle[:-1]))
        label = np.cumsum(idle & ~prev) - (0 if was_open else 1)  # the open run is label 0
        rows = np.flatnonzero(idle)
        runs = max(int(label[rows].max()) + 1 if len(rows) else 0, 1 if was_open else 0)
        start = np.full(runs, np.iinfo("int64").max)
        np.minimum.at(start, label[rows], begin[rows])
        end = np.full(runs, np.iinfo("int64").min)
        np.maximum.at(end, label[rows], finish[rows])
        inside = ((finish - begin) * copying)[rows]
        copy = np.bincount(label[rows], weights=inside, minlength=runs).astype("int64")
        if self.open is not None:
            start[0], end[0], copy[0] = self.open[0], max(int(end[0]), self.open[1]), copy[0] + self.open[2]
        last_open = bool(idle[-1])
        closed = runs - 1 if last_open else runs
        self._emit(start[:closed], end[:closed], copy[:closed])
        self.open = (int(start[-1]), int(end[-1]), int(copy[-1])) if last_open else None

    def close(self, keep_open: bool = True) -> None:
        """End the sweep: the open run is kept (a stretch up to the window's end) or dropped."""
        if self.open is not None and keep_open:
            self._emit(*(np.array([v], dtype="int64") for v in self.open))
        self.open = None

    def _emit(self, start: np.ndarray, end: np.ndarray, copy: np.ndarray) -> None:
        duration = end - start
        keep = (duration >= self.min_ns) & (start >= self.keep_from)
        if not keep.any():
            return
        found = np.stack([start[keep], end[keep], copy[keep]])
        if self.top is not None:
            found = np.concatenate([*self.chunks, found], axis=1)
            order = np.lexsort((found[0], found[0] - found[1]))[: self.top]  # longest first, then earliest
            self.chunks = [found[:, order]]
        else:
            self.chunks.append(found)

    @property
    def found(self) -> np.ndarray:
        """Every run kept so far: rows start, end, copy time (3 x n)."""
        return np.concatenate(self.chunks, axis=1) if self.chunks else np.zeros((3, 0), dtype="int64")


class DeviceSweep:
    """One device's sweep: time each kind ran (in all and per iteration), its SM gaps and its largest idle gaps."""

    #: Rows of ``measured`` after the kinds: any copy, and the union of every operation.
    ANY_COPY, UNION = BOUND, BOUND + 1

    def __init__(self, window: CaptureWindow, iterations: Iterations) -> None:
        self.iterations = iterations
        self.carry = np.zeros(BOUND, dtype="int64")
        self.measured = np.zeros((BOUND + 2, len(iterations.starts) + 1), dtype="int64")  # last column: all
        self.last = int(window["start_ns"])
        self.end = int(window["end_ns"])
        self.sm_gaps = _Runs(IDLE_GAP_MIN_NS)  # no kernel running, copy time inside: what the idle analysis explains
        self.idle_gaps = _Runs(1, top=TOP_GAPS)  # nothing running, between the first and last operation
        self.operations = 0

    def add(self, events: np.ndarray, low: int) -> None:
        """The sorted events of the next time window."""
        if not len(events):
            return
        times = (events >> CODE_BITS) + low
        kind, ending = (events >> 1) & ((1 << KIND_BITS) - 1), events & 1
        real = kind != BOUND
        if not self.operations and real.any():
            self.idle_gaps.keep_from = int(times[np.argmax(real)])  # the lead-in before the first operation
        self.operations += int((real & (ending == 0)).sum())
        delta = np.where(real, np.where(ending == 1, -1, 1), 0)
        begin = np.concatenate(([self.last], times[:-1]))  # the stretch before each event
        active = np.zeros((BOUND, len(times)), dtype=bool)
        for k in range(BOUND):
            depth = np.cumsum(np.where(kind == k, delta, 0)) + self.carry[k]
            active[k] = np.concatenate(([self.carry[k]], depth[:-1])) > 0
            self.carry[k] = depth[-1]
        copying = np.asarray(active[1:].any(axis=0), dtype=bool)
        union = copying | active[KERNEL]
        self._measure(begin, times - begin, [*active, np.asarray(active[1:MEMSET].any(axis=0), dtype=bool), union])
        self.sm_gaps.add(begin, times, ~active[KERNEL], copying)
        self.idle_gaps.add(begin, times, ~union, np.zeros(len(times), dtype=bool))
        self.last = int(times[-1])

    def _measure(self, begin: np.ndarray, lengths: np.ndarray, sets: list[np.ndarray]) -> None:
        iteration = self.iterations.locate(begin)
        for k, member in enumerate(sets):
            self.measured[k, -1] += int(lengths[member].sum())
            inside = member & (iteration >= 0)
            np.add.at(self.measured[k], iteration[inside], lengths[inside])

    def finish(self) -> None:
        """Close the sweep at the capture window's end: a trailing stretch with nothing running."""
        if self.end > self.last:
            tail = np.array([self.last]), np.array([self.end]), np.array([True]), np.array([False])
            self.sm_gaps.add(*tail)
        self.sm_gaps.close()
        self.idle_gaps.close(keep_open=False)  # after the last operation: not between operations


def _busy_time(measured: np.ndarray, column: int) -> BusyTime:
    return {
        "kernel_ns": int(measured[KERNEL, column]),
        "copy_ns": int(measured[DeviceSweep.ANY_COPY, column]),
        "memset_ns": int(measured[MEMSET, column]),
        "union_ns": int(measured[DeviceSweep.UNION, column]),
        "copy_directions_ns": {d: int(measured[1 + i, column]) for i, d in enumerate(DIRECTIONS)},
    }


def device_busy(
    device: int, sweep: DeviceSweep, window_ns: int, copied: tuple[dict[str, int], int] | None
) -> DeviceBusy:
    """The busy split of one swept device, fractions of the capture window; ``copied``: see :func:`_copy_bytes`."""
    total = _busy_time(sweep.measured, -1)
    span = max(window_ns, 1)
    iterations: list[IterationBusy] = [
        {
            **_busy_time(sweep.measured, i),
            "index": i,
            "start_ns": int(start),
            "end_ns": int(end),
        }
        for i, (start, end) in enumerate(zip(sweep.iterations.starts.tolist(), sweep.iterations.ends.tolist()))
    ]
    return {
        **total,
        "device_id": device,
        "kernel_fraction": total["kernel_ns"] / span,
        "copy_fraction": total["copy_ns"] / span,
        "union_fraction": total["union_ns"] / span,
        "copy_only_ns": total["union_ns"] - total["kernel_ns"],
        "copy_bytes": copied[0] if copied is not None else {d: 0 for d in DIRECTIONS},
        "pageable_host_bytes": copied[1] if copied is not None else 0,
        "iterations": iterations,
    }


def distinct(values: np.ndarray) -> list[int]:
    """The distinct values of an integer column, in order; fast for the usual one (a single device)."""
    if not len(values):
        return []
    if values.min() == values.max():
        return [int(values[0])]
    return [int(v) for v in np.unique(values)]


def _histograms(stage: Path, low: int, shift: int, bins: int) -> dict[int, np.ndarray]:
    """Per device: how many operation starts and ends fall in each time bin (2**shift ns from ``low``)."""
    found: dict[int, np.ndarray] = {}
    for device, _, start, end in _batches(stage):
        for value in distinct(device):
            mine = device == value
            counts = found.setdefault(value, np.zeros(bins, dtype="int64"))
            counts += np.bincount((start[mine] - low) >> shift, minlength=bins)
            counts += np.bincount((end[mine] - low) >> shift, minlength=bins)
    return found


def _file_events(stage: Path, low: int, windows: dict[int, np.ndarray], paths: dict[int, list[Path]]) -> None:
    """Write every start and end, packed as :class:`DeviceSweep` reads them, to its device's file of its window."""
    handles = {device: [path.open("wb") for path in listed] for device, listed in paths.items()}
    try:
        for device, kind, start, end in _batches(stage):
            for value in distinct(device):
                mine = device == value
                for times, end_flag in ((start[mine], 0), (end[mine], 1)):
                    events = ((times - low) << CODE_BITS) | (kind[mine] << 1) | end_flag
                    write_partitions(events, np.searchsorted(windows[value], times, side="right") - 1, handles[value])
    finally:
        for listed in handles.values():
            for handle in listed:
                handle.close()


def _bounds(iterations: Iterations, low: int, window_starts: np.ndarray, index: int) -> np.ndarray:
    """The iteration bounds that fall in one time window, packed as events that change no depth."""
    times = np.unique(np.concatenate([iterations.starts, iterations.ends]))
    times = times[times >= low]
    mine = (np.searchsorted(window_starts, times, side="right") - 1) == index
    return np.asarray(((times[mine] - low) << CODE_BITS) | (BOUND << 1), dtype="int64")


def sweep_devices(stage: Path, window: CaptureWindow, iterations: Iterations) -> dict[int, DeviceSweep]:
    """Every device of an extract folder swept over the capture window (see the module docstring)."""
    low, high = int(window["start_ns"]), int(window["end_ns"])
    if high - low >= 1 << (62 - CODE_BITS):
        raise InputError(f"{stage}: the capture window spans {high - low} ns, too long to sweep")
    shift = bin_shift(low, high)
    histograms = _histograms(stage, low, shift, ((high - low) >> shift) + 1)
    windows = {
        device: np.array([low + (first << shift) for first, _ in bin_ranges(counts, SWEEP_BUDGET)], dtype="int64")
        for device, counts in histograms.items()
    }
    found: dict[int, DeviceSweep] = {}
    with tempfile.TemporaryDirectory(prefix=".busy-", dir=stage) as scratch:
        paths = {d: [Path(scratch) / f"events-{d}-{i}" for i in range(len(w))] for d, w in windows.items()}
        _file_events(stage, low, windows, paths)
        for device in sorted(paths):
            sweep = DeviceSweep(window, iterations)
            for i, path in enumerate(paths[device]):
                bounds = _bounds(iterations, low, windows[device], i)
                events = np.concatenate([np.fromfile(path, dtype="int64"), bounds])
                events.sort()
                sweep.add(events, low)
                path.unlink()
            sweep.finish()
            found[device] = sweep
    return found


def _copy_bytes(stage: Path) -> dict[int, tuple[dict[str, int], int]]:
    """Per device: bytes copied per direction, and the host-to-device or device-to-host bytes of pageable memory."""
    parquet = pq.ParquetFile(stage / "memcpy.parquet")
    columns = ["device_id", "direction", "src_kind", "dst_kind", "size_bytes"]
    found: dict[int, tuple[dict[str, int], int]] = {}
    if not all(c in parquet.schema_arrow.names for c in columns):
        return found
    for batch in parquet.iter_batches(columns=columns, batch_size=READ_ROWS):
        frame = batch.to_pandas().fillna({"device_id": -1, "size_bytes": 0})
        pageable = (frame["src_kind"] == "Pageable") | (frame["dst_kind"] == "Pageable")
        host = frame["direction"].isin(["H2D", "D2H"]) & pageable
        frame = frame.assign(pageable=np.where(host, frame["size_bytes"], 0))
        for (device, direction), part in frame.groupby(["device_id", "direction"], dropna=False):
            per_direction, pageable_bytes = found.setdefault(int(device), ({d: 0 for d in DIRECTIONS}, 0))
            name = direction if direction in DIRECTIONS else "other"
            per_direction[name] += int(part["size_bytes"].sum())
            found[int(device)] = (per_direction, pageable_bytes + int(part["pageable"].sum()))
    return found


def _activity(device: int, sweep: DeviceSweep, span: int) -> DeviceActivity:
    busy = int(sweep.measured[DeviceSweep.UNION, -1])
    starts, ends, _ = sweep.idle_gaps.found
    return {
        "device_id": device,
        "operations": sweep.operations,
        "busy_ns": busy,
        "busy_fraction": busy / span,
        "idle_fraction": 1 - busy / span,
        "largest_gaps": [{"start_ns": int(s), "duration_ns": int(e - s)} for s, e in zip(starts, ends)],
    }


class GpuTime(NamedTuple):
    """The sweep's results: GPU activity (union busy time), the busy split, and each device's SM gaps."""

    activity: GpuActivity
    busy: BusyMetrics
    sm_gaps: dict[int, np.ndarray]  # device → 3 x n: start, end, copy-or-memset time inside (ns)
    iterations: Iterations  # the iteration windows swept


def gpu_time(stage: Path, window: CaptureWindow, iterations: Iterations | None = None) -> GpuTime:
    """Per device: busy time by kind and in union, per iteration, and the gaps with no kernel running.

    Args:
        stage: an extract folder (its ``kernels``, ``memcpy``, ``memset`` and ``nvtx`` tables).
        window: the capture window the fractions divide.
        iterations: iteration windows; by default the capture's per-iteration NVTX ranges.
    """
    source: str | None = "given"
    if iterations is None:
        iterations, source = iteration_windows(stage)
    sweeps = sweep_devices(stage, window, iterations) if time_spanned(window) else {}
    span = max(int(window["duration_ns"]), 1)
    copied = _copy_bytes(stage)
    devices = [_activity(device, sweep, span) for device, sweep in sorted(sweeps.items())]
    busy = sum(d["busy_ns"] for d in devices)
    fraction = busy / (span * len(devices)) if devices else 0.0
    activity: GpuActivity = {
        "captured": bool(devices),
        "devices": devices,
        "busy_ns": busy,
        "busy_fraction": fraction,
        "idle_fraction": 1 - fraction if devices else None,
    }
    split: BusyMetrics = {
        "window_ns": int(window["duration_ns"]),
        "iterations_source": source if len(iterations.starts) else None,
        "idle_gap_min_ns": IDLE_GAP_MIN_NS,
        "devices": [device_busy(device, sweep, span, copied.get(device)) for device, sweep in sorted(sweeps.items())],
    }
    gaps = {device: sweep.sm_gaps.found for device, sweep in sorted(sweeps.items())}
    return GpuTime(activity, split, gaps, iterations)


def time_spanned(window: CaptureWindow) -> bool:
    return int(window["end_ns"]) >= int(window["start_ns"]) and window["basis"] != "none"
