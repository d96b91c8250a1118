"""Projection of NVTX ranges onto the GPU work launched inside them.

A CUDA call belongs to a range when it starts and ends inside the range on the
range's thread. The range's projection spans from the first start to the last
end of the GPU operations (kernels, memcpy, memset) those calls launched. This
is how GPU time is attributed to phases such as ``warmup``, ``generate`` or one
engine step, and it is what ``nsys stats -r nvtx_gpu_proj_sum`` summarises.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .sqlite_io import Export, sqlite_round

GPU_OP_TABLES = ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY", "CUPTI_ACTIVITY_KIND_MEMSET")
RUNTIME = "CUPTI_ACTIVITY_KIND_RUNTIME"
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


def _launches(export: Export) -> pd.DataFrame:
    """CUDA calls that launched GPU work: thread, call span, and the span, count and time of that work."""
    columns = ["global_tid", "api_start", "api_end", "gpu_start", "gpu_end", "gpu_ops", "gpu_time"]
    tables = [t for t in GPU_OP_TABLES if t in export.columns]
    if not tables or RUNTIME not in export.columns:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in columns})
    ops = " UNION ALL ".join(f'SELECT correlationId, globalPid, start, "end" FROM {t}' for t in tables)
    sql = f"""
        WITH gpu AS MATERIALIZED (
            SELECT correlationId, globalPid, min(start) AS gpu_start, max("end") AS gpu_end,
                   count(*) AS gpu_ops, sum("end" - start) AS gpu_time
            FROM ({ops}) GROUP BY correlationId, globalPid
        ),
        threads AS MATERIALIZED (SELECT DISTINCT globalTid FROM NVTX_EVENTS)
        -- CROSS JOIN keeps the calls as the outer loop, so g is searched through an index
        SELECT r.globalTid, r.start, r."end", g.gpu_start, g.gpu_end, g.gpu_ops, g.gpu_time
        FROM {RUNTIME} r
        CROSS JOIN gpu g ON g.correlationId = r.correlationId AND g.globalPid = (r.globalTid & 0xFFFFFFFFFF000000)
        WHERE r.globalTid IN threads
        ORDER BY r.globalTid, r.start
    """
    frame: pd.DataFrame = export.arrow_table(sql).to_pandas()
    frame.columns = pd.Index(columns)
    return frame


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


def _nesting(ranges: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Parent index (or -1) and depth of every range; ranges nest per thread only."""
    parent = np.full(len(ranges), -1, dtype="int64")
    for _, group in ranges.groupby("global_tid", sort=False):
        idx = group.index.to_numpy()
        start = group["start_ns"].to_numpy()
        end = group["end_ns"].to_numpy()
        order = np.lexsort((np.arange(len(idx)), -end, start))
        local = _parents_by_stack(start, end, order)
        if local is None:
            local = _parents_by_search(start, end)
        parent[idx] = np.where(local >= 0, idx[np.maximum(local, 0)], -1)
    level = np.zeros(len(ranges), dtype="int64")
    for i in range(len(ranges)):
        depth, node = 0, parent[i]
        while node >= 0 and depth <= len(ranges):
            depth, node = depth + 1, parent[node]
        level[i] = depth
    return parent, level


def project_ranges(export: Export, range_sql: str) -> pd.DataFrame:
    """One row per NVTX range that launched GPU work, with its range and projected times.

    Args:
        export: the open export.
        range_sql: SQL yielding name, style, start, end and global_tid of each range.

    Returns:
        Columns of ``PROJECTED_COLUMNS``: times in ns; ``cuda_calls`` counts launching calls
        (a CUDA graph launch counts once), ``gpu_ops`` the operations they launched and
        ``gpu_time_ns`` their summed duration; ``level`` is the nesting depth and
        ``children`` the number of directly nested ranges that launched GPU work.
        Computed once per export and range query; later calls get a copy.
    """
    key = f"project_ranges:{range_sql}"
    if key not in export.memo:
        export.memo[key] = _project_ranges(export, range_sql)
    return export.memo[key].copy()  # type: ignore[no-any-return]


def _project_ranges(export: Export, range_sql: str) -> pd.DataFrame:
    ranges = pd.DataFrame(
        export.query(f'SELECT name, style, start, "end", global_tid FROM ({range_sql})'),
        columns=["name", "style", "start_ns", "end_ns", "global_tid"],
    )
    if ranges.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in PROJECTED_COLUMNS})
    parent, level = _nesting(ranges)
    proj_start = np.full(len(ranges), -1, dtype="int64")
    proj_end = np.full(len(ranges), -1, dtype="int64")
    cuda_calls = np.zeros(len(ranges), dtype="int64")
    gpu_ops = np.zeros(len(ranges), dtype="int64")
    gpu_time = np.zeros(len(ranges), dtype="int64")
    launches = _launches(export)
    for tid, calls in launches.groupby("global_tid", sort=False):
        api_start = calls["api_start"].to_numpy()
        api_end = calls["api_end"].to_numpy()
        gpu_start = calls["gpu_start"].to_numpy()
        gpu_end = calls["gpu_end"].to_numpy()
        ops = calls["gpu_ops"].to_numpy()
        busy = calls["gpu_time"].to_numpy()
        idx = np.flatnonzero((ranges["global_tid"] == tid).to_numpy())
        starts = ranges["start_ns"].to_numpy()[idx]
        ends = ranges["end_ns"].to_numpy()[idx]
        lo = np.searchsorted(api_start, starts, side="left")
        hi = np.searchsorted(api_start, ends, side="right")
        for i, a, b, range_end in zip(idx, lo, hi, ends):
            inside = np.flatnonzero(api_end[a:b] <= range_end) + a
            if len(inside):
                proj_start[i] = gpu_start[inside].min()
                proj_end[i] = gpu_end[inside].max()
                cuda_calls[i] = len(inside)
                gpu_ops[i] = ops[inside].sum()
                gpu_time[i] = busy[inside].sum()
    has_work = cuda_calls > 0
    children = np.bincount(parent[has_work & (parent >= 0)], minlength=len(ranges))
    projected = ranges.assign(
        proj_start_ns=proj_start,
        proj_end_ns=proj_end,
        cuda_calls=cuda_calls,
        gpu_ops=gpu_ops,
        gpu_time_ns=gpu_time,
        level=level,
        children=children,
    )
    return projected[has_work][PROJECTED_COLUMNS].reset_index(drop=True)


def nvtx_gpu_projection_summary(export: Export, range_sql: str) -> pd.DataFrame:
    """Per range name and style: projected GPU time, range time and launch counts."""
    projected = project_ranges(export, range_sql)
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
