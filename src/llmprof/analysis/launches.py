"""GPU operations joined to the CUDA calls that launched them, in one streaming pass.

A CUDA call and the kernels, copies and memsets it launched share a correlation id
within one process. :class:`LaunchScan` takes the calls first and indexes them by
(process, correlation id); GPU operations then stream past that index a batch at a
time. Past ``CALL_BUDGET`` calls, both sides wait on disk split by key and are joined
one partition at a time, so memory stays bounded. The join feeds two results at
once: the per-launch times of ``cuda_kern_exec_sum`` and the projection of NVTX
ranges onto GPU work.
Extraction feeds the scan from the batches it writes to Parquet anyway; ``llmprof
stats`` feeds it from lean queries (:func:`launch_results`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa

from llmprof.analysis.grouped import (
    NULL_KEY,
    GroupedValues,
    KeyCodes,
    SpillBuffer,
    int_column,
    read_chunks,
    write_partitions,
)
from llmprof.analysis.projection import Launched, RangeProjection
from llmprof.nsys import events
from llmprof.nsys.export import Export
from llmprof.nsys.schema import global_pids

Batch: TypeAlias = pa.RecordBatch | pa.Table


class ApiNames:
    """CUDA API name ids to one small code per printed name (a ``_v3020`` suffix dropped)."""

    def __init__(self, export: Export) -> None:
        self.export = export
        self.code_of_id: dict[int, int] = {}
        self.code_of_name: dict[str | None, int] = {}

    def encode(self, ids: np.ndarray) -> np.ndarray:
        inverse, uniques = pd.factorize(ids)
        missing = [int(i) for i in uniques if int(i) not in self.code_of_id]
        found = events.lookup_strings(self.export, missing, events.API_NAME)
        for i in missing:
            name = found.get(i)  # an id StringIds lacks names nothing, as SQL's LEFT JOIN does
            self.code_of_id[i] = self.code_of_name.setdefault(name, len(self.code_of_name))
        codes = np.fromiter((self.code_of_id[int(i)] for i in uniques), "int64", len(uniques))
        return codes[inverse]

    def names(self) -> list[str | None]:
        """Printed names in code order."""
        return list(self.code_of_name)


class CallIndex:
    """CUDA calls sorted by key (process code and correlation id), with their span and launcher code.

    A launcher is a (thread, API name) pair, the pair ``cuda_kern_exec_sum`` groups by;
    ``who_thread`` gives each launcher's globalTid.
    """

    def __init__(
        self,
        keys: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        who: np.ndarray,
        scan: LaunchScan,
        partition: int = 0,
    ) -> None:
        """``partition``: which set of the calls this index holds (the join may take one at a time)."""
        self.partition = partition
        order = np.argsort(keys, kind="stable")
        keys.sort()  # in place: a sorted copy would cost another 8 bytes per call
        self.keys = keys
        self.start, self.end, self.who = start[order], end[order], who[order]
        del order
        self.scan = scan
        self.who_thread = scan.who_thread
        self.size = len(self.keys)
        self.unique = not bool((self.keys[1:] == self.keys[:-1]).any())

    def match(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Rows of a batch of GPU operations that a call launched, and the position of that call.

        An operation whose key several calls share appears once per call, as in an SQL join.
        """
        if not self.size or not batch.num_rows:
            return np.zeros(0, dtype="int64"), np.zeros(0, dtype="int64")
        if "key" in batch.column_names:  # replayed from a partition: keyed already
            keys = int_column(batch.column("key"))
            valid = np.ones(len(keys), dtype=bool)
        else:
            keys, valid = self.scan.keys(
                int_column(batch.column("global_pid")), int_column(batch.column("correlation_id"))
            )
        low = np.minimum(np.searchsorted(self.keys, keys), self.size - 1)
        valid &= self.keys[low] == keys
        if self.unique:
            rows = np.flatnonzero(valid)
            return rows, low[rows]
        counts = np.where(valid, np.searchsorted(self.keys, keys, side="right") - low, 0)
        rows = np.repeat(np.arange(len(keys)), counts)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, np.repeat(low, counts) + offsets

    def launched(self, positions: np.ndarray, op_start: np.ndarray, op_end: np.ndarray) -> Launched:
        """Matched operations (start, end) beside the calls at ``positions`` that launched them."""
        thread = self.who_thread[self.who[positions]]
        start, end = self.start[positions], self.end[positions]
        return Launched(self.partition, self.size, positions, thread, start, end, op_start, op_end)


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
        device = int_column(batch.column("device_id"), NULL_KEY)[rows]
        kernel = int_column(batch.column("name"), NULL_KEY)[rows]
        codes = self.grouped.codes.encode([calls.who[positions], device, kernel])
        call_start, call_end = calls.start[positions], calls.end[positions]
        kernel_start = int_column(batch.column("start_ns"))[rows]
        kernel_end = int_column(batch.column("end_ns"))[rows]
        self.grouped.add_values("t", codes, np.maximum(call_end, kernel_end) - call_start)
        self.grouped.add_values("a", codes, call_end - call_start)
        queued = kernel_start >= call_end
        self.grouped.add_values("q", codes[queued], (kernel_start - call_end)[queued])
        self.grouped.add_values("k", codes, kernel_end - kernel_start)

    def frame(self, who_thread: np.ndarray, who_api: np.ndarray, api_names: list[str | None]) -> pd.DataFrame:
        """global_tid, device_id, api_name, kernel_id and ``{t,a,q,k}_{statistic}`` per group."""
        stats = self.grouped.frame()
        who = stats.pop("who").to_numpy(dtype="int64")
        names = np.array(api_names, dtype=object)
        stats.insert(0, "global_tid", who_thread[who] if len(who) else np.zeros(0, dtype="int64"))
        stats.insert(2, "api_name", names[who_api[who]] if len(who) else np.zeros(0, dtype=object))
        keys = ["global_tid", "device_id", "api_name", "kernel_id"]
        return stats.sort_values(keys, kind="stable", na_position="first").reset_index(drop=True)


