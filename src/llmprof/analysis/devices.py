"""Several GPUs: each device (and each process on it) on its own, collectives matched across ranks.

A capture of a tensor-parallel run read as one pool of kernels hides what matters: which GPU
is busy, which one waits inside the collectives, and whether communication overlaps compute.
Everything here is per device first: kernels, busy time, categories and top kernels, per device
and per process; the share of collective time that overlaps compute kernels on the same device;
and one-off giants (a startup barrier, a first-call initialisation) named as setup and kept out
of the steady-state shares. :func:`multi_gpu_metrics` adds the collectives of
:mod:`llmprof.analysis.collectives` and the verdict a findings rule can state.

Memory stays bounded: kernels are grouped a Parquet batch at a time, and interval unions are
swept a time window at a time, after one pass that counts events per time bin and one that
files them by window (as ``metrics.gpu_activity`` does).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from llmprof.analysis.categories import CATEGORY_ORDER, kernel_label
from llmprof.analysis.collectives import (
    NO_PID,
    SETUP_MIN_NS,
    SETUP_RATIO,
    TRANSFER_DOMINATES,
    KindCache,
    collective_verdict,
    kernel_batches,
    match_collectives,
    read_collectives,
    summarise_collectives,
    text_codes,
)
from llmprof.analysis.grouped import GroupedValues, bin_ranges, bin_shift, int_column, write_partitions
from llmprof.analysis.metrics import capture_window, time_span
from llmprof.common.errors import InputError
from llmprof.common.records import (
    CategoryTime,
    DeviceView,
    KernelView,
    MultiGpuMetrics,
    ProcessView,
    SetupKernel,
)

TOP_KERNELS = 5
READ_ROWS = 1 << 18
COVERAGE_BUDGET = 1 << 20  # events sorted at once (8 MiB); more are taken a time window at a time
GPU_TABLES = ("kernels", "memcpy", "memset")
#: Interval classes of the sweep: compute kernels, collective kernels, copies and memsets, setup kernels.
COMPUTE, COLLECTIVE, COPY, SETUP = 0, 1, 2, 3
CLASS_BITS = 2
SLOT_BITS = 5
MAX_SLOTS = 1 << SLOT_BITS  # processes per device told apart in the sweep; more share the last slot
CODE_BITS = 1 + CLASS_BITS + SLOT_BITS  # the low bits of an event: end flag, class, process slot
_GROUP_COLUMNS = ["device_id", "pid", "name", "short_name", "category"]


def kernel_groups(kernels: Path) -> pd.DataFrame:
    """Per device, process and kernel (name, short name, category): count, summed and longest duration (ns).

    Each Parquet batch is grouped by Arrow on the dictionary codes Parquet stored, and the partial
    groups are combined; a kernel without a process has pid ``NO_PID``.
    """
    parts = []
    aggregations = [("duration_ns", "count"), ("duration_ns", "sum"), ("duration_ns", "max")]
    for batch in kernel_batches(kernels, [*_GROUP_COLUMNS, "duration_ns"]):
        if batch.num_rows:
            grouped = pa.Table.from_batches([batch]).group_by(_GROUP_COLUMNS, use_threads=False).aggregate(aggregations)
            parts.append(grouped.to_pandas())
    names = {"duration_ns_count": "count", "duration_ns_sum": "time_ns", "duration_ns_max": "longest_ns"}
    if not parts:
        empty = {c: pd.Series([], dtype="int64" if c in ("device_id", "pid") else object) for c in _GROUP_COLUMNS}
        return pd.DataFrame({**empty, **{c: pd.Series([], dtype="int64") for c in names.values()}})
    frame = pd.concat(parts, ignore_index=True).rename(columns=names)
    for column in _GROUP_COLUMNS[2:]:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    frame = frame.fillna({"device_id": NO_PID, "pid": NO_PID}).astype({"device_id": "int64", "pid": "int64"})
    combined = frame.groupby(_GROUP_COLUMNS, dropna=False, sort=True).agg(
        count=("count", "sum"), time_ns=("time_ns", "sum"), longest_ns=("longest_ns", "max")
    )
    return pd.DataFrame(combined.reset_index())


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def setup_kernels(kernels: Path, groups: pd.DataFrame, scratch: Path) -> list[SetupKernel]:
    """Kernel instances at least ``SETUP_RATIO`` times their name's median (over every device) and at least
    ``SETUP_MIN_NS`` long, by start. Only names with an instance that long are read again, for their exact
    median (values spill to ``scratch`` past a budget)."""
    candidates = set(groups.loc[groups["longest_ns"] >= SETUP_MIN_NS, "name"].map(_text))
    if not candidates:
        return []
    durations = GroupedValues(("name",), ("duration_ns",), scratch)
    long_parts = []
    columns = ["device_id", "pid", "name", "short_name", "category", "start_ns", "duration_ns"]
    for batch in kernel_batches(kernels, columns):
        codes, values = text_codes(batch.column("name"))
        rows = np.flatnonzero(np.array([v in candidates for v in values])[codes])
        if not len(rows):
            continue
        part = batch.take(pa.array(rows))
        names = part.column("name").cast(pa.string())
        durations.add_batch(pa.record_batch({"name": names, "duration_ns": part.column("duration_ns")}))
        long = np.flatnonzero(int_column(part.column("duration_ns")) >= SETUP_MIN_NS)
        long_parts.append(part.take(pa.array(long)).to_pandas().assign(name=names.take(pa.array(long)).to_pylist()))
    medians = durations.frame().set_index("name")["duration_ns_median"].to_dict()
    found: list[SetupKernel] = []
    for row in pd.concat(long_parts, ignore_index=True).to_dict("records"):
        median = float(medians[row["name"] if isinstance(row["name"], str) else ""])
        if row["duration_ns"] >= SETUP_RATIO * median:
            found.append(
                {
                    "device_id": int(row["device_id"]),
                    "pid": None if pd.isna(row["pid"]) else int(row["pid"]),
                    "name": _text(row["name"]),
                    "label": kernel_label(_text(row["name"]), _text(row["short_name"])),
                    "category": _text(row["category"]),
                    "start_ns": int(row["start_ns"]),
                    "duration_ns": int(row["duration_ns"]),
                    "name_median_ns": median,
                }
            )
    return sorted(found, key=lambda k: (k["start_ns"], k["device_id"], k["pid"] or NO_PID))


Intervals = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def gpu_intervals(stage: Path, setup: set[tuple[int, int, int]]) -> Iterator[Intervals]:
    """(device, pid, class, start, end) of every GPU operation of an extract folder, a batch at a time.

    Kernels are ``COLLECTIVE`` or ``COMPUTE``, or ``SETUP`` where (device, start, end) is in ``setup``;
    copies and memsets are ``COPY``.
    """
    kinds, starts = KindCache(), np.array(sorted({s for _, s, _ in setup}), dtype="int64")
    for batch in kernel_batches(
        stage / "kernels.parquet", [*_GROUP_COLUMNS[:2], "start_ns", "end_ns", *_GROUP_COLUMNS[2:]]
    ):
        device, pid, start, end = (int_column(batch.column(i), null=NO_PID) for i in range(4))
        klass = np.where(kinds.kinds(batch) != None, COLLECTIVE, COMPUTE)  # noqa: E711 (elementwise)
        for i in np.flatnonzero(np.isin(start, starts)).tolist():
            if (int(device[i]), int(start[i]), int(end[i])) in setup:
                klass[i] = SETUP
        yield device, pid, klass, start, end
    for table in GPU_TABLES[1:]:
        parquet = pq.ParquetFile(stage / f"{table}.parquet")
        for batch in parquet.iter_batches(columns=["device_id", "pid", "start_ns", "end_ns"], batch_size=READ_ROWS):
            device, pid, start, end = (int_column(column, null=NO_PID) for column in batch.columns)
            yield device, pid, np.full(len(start), COPY), start, end


class Coverage:
    """Unions of one device's intervals, swept in time order a window of sorted events at a time.

    An event packs its time (from ``low``) above its process slot, class and end flag, so one sort
    orders a window. The depth of each set of intervals (all; collective; compute; each process) is
    carried from window to window, and a stretch of time counts for a set while its depth is positive.
    """

    def __init__(self, pids: list[int]) -> None:
        """``pids``: the device's processes, ascending; past ``MAX_SLOTS`` the last slot holds the rest."""
        self.pids = pids
        self.slots = min(len(pids), MAX_SLOTS)
        self.carry = np.zeros(3 + self.slots, dtype="int64")
        self.measured = np.zeros(3 + self.slots, dtype="int64")
        self.overlapped_ns = 0
        self.last: int | None = None

    def add(self, events: np.ndarray, low: int) -> None:
        """The sorted events of the next time window."""
        if not len(events):
            return
        times = (events >> CODE_BITS) + low
        code = events & ((1 << CODE_BITS) - 1)
        delta = np.where(code & 1, -1, 1)
        klass, slot = (code >> 1) & ((1 << CLASS_BITS) - 1), code >> (1 + CLASS_BITS)
        lengths = np.diff(times, prepend=times[0] if self.last is None else self.last)  # the stretch before each
        members = [None, klass == COLLECTIVE, klass == COMPUTE, *(slot == s for s in range(self.slots))]
        active = []
        for i, member in enumerate(members):
            depth = np.cumsum(delta if member is None else np.where(member, delta, 0)) + self.carry[i]
            before = np.concatenate(([self.carry[i]], depth[:-1])) > 0  # depth during the stretch before each
            self.measured[i] += int(lengths[before].sum())
            self.carry[i] = depth[-1]
            if i in (1, 2):
                active.append(before)
        self.overlapped_ns += int(lengths[active[0] & active[1]].sum())
        self.last = int(times[-1])

    @property
    def busy_ns(self) -> int:
        return int(self.measured[0])

    @property
    def collective_ns(self) -> int:
        return int(self.measured[1])

    def process_busy_ns(self, pid: int) -> int | None:
        """A process's busy time; None for processes that share the last slot."""
        slot = self.pids.index(pid)
        shared = slot >= self.slots - 1 and len(self.pids) > self.slots
        return None if shared else int(self.measured[3 + slot])


