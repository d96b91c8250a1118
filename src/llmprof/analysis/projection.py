"""Projection of NVTX ranges onto the GPU work launched inside them.

A CUDA call belongs to a range when it starts and ends inside the range on the
range's thread. The range's projection spans from the first start to the last
end of the GPU operations (kernels, memcpy, memset) those calls launched. This
is how GPU time is attributed to phases such as ``warmup``, ``generate`` or one
engine step, and it is what ``nsys stats -r nvtx_gpu_proj_sum`` summarises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from llmprof.analysis.grouped import sqlite_round

PROJECTED_COLUMNS = [
    "name",
    "style",
    "global_tid",
    "start_ns",
    "end_ns",
    "proj_start_ns",
    "proj_end_ns",
    "cuda_calls",
    "gpu_ops",
    "gpu_time_ns",
    "level",
    "children",
]


@dataclass(frozen=True)
class Launched:
    """GPU operations and the CUDA calls that launched them, one row per operation.

    Calls are numbered within a set (``partition``, holding ``calls`` of them): the join of
    operations to calls may run one partition of the calls at a time.
    """

    partition: int
    calls: int
    call: np.ndarray  # position of the launching call in its partition
    thread: np.ndarray  # globalTid of the launching call
    call_start: np.ndarray
    call_end: np.ndarray
    op_start: np.ndarray
    op_end: np.ndarray


def _stack_order(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Ranges by start, the outer first where two start together (then as listed)."""
    return np.lexsort((np.arange(len(start)), -end, start))


def _parents_by_stack(start: np.ndarray, end: np.ndarray, order: np.ndarray) -> np.ndarray | None:
    """Innermost enclosing range of each range, when the ranges nest; None if two cross."""
    parent = np.full(len(start), -1, dtype="int64")
    stack: list[int] = []
    for i in order:
        while stack and end[stack[-1]] < end[i]:
            if end[stack[-1]] > start[i]:
                return None  # overlapping without nesting
            stack.pop()
        if stack:
            parent[i] = stack[-1]
        stack.append(i)
    return parent


