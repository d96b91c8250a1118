"""GPU operations joined to the CUDA calls that launched them, in one streaming pass.

A CUDA call and the kernels, copies and memsets it launched share a correlation id
within one process. :class:`LaunchScan` takes the calls first and indexes them by
(process, correlation id), about 28 bytes per call; GPU operations then stream past
that index a batch at a time. The join feeds two results at once: the per-launch
times of ``cuda_kern_exec_sum`` and the projection of NVTX ranges onto GPU work.
Extraction feeds the scan from the batches it writes to Parquet anyway; ``llmprof
stats`` feeds it from lean queries (:func:`launch_results`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .grouped import NULL_KEY, GroupedValues, KeyCodes
from .nvtx_projection import RangeProjection
from .sqlite_io import Export, api_name_sql

KERNEL = "CUPTI_ACTIVITY_KIND_KERNEL"
RUNTIME = "CUPTI_ACTIVITY_KIND_RUNTIME"
GPU_OP_TABLES = (KERNEL, "CUPTI_ACTIVITY_KIND_MEMCPY", "CUPTI_ACTIVITY_KIND_MEMSET")
GLOBAL_PID_BITS = np.int64(~0xFFFFFF)  # the host and process bits of a globalTid
#: Columns a scan reads, by name: calls, every GPU operation, and kernels on top.
CALL_COLUMNS = ("global_tid", "start_ns", "end_ns", "correlation_id", "name")
OP_COLUMNS = ("global_pid", "correlation_id", "start_ns", "end_ns")
KERNEL_COLUMNS = (*OP_COLUMNS, "device_id", "name")

LAUNCHES_KEY = "launches"  # where an export's memo keeps its LaunchResults

Batch: TypeAlias = pa.RecordBatch | pa.Table


def ints(column: pa.Array | pa.ChunkedArray, null: int = -1) -> np.ndarray:
    """An integer column as int64 numpy (often a view of the batch), NULL as ``null``."""
    if column.null_count:
        column = pc.fill_null(column, null)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype="int64")


class GrowingArray:
    """An array appended to batch by batch, in one block that doubles as needed.

    One large block (mapped straight from the system) instead of one small array per batch
    keeps long-lived rows from fragmenting the heap that per-batch temporaries come and go in.
    """

    def __init__(self, dtype: str) -> None:
        self.data = np.empty(0, dtype=dtype)
        self.size = 0

    def append(self, values: np.ndarray) -> None:
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.empty(max(2 * len(self.data), end, 1 << 20), dtype=self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = values
        self.size = end

    def take(self) -> np.ndarray:
        """The values (a view of the block); the array is empty afterwards."""
        values, self.data, self.size = self.data[: self.size], np.empty(0, dtype=self.data.dtype), 0
        return values


class ApiNames:
    """CUDA API name ids to one small code per printed name (a ``_v3020`` suffix dropped)."""

    def __init__(self, export: Export) -> None:
        self.export = export
        self.code_of_id: dict[int, int] = {}
        self.code_of_name: dict[str | None, int] = {}

    def encode(self, ids: np.ndarray) -> np.ndarray:
        inverse, uniques = pd.factorize(ids)
        missing = [int(i) for i in uniques if int(i) not in self.code_of_id]
        for start in range(0, len(missing), 10_000):
            chunk = missing[start : start + 10_000]
            listed = ",".join(str(i) for i in chunk)
            found = dict(self.export.query(f"SELECT id, {api_name_sql('value')} FROM StringIds WHERE id IN ({listed})"))
            for i in chunk:
                name = found.get(i)  # an id StringIds lacks names nothing, as SQL's LEFT JOIN does
                self.code_of_id[i] = self.code_of_name.setdefault(name, len(self.code_of_name))
        codes = np.fromiter((self.code_of_id[int(i)] for i in uniques), "int64", len(uniques))
        return codes[inverse]

    def names(self) -> list[str | None]:
        """Printed names in code order."""
        return list(self.code_of_name)


class CallIndex:
    """CUDA calls sorted by (process, correlation id), with their span and launcher code.

    A launcher is a (thread, API name) pair, the pair ``cuda_kern_exec_sum`` groups by.
    """

    def __init__(self, api: ApiNames) -> None:
        self.api = api
        self.launchers = KeyCodes()
        self._parts = {k: GrowingArray("int64") for k in ("pid_bits", "correlation", "start", "end")}
        self._parts["who"] = GrowingArray("int32")
        self.size = 0
        self.finished = False

    def add(self, batch: Batch) -> None:
        global_tid = ints(batch.column("global_tid"))
        launcher = self.launchers.encode([global_tid, self.api.encode(ints(batch.column("name")))])
        for name, values in (
            ("pid_bits", global_tid & GLOBAL_PID_BITS),
            ("correlation", ints(batch.column("correlation_id"))),
            ("start", ints(batch.column("start_ns"))),
            ("end", ints(batch.column("end_ns"))),
            ("who", launcher),
        ):
            self._parts[name].append(values)

    def _take(self, name: str) -> np.ndarray:
        return self._parts[name].take()

    def finish(self) -> None:
        """Sort the calls by key; each column is concatenated and reordered on its own to keep the peak low."""
        pid_bits = self._take("pid_bits")
        self.processes = np.unique(pid_bits)
        correlation = self._take("correlation")
        self.width = int(correlation.max()) + 1 if len(correlation) else 1
        keys = np.searchsorted(self.processes, pid_bits) * self.width
        del pid_bits
        keys += np.where(correlation >= 0, correlation, self.width * len(self.processes))  # NULL matches nothing
        del correlation
        order = np.argsort(keys, kind="stable")
        keys.sort()  # in place: a sorted copy would cost another 8 bytes per call
        self.keys = keys
        self.start = self._take("start")[order]
        self.end = self._take("end")[order]
        self.who = self._take("who")[order]
        del order
        self.size = len(self.keys)
        self.unique = not bool((self.keys[1:] == self.keys[:-1]).any())
        launchers = self.launchers.keys()
        self.who_thread = np.array([t for t, _ in launchers], dtype="int64")
        self.who_api = np.array([a for _, a in launchers], dtype="int64")
        self.finished = True

    def release(self) -> None:
        """Drop the per-call arrays once every GPU operation has been matched."""
        del self.keys, self.start, self.end, self.who

    def match(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Rows of a batch of GPU operations that a call launched, and the position of that call.

        An operation whose key several calls share appears once per call, as in an SQL join.
        """
        if not self.size or not batch.num_rows:
            return np.zeros(0, dtype="int64"), np.zeros(0, dtype="int64")
        global_pid = ints(batch.column("global_pid"))
        correlation = ints(batch.column("correlation_id"))
        process = np.minimum(np.searchsorted(self.processes, global_pid), len(self.processes) - 1)
        valid = (self.processes[process] == global_pid) & (correlation >= 0) & (correlation < self.width)
        keys = process * self.width + correlation
        low = np.minimum(np.searchsorted(self.keys, keys), self.size - 1)
        valid &= self.keys[low] == keys
        if self.unique:
            rows = np.flatnonzero(valid)
            return rows, low[rows]
        counts = np.where(valid, np.searchsorted(self.keys, keys, side="right") - low, 0)
        rows = np.repeat(np.arange(len(keys)), counts)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, np.repeat(low, counts) + offsets