def _device_bins(
    stage: Path, setup: set[tuple[int, int, int]], low: int, shift: int, bins: int
) -> tuple[dict[int, np.ndarray], dict[int, list[int]]]:
    """Per device: how many starts and ends fall in each time bin (2**shift ns from ``low``), and its pids."""
    histograms: dict[int, np.ndarray] = {}
    pids: dict[int, set[int]] = {}
    for device, pid, _, start, end in gpu_intervals(stage, setup):
        for value in np.unique(device).tolist():
            mine = device == value
            counts = histograms.setdefault(value, np.zeros(bins, dtype="int64"))
            counts += np.bincount((start[mine] - low) >> shift, minlength=bins)
            counts += np.bincount((np.maximum(end[mine], start[mine]) - low) >> shift, minlength=bins)
            pids.setdefault(value, set()).update(np.unique(pid[mine]).tolist())
    return histograms, {device: sorted(found) for device, found in pids.items()}


def _file_events(
    stage: Path,
    setup: set[tuple[int, int, int]],
    low: int,
    windows: dict[int, np.ndarray],
    paths: dict[int, list[Path]],
    pids: dict[int, list[int]],
) -> None:
    """Write every start and end, packed as :class:`Coverage` reads them, to its device's file of its window."""
    handles = {device: [path.open("wb") for path in listed] for device, listed in paths.items()}
    try:
        for device, pid, klass, start, end in gpu_intervals(stage, setup):
            for value in np.unique(device).tolist():
                mine = device == value
                slot = np.minimum(np.searchsorted(np.array(pids[value]), pid[mine]), MAX_SLOTS - 1)
                code = (slot << (1 + CLASS_BITS)) | (klass[mine] << 1)
                for times, end_flag in ((start[mine], 0), (np.maximum(end[mine], start[mine]), 1)):
                    events = ((times - low) << CODE_BITS) | code | end_flag
                    write_partitions(events, np.searchsorted(windows[value], times, side="right") - 1, handles[value])
    finally:
        for listed in handles.values():
            for handle in listed:
                handle.close()


