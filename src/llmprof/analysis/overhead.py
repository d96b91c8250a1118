"""The profiler's own work, as the export records it (``profiler_overhead``): what, where and how long.

nsys writes a row for each stretch the profiler itself held a thread: CUDA profiling data
flushed at cudaProfilerStop, CUPTI buffer flushes, thread-local allocations. Those windows are
shown, kept out of the idle share (the idle analysis gives GPU gaps they overlap to the
``profiler`` class), and set beside the measured slowdown of the traced run, which they do not
explain: the tracer also slows every traced call, which only an untraced run measures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from llmprof.analysis.grouped import IntervalUnion
from llmprof.common.records import CaptureWindow, IdleMetrics, ProfilerMetrics

TOP_WINDOWS = 5


def profiler_work(stage: Path, window: CaptureWindow, idle: IdleMetrics) -> ProfilerMetrics:
    """The profiler's windows: their total, the share inside the capture window, the largest, by name.

    Args:
        stage: an extract folder (its ``profiler_overhead`` table; a few rows per thread).
        window: the capture window.
        idle: the idle analysis of the same folder (its ``profiler`` class: GPU idle time the windows cover).
    """
    rows = pq.read_table(stage / "profiler_overhead.parquet").to_pandas()
    low, high = int(window["start_ns"]), int(window["end_ns"])
    starts, ends = rows["start_ns"].to_numpy("int64"), rows["end_ns"].to_numpy("int64")
    inside = IntervalUnion(np.clip(starts, low, high), np.clip(ends, low, high)).length
    by_name = rows.assign(name=rows["name"].fillna("?")).groupby("name", sort=True)["duration_ns"].agg(["size", "sum"])
    by_name = by_name.reset_index().sort_values(["sum", "name"], ascending=[False, True], kind="stable")
    largest = rows.sort_values(["duration_ns", "start_ns"], ascending=[False, True], kind="stable").head(TOP_WINDOWS)
    return {
        "recorded": bool(len(rows)),
        "count": len(rows),
        "time_ns": int(rows["duration_ns"].sum()),
        "union_ns": IntervalUnion(starts, ends).length,
        "in_window_ns": inside,
        "gpu_idle_ns": sum(d["classes"]["profiler"] for d in idle["devices"]),
        "by_name": [
            {"name": str(r["name"]), "count": int(r["size"]), "time_ns": int(r["sum"])}
            for r in by_name.to_dict("records")
        ],
        "largest": [
            {
                "name": None if r["name"] is None else str(r["name"]),
                "pid": None if r["pid"] != r["pid"] or r["pid"] is None else int(r["pid"]),
                "tid": None if r["tid"] != r["tid"] or r["tid"] is None else int(r["tid"]),
                "start_ns": int(r["start_ns"]),
                "duration_ns": int(r["duration_ns"]),
                "in_window": bool(r["end_ns"] > low and r["start_ns"] < high),
            }
            for r in largest.to_dict("records")
        ],
    }