class LaunchTimes:
    """``cuda_kern_exec_sum``'s four times per kernel launch, grouped by thread, API, device and kernel.

    Total ``t`` runs from the call's start to the later of call end and kernel end; API ``a`` is
    the call; queue ``q`` runs from the call's end to the kernel's start (none when the kernel
    started first); kernel ``k`` is the kernel.
    """

    def __init__(self, spill: Path | None = None) -> None:
        self.grouped = GroupedValues(("who", "device_id", "kernel_id"), ("t", "a", "q", "k"), spill)

    def add(self, calls: CallIndex, batch: Batch, rows: np.ndarray, positions: np.ndarray) -> None:
        if not len(rows):
            return
        device = ints(batch.column("device_id"), NULL_KEY)[rows]
        kernel = ints(batch.column("name"), NULL_KEY)[rows]
        codes = self.grouped.codes.encode([calls.who[positions], device, kernel])
        call_start, call_end = calls.start[positions], calls.end[positions]
        kernel_start = ints(batch.column("start_ns"))[rows]
        kernel_end = ints(batch.column("end_ns"))[rows]
        self.grouped.add_values("t", codes, np.maximum(call_end, kernel_end) - call_start)
        self.grouped.add_values("a", codes, call_end - call_start)
        queued = kernel_start >= call_end
        self.grouped.add_values("q", codes[queued], (kernel_start - call_end)[queued])
        self.grouped.add_values("k", codes, kernel_end - kernel_start)

    def frame(self, calls: CallIndex) -> pd.DataFrame:
        """global_tid, device_id, api_name, kernel_id and ``{t,a,q,k}_{statistic}`` per group."""
        stats = self.grouped.frame()
        who = stats.pop("who").to_numpy(dtype="int64")
        api_names = np.array(calls.api.names(), dtype=object)
        stats.insert(0, "global_tid", calls.who_thread[who] if len(who) else np.zeros(0, dtype="int64"))
        stats.insert(2, "api_name", api_names[calls.who_api[who]] if len(who) else np.zeros(0, dtype=object))
        keys = ["global_tid", "device_id", "api_name", "kernel_id"]
        return stats.sort_values(keys, kind="stable", na_position="first").reset_index(drop=True)