def device_coverage(stage: Path, setup: set[tuple[int, int, int]], scratch: Path) -> dict[int, Coverage]:
    """Per device, the interval unions of :class:`Coverage` over every GPU operation of an extract folder.

    One pass counts starts and ends per time bin, one files them by time window (at most about
    ``COVERAGE_BUDGET`` events each, in ``scratch``); windows are then sorted and swept in time order.
    """
    span = time_span(stage, GPU_TABLES)
    if span is None:
        return {}
    low, high = span
    if high - low >= 1 << (63 - CODE_BITS):
        raise InputError(f"{stage}: GPU operations span {high - low} ns, too long to sweep")
    shift = bin_shift(low, high)
    histograms, pids = _device_bins(stage, setup, low, shift, ((high - low) >> shift) + 1)
    windows = {
        device: np.array([low + (first << shift) for first, _ in bin_ranges(counts, COVERAGE_BUDGET)], dtype="int64")
        for device, counts in histograms.items()
    }
    paths = {device: [scratch / f"events-{device}-{i}" for i in range(len(w))] for device, w in windows.items()}
    _file_events(stage, setup, low, windows, paths, pids)
    found = {}
    for device in sorted(paths):
        coverage = Coverage(pids[device])
        for path in paths[device]:
            events = np.fromfile(path, dtype="int64")
            events.sort()
            coverage.add(events, low)
            path.unlink()
        found[device] = coverage
    return found