@dataclass
class LaunchResults:
    """What one scan yields: per-launch time statistics and the projected NVTX ranges."""

    times: pd.DataFrame
    projected: pd.DataFrame | None


CALL_BUDGET = 1 << 21  # calls indexed at once (about 56 MiB); more are joined one partition at a time
READ_CHUNK = 1 << 18  # records read back from a spill file at once
CALL_RECORD = np.dtype([("pid_bits", "<i8"), ("correlation", "<i8"), ("start", "<i8"), ("end", "<i8"), ("who", "<i4")])
KEYED_CALL = np.dtype([("key", "<i8"), ("start", "<i8"), ("end", "<i8"), ("who", "<i4")])
OP_FIELDS = ("key", "start_ns", "end_ns", "device_id", "name")
OP_RECORD = np.dtype([*((name, "<i8") for name in OP_FIELDS), ("kernel", "<i1")])


def _keyed(scan: LaunchScan, records: np.ndarray) -> np.ndarray:
    """Calls as (key, start, end, launcher), without those no GPU operation can match."""
    keys, valid = scan.keys(records["pid_bits"], records["correlation"])
    keyed = np.empty(int(valid.sum()), dtype=KEYED_CALL)
    keyed["key"] = keys[valid]
    for name in ("start", "end", "who"):
        keyed[name] = records[name][valid]
    return keyed