@dataclass
class LaunchResults:
    """What one scan yields: per-launch time statistics and the projected NVTX ranges."""

    times: pd.DataFrame
    projected: pd.DataFrame | None


class LaunchScan:
    """Feed calls, then GPU operations (kernels with ``kernels=True``); then call :meth:`finish`."""

    def __init__(self, export: Export, ranges: pd.DataFrame | None, spill: Path | None = None) -> None:
        """``spill``: a folder for the per-launch times while they stream (see ``GroupedValues``)."""
        self.calls = CallIndex(ApiNames(export))
        self.times = LaunchTimes(spill)
        self.projection = RangeProjection(ranges) if ranges is not None and len(ranges) else None

    def add_calls(self, batch: Batch) -> None:
        self.calls.add(batch)

    def add_operations(self, batch: Batch, kernels: bool) -> None:
        if not self.calls.finished:
            self.calls.finish()
        rows, positions = self.calls.match(batch)
        if kernels:
            self.times.add(self.calls, batch, rows, positions)
        if self.projection is not None and len(rows):
            starts, ends = ints(batch.column("start_ns"))[rows], ints(batch.column("end_ns"))[rows]
            self.projection.add(self.calls, positions, starts, ends)

    def finish(self) -> LaunchResults:
        if not self.calls.finished:
            self.calls.finish()
        self.calls.release()
        projected = self.projection.frame() if self.projection is not None else None
        return LaunchResults(self.times.frame(self.calls), projected)


def launch_results(export: Export, ranges: pd.DataFrame | None) -> LaunchResults:
    """Scan an export with lean queries (only the columns the join needs), once per export."""
    return export.memoized(LAUNCHES_KEY, lambda: _scan(export, ranges))  # type: ignore[no-any-return]


def _scan(export: Export, ranges: pd.DataFrame | None) -> LaunchResults:
    scan = LaunchScan(export, ranges)
    if RUNTIME in export.columns:
        sql = (
            f'SELECT globalTid AS global_tid, start AS start_ns, "end" AS end_ns, '
            f"correlationId AS correlation_id, nameId AS name FROM {RUNTIME}"
        )
        for batch in export.arrow_batches(sql):
            scan.add_calls(batch)
        name = export.first_column(KERNEL, "demangledName", "shortName") or "shortName"
        for table in GPU_OP_TABLES:
            if table not in export.columns:
                continue
            extra = f", deviceId AS device_id, {name} AS name" if table == KERNEL else ""
            sql = (
                f'SELECT globalPid AS global_pid, correlationId AS correlation_id, start AS start_ns, "end" AS end_ns'
                f"{extra} FROM {table}"
            )
            for batch in export.arrow_batches(sql):
                scan.add_operations(batch, kernels=table == KERNEL)
    return scan.finish()