def _steady(groups: pd.DataFrame, setup: list[SetupKernel]) -> pd.DataFrame:
    """The kernel groups with ``setup_count`` and ``setup_ns``: their setup kernels' count and time."""
    keys = ["device_id", "pid", "name"]
    found = pd.DataFrame(
        {
            "device_id": pd.Series([k["device_id"] for k in setup], dtype="int64"),
            "pid": pd.Series([NO_PID if k["pid"] is None else k["pid"] for k in setup], dtype="int64"),
            "name": pd.Series([k["name"] for k in setup], dtype=object),
            "setup_ns": pd.Series([k["duration_ns"] for k in setup], dtype="int64"),
        }
    )
    per_group = found.groupby(keys, dropna=False, sort=False)["setup_ns"].agg(["size", "sum"]).reset_index()
    per_group = per_group.rename(columns={"size": "setup_count", "sum": "setup_ns"})
    merged = groups.merge(per_group, on=keys, how="left")
    return merged.fillna({"setup_count": 0, "setup_ns": 0}).astype({"setup_count": "int64", "setup_ns": "int64"})


def _kernel_view(rows: pd.DataFrame) -> KernelView:
    """Counts, time, steady-state categories and top kernels of some kernel groups (see :func:`_steady`)."""
    steady_ns = rows["time_ns"] - rows["setup_ns"]
    steady_count = rows["count"] - rows["setup_count"]
    total = int(steady_ns.sum())
    categories: list[CategoryTime] = []
    for category in CATEGORY_ORDER:
        mine = (rows["category"] == category).to_numpy(dtype=bool)
        time_ns = int(steady_ns[mine].sum())
        share = time_ns / total if total else 0.0
        categories.append(
            {"category": category, "time_ns": time_ns, "count": int(steady_count[mine].sum()), "share": share}
        )
    keyed = rows.assign(steady_ns=steady_ns, steady_count=steady_count, key=rows["name"].map(lambda n: n or ""))
    per_name = keyed.groupby(["key", "short_name", "category"], dropna=False, sort=True).agg(
        name=("name", "first"), time_ns=("steady_ns", "sum"), count=("steady_count", "sum")
    )
    top = per_name.reset_index().sort_values("time_ns", ascending=False, kind="stable").head(TOP_KERNELS)
    return {
        "kernels": int(rows["count"].sum()),
        "kernel_time_ns": int(rows["time_ns"].sum()),
        "setup_kernel_time_ns": int(rows["setup_ns"].sum()),
        "categories": categories,
        "top_kernels": [
            {
                "name": _text(r["name"]),
                "label": kernel_label(_text(r["name"]), _text(r["short_name"])),
                "category": _text(r["category"]),
                "time_ns": int(r["time_ns"]),
                "count": int(r["count"]),
                "share": int(r["time_ns"]) / total if total else 0.0,
            }
            for r in top.to_dict("records")
            if r["count"]
        ],
    }