class LaunchScan:
    """Feed calls, then GPU operations (kernels with ``kernels=True``); then call :meth:`finish`.

    Calls are kept as they come, on disk past ``CALL_BUDGET`` (36 bytes each). When the first GPU
    operation arrives, the calls are known: up to ``CALL_BUDGET`` of them are indexed in memory and
    operations are joined as they pass; beyond that, operations are spilled into partitions by key, and
    :meth:`finish` joins one partition at a time against the calls of that partition only. Memory
    thus stays bounded whatever the number of calls.
    """

    def __init__(self, export: Export, ranges: pd.DataFrame | None, spill: Path) -> None:
        """``spill``: a scratch folder for calls, partitioned operations and grouped times."""
        spill.mkdir(parents=True, exist_ok=True)
        self.spill = spill
        self.api = ApiNames(export)
        self.launchers = KeyCodes()
        self.times = LaunchTimes(spill)
        self.projection = RangeProjection(ranges) if ranges is not None and len(ranges) else None
        self.calls: SpillBuffer | None = SpillBuffer(spill / "calls.bin", CALL_BUDGET)
        self.process_bits: set[int] = set()
        self.max_correlation = -1
        self.partitions = 0  # decided when the first operation arrives
        self.index: CallIndex | None = None
        self.op_files: list[BinaryIO] = []

    def add_calls(self, batch: Batch) -> None:
        assert self.calls is not None, "calls come before GPU operations"
        global_tid = int_column(batch.column("global_tid"))
        records = np.empty(len(global_tid), dtype=CALL_RECORD)
        records["pid_bits"] = global_pids(global_tid)
        records["correlation"] = int_column(batch.column("correlation_id"))
        records["start"] = int_column(batch.column("start_ns"))
        records["end"] = int_column(batch.column("end_ns"))
        records["who"] = self.launchers.encode([global_tid, self.api.encode(int_column(batch.column("name")))])
        self.process_bits.update(np.unique(records["pid_bits"]).tolist())
        if len(records):
            self.max_correlation = max(self.max_correlation, int(records["correlation"].max()))
        self.calls.append(records)

    def keys(self, pid_bits: np.ndarray, correlation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One int64 key per (process, correlation id), and whether any call can have it."""
        if not len(self.processes):
            return np.zeros(len(pid_bits), dtype="int64"), np.zeros(len(pid_bits), dtype=bool)
        process = np.minimum(np.searchsorted(self.processes, pid_bits), len(self.processes) - 1)
        valid = (self.processes[process] == pid_bits) & (correlation >= 0) & (correlation < self.width)
        return process * self.width + correlation, valid

    def _calls_done(self) -> None:
        if self.calls is None:
            return
        calls, self.calls = self.calls, None
        calls.close()
        self.processes = np.array(sorted(self.process_bits), dtype="int64")
        self.width = self.max_correlation + 1 if self.max_correlation >= 0 else 1
        launchers = self.launchers.keys()
        self.who_thread = np.array([t for t, _ in launchers], dtype="int64")
        self.who_api = np.array([a for _, a in launchers], dtype="int64")
        if not calls.spilled:
            chunks = calls.chunks
            records = np.concatenate(chunks) if chunks else np.zeros(0, dtype=CALL_RECORD)
            self.partitions = 1
            self.index = self._keyed_index(_keyed(self, records))
            return
        self.partitions = -(-calls.size // CALL_BUDGET)
        partitions = [(self.spill / f"calls-{p}.bin").open("wb") for p in range(self.partitions)]
        for records in read_chunks(self.spill / "calls.bin", CALL_RECORD, READ_CHUNK):  # keyed, split by partition
            keyed = _keyed(self, records)
            write_partitions(keyed, keyed["key"] % self.partitions, partitions)
        for handle in partitions:
            handle.close()
        (self.spill / "calls.bin").unlink()
        self.op_files = [(self.spill / f"ops-{p}.bin").open("wb") for p in range(self.partitions)]

    def _index(self, partition: int) -> CallIndex:
        """The calls of one partition (every call when there is one), read back from its spill file."""
        path = self.spill / f"calls-{partition}.bin"
        keyed = np.fromfile(path, dtype=KEYED_CALL)
        path.unlink()
        return self._keyed_index(keyed, partition)

    def _keyed_index(self, keyed: np.ndarray, partition: int = 0) -> CallIndex:
        return CallIndex(keyed["key"].copy(), keyed["start"], keyed["end"], keyed["who"], self, partition)

    def add_operations(self, batch: Batch, kernels: bool) -> None:
        self._calls_done()
        if self.index is not None:
            self._join(self.index, batch, kernels)
            return
        keys, valid = self.keys(int_column(batch.column("global_pid")), int_column(batch.column("correlation_id")))
        rows = np.flatnonzero(valid)
        records = np.zeros(len(rows), dtype=OP_RECORD)
        records["key"] = keys[rows]
        for name in ("start_ns", "end_ns", *(("device_id", "name") if kernels else ())):
            records[name] = int_column(batch.column(name), NULL_KEY)[rows]
        records["kernel"] = int(kernels)
        write_partitions(records, records["key"] % self.partitions, self.op_files)

    def _join(self, index: CallIndex, batch: Batch, kernels: bool) -> None:
        rows, positions = index.match(batch)
        if kernels:
            self.times.add(index, batch, rows, positions)
        if self.projection is not None and len(rows):
            starts, ends = int_column(batch.column("start_ns"))[rows], int_column(batch.column("end_ns"))[rows]
            self.projection.add(index.launched(positions, starts, ends))

    def finish(self) -> LaunchResults:
        """Join what waits in partitions, then the statistics and the projection; the scratch folder goes."""
        self._calls_done()
        self.index = None
        for p, handle in enumerate(self.op_files):
            handle.close()
            index = self._index(p)
            for records in read_chunks(self.spill / f"ops-{p}.bin", OP_RECORD, READ_CHUNK):
                for kernels in (True, False):
                    mine = records[records["kernel"] == int(kernels)]
                    batch = pa.table({name: mine[name] for name in OP_FIELDS})
                    self._join(index, batch, kernels)
            del index
            (self.spill / f"ops-{p}.bin").unlink()
        projected = self.projection.frame() if self.projection is not None else None
        return LaunchResults(self.times.frame(self.who_thread, self.who_api, self.api.names()), projected)


def launch_results(export: Export) -> LaunchResults:
    """Scan an export with lean queries, only the columns the join needs."""
    with tempfile.TemporaryDirectory(prefix="llmprof-scan-") as scratch:
        scan = LaunchScan(export, events.nvtx_ranges(export), Path(scratch))
        if events.has_events(export, "cuda_api"):
            for batch in events.call_batches(export):
                scan.add_calls(batch)
            for kernels, batch in events.gpu_operation_batches(export):
                scan.add_operations(batch, kernels=kernels)
        return scan.finish()