def _parents_by_search(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Tightest enclosing range of each range (for start/end ranges that may cross)."""
    parent = np.full(len(start), -1, dtype="int64")
    for i in range(len(start)):
        encloses = (start <= start[i]) & (end >= end[i])
        encloses[i] = False
        if encloses.any():
            tightness = np.where(encloses, (start[i] - start) + (end - end[i]), np.iinfo("int64").max)
            parent[i] = int(np.argmin(tightness))
    return parent


def _nesting(ranges: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, set[int]]:
    """Parent index (or -1) and depth of every range, and the threads whose ranges cross.

    Ranges nest per thread only; on a thread where two ranges overlap without nesting, each
    range's parent is the tightest range that encloses it.
    """
    parent = np.full(len(ranges), -1, dtype="int64")
    crossing: set[int] = set()
    for thread, group in ranges.groupby("global_tid", sort=False):
        idx = group.index.to_numpy()
        start = group["start_ns"].to_numpy()
        end = group["end_ns"].to_numpy()
        order = _stack_order(start, end)
        local = _parents_by_stack(start, end, order)
        if local is None:
            local = _parents_by_search(start, end)
            crossing.add(cast(int, thread))
        parent[idx] = np.where(local >= 0, idx[np.maximum(local, 0)], -1)
    level = np.zeros(len(ranges), dtype="int64")
    for i in range(len(ranges)):
        depth, node = 0, parent[i]
        while node >= 0 and depth <= len(ranges):
            depth, node = depth + 1, parent[node]
        level[i] = depth
    return parent, level, crossing


class RangeProjection:
    """Per NVTX range: the GPU operations launched by calls inside it, fed a batch at a time.

    On a thread whose ranges nest, each operation is counted once, in the innermost range
    that holds its launching call (the last range to start before the call, or the nearest
    enclosing range of that one that also outlasts the call), and :meth:`frame` adds every
    range's totals into its ancestors. On a thread whose ranges cross, each range is tested.
    Memory: five numbers per range and one flag per call.
    """

    def __init__(self, ranges: pd.DataFrame) -> None:
        """``ranges``: name, style, start_ns, end_ns and global_tid of each range."""
        self.ranges = ranges.reset_index(drop=True)
        self.parent, self.level, self.crossing = _nesting(self.ranges)
        self.start = self.ranges["start_ns"].to_numpy(dtype="int64")
        self.end = self.ranges["end_ns"].to_numpy(dtype="int64")
        count = len(self.ranges)
        self.proj_start = np.full(count, np.iinfo("int64").max, dtype="int64")
        self.proj_end = np.full(count, np.iinfo("int64").min, dtype="int64")
        self.gpu_ops = np.zeros(count, dtype="int64")
        self.gpu_time = np.zeros(count, dtype="int64")
        self.cuda_calls = np.zeros(count, dtype="int64")
        self.threads: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for thread, group in self.ranges.groupby("global_tid", sort=True):
            idx = group.index.to_numpy()
            order = idx[_stack_order(self.start[idx], self.end[idx])]
            self.threads[cast(int, thread)] = (self.start[order], order)  # stack order: start, then outer first
        self.seen: np.ndarray | None = None
        self.seen_for: int | None = None

    def add(self, launched: Launched) -> None:
        """GPU operations and their launching calls."""
        first = self._first_operations(launched)
        for tid, (sorted_start, order) in self.threads.items():
            rows = np.flatnonzero(launched.thread == tid)
            if not len(rows):
                continue
            call_start, call_end = launched.call_start[rows], launched.call_end[rows]
            if tid in self.crossing:
                for r in order:
                    inside = (call_start >= self.start[r]) & (call_start <= self.end[r]) & (call_end <= self.end[r])
                    self._accumulate(np.full(int(inside.sum()), r), rows[inside], launched, first)
                continue
            node = self._innermost(sorted_start, order, call_start, call_end)
            held = node >= 0
            self._accumulate(node[held], rows[held], launched, first)

    def _first_operations(self, launched: Launched) -> np.ndarray:
        """Which operations are the first seen of their call: a call counts once, at its first operation."""
        if self.seen is None or self.seen_for != launched.partition:  # one flag per call of this partition
            self.seen, self.seen_for = np.zeros(launched.calls, dtype=bool), launched.partition
        positions = launched.call
        fresh = ~self.seen[positions]
        first = np.zeros(len(positions), dtype=bool)
        _, at = np.unique(positions[fresh], return_index=True)
        first[np.flatnonzero(fresh)[at]] = True
        self.seen[positions] = True
        return first

    def _innermost(
        self, sorted_start: np.ndarray, order: np.ndarray, call_start: np.ndarray, call_end: np.ndarray
    ) -> np.ndarray:
        """On a thread whose ranges nest: the innermost range holding each call (-1 for none).

        That is the last range to start before the call, or its nearest ancestor that outlasts the call.
        """
        candidate = np.searchsorted(sorted_start, call_start, side="right") - 1
        node = np.where(candidate >= 0, order[np.maximum(candidate, 0)], -1)
        while True:
            climb = np.flatnonzero(node >= 0)
            climb = climb[self.end[node[climb]] < call_end[climb]]
            if not len(climb):
                return node
            node[climb] = self.parent[node[climb]]

    def _accumulate(self, node: np.ndarray, rows: np.ndarray, launched: Launched, first: np.ndarray) -> None:
        if not len(node):
            return
        op_start, op_end = launched.op_start, launched.op_end
        np.minimum.at(self.proj_start, node, op_start[rows])
        np.maximum.at(self.proj_end, node, op_end[rows])
        np.add.at(self.gpu_ops, node, 1)
        np.add.at(self.gpu_time, node, op_end[rows] - op_start[rows])
        np.add.at(self.cuda_calls, node, first[rows].astype("int64"))

    def frame(self) -> pd.DataFrame:
        """One row per range that launched GPU work (``PROJECTED_COLUMNS``)."""
        nested = ~self.ranges["global_tid"].isin(list(self.crossing)).to_numpy()
        for depth in range(int(self.level.max(initial=0)), 0, -1):  # innermost first: totals flow upward
            child = np.flatnonzero(nested & (self.level == depth) & (self.parent >= 0))
            up = self.parent[child]
            np.minimum.at(self.proj_start, up, self.proj_start[child])
            np.maximum.at(self.proj_end, up, self.proj_end[child])
            np.add.at(self.gpu_ops, up, self.gpu_ops[child])
            np.add.at(self.gpu_time, up, self.gpu_time[child])
            np.add.at(self.cuda_calls, up, self.cuda_calls[child])
        has_work = self.cuda_calls > 0
        children = np.bincount(self.parent[has_work & (self.parent >= 0)], minlength=len(self.ranges))
        projected = self.ranges.assign(
            proj_start_ns=self.proj_start,
            proj_end_ns=self.proj_end,
            cuda_calls=self.cuda_calls,
            gpu_ops=self.gpu_ops,
            gpu_time_ns=self.gpu_time,
            level=self.level,
            children=children,
        )
        return projected[has_work][PROJECTED_COLUMNS].reset_index(drop=True)


def nvtx_gpu_projection_summary(projected: pd.DataFrame) -> pd.DataFrame:
    """Per range name and style: projected GPU time, range time and launch counts."""
    projected = projected.copy()
    projected["proj_ns"] = projected["proj_end_ns"] - projected["proj_start_ns"]
    projected["range_ns"] = projected["end_ns"] - projected["start_ns"]
    grouped = projected.groupby(["name", "style"], sort=True)
    frame = pd.DataFrame(
        {
            "total_proj_ns": grouped["proj_ns"].sum(),
            "total_range_ns": grouped["range_ns"].sum(),
            "range_instances": grouped.size(),
            "proj_avg_ns": grouped["proj_ns"].mean().map(sqlite_round),
            "proj_med_ns": grouped["proj_ns"].median().map(sqlite_round),
            "proj_min_ns": grouped["proj_ns"].min(),
            "proj_max_ns": grouped["proj_ns"].max(),
            "proj_stddev_ns": grouped["proj_ns"].std(ddof=1).fillna(0.0).map(sqlite_round),
            "total_gpu_ops": grouped["cuda_calls"].sum(),
            "avg_gpu_ops": grouped["cuda_calls"].mean().map(sqlite_round),
            "avg_range_level": grouped["level"].mean().map(sqlite_round),
            "avg_num_child": grouped["children"].mean().map(sqlite_round),
        }
    ).reset_index()
    return frame.sort_values("total_proj_ns", ascending=False, kind="stable")