def _names(stage: Path, table: str, key: str) -> dict[int, str]:
    """The first name (in sorted order) of each id of a small table (``gpus``, ``processes``)."""
    rows = pq.read_table(stage / f"{table}.parquet", columns=[key, "name"]).to_pylist()
    found: dict[int, str] = {}
    for row in sorted((r for r in rows if r[key] is not None and r["name"] is not None), key=lambda r: r["name"]):
        found.setdefault(int(row[key]), row["name"])
    return found


def _device_view(
    device: int,
    rows: pd.DataFrame,
    coverage: Coverage | None,
    collective_ns: int,
    names: dict[str, dict[int, str]],
    window_ns: int,
) -> DeviceView:
    busy = coverage.busy_ns if coverage is not None else 0
    union = coverage.collective_ns if coverage is not None else 0
    overlapped = coverage.overlapped_ns if coverage is not None else 0
    pids = sorted({*rows["pid"].tolist(), *(coverage.pids if coverage is not None else [])})
    processes: list[ProcessView] = [
        {
            **_kernel_view(rows[rows["pid"] == pid]),
            "pid": None if pid == NO_PID else int(pid),
            "process_name": names["processes"].get(int(pid)),
            "busy_ns": coverage.process_busy_ns(pid) if coverage is not None else 0,
        }
        for pid in pids
    ]
    return {
        **_kernel_view(rows),
        "device_id": device,
        "gpu_name": names["gpus"].get(device),
        "busy_ns": busy,
        "busy_fraction": busy / window_ns if window_ns else 0.0,
        "idle_fraction": 1 - busy / window_ns if window_ns else 0.0,
        "collective_kernel_time_ns": collective_ns,
        "collective_ns": union,
        "overlapped_ns": overlapped,
        "overlap_fraction": overlapped / union if union else None,
        "processes": processes,
    }


def multi_gpu_metrics(stage: Path) -> MultiGpuMetrics:
    """Per device and per process, collectives matched across ranks, and the verdict, of one extract folder.

    Args:
        stage: an extract folder (its ``kernels``, ``memcpy``, ``memset``, ``gpus`` and ``processes`` tables).

    Returns:
        A JSON-ready dict; times in ns, fractions in [0, 1]. Devices are sorted by id, processes by pid.
    """
    kernels = stage / "kernels.parquet"
    window_ns = int(capture_window(stage)["duration_ns"])
    matched = match_collectives(read_collectives(kernels))
    groups = kernel_groups(kernels)
    with tempfile.TemporaryDirectory(prefix="llmprof-devices-") as scratch:
        setup = setup_kernels(kernels, groups, Path(scratch))
        excluded = {(k["device_id"], k["start_ns"], k["start_ns"] + k["duration_ns"]) for k in setup}
        setup_rows = matched[matched["setup"].astype(bool)]
        excluded |= set(zip(*(setup_rows[c].tolist() for c in ("device_id", "start_ns", "end_ns"))))
        coverages = device_coverage(stage, excluded, Path(scratch))
    steady = _steady(groups, setup)
    collective_ns = matched.groupby("device_id")["duration_ns"].sum().to_dict()
    names = {"gpus": _names(stage, "gpus", "device_id"), "processes": _names(stage, "processes", "pid")}
    devices = [
        _device_view(
            device,
            steady[steady["device_id"] == device],
            coverages.get(device),
            int(collective_ns.get(device, 0)),
            names,
            window_ns,
        )
        for device in sorted({*steady["device_id"].tolist(), *coverages})
    ]
    summary = summarise_collectives(matched)
    return {
        "window_ns": window_ns,
        "devices": devices,
        "setup_kernels": setup,
        "collectives": summary,
        "verdict": collective_verdict(summary),
        "thresholds": {
            "setup_ratio": SETUP_RATIO,
            "setup_min_ns": SETUP_MIN_NS,
            "transfer_dominates": TRANSFER_DOMINATES,
        },
    }
