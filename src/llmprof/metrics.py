"""Headline metrics of one capture, computed from the extracted Parquet tables.

Everything streams: per-batch group-bys over Parquet files, and one ordered
SQLite scan for the GPU busy-time union, so memory stays flat as exports grow.
The result is the JSON-ready dict written to ``metrics.json``; the report
reads only this dict and the tables.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .categories import CATEGORY_ORDER, TENSOR_CORE, WAITING_OSRT, Classifier
from .sqlite_io import Export

TOP_GAPS = 5
TOP_KERNELS = 10
GPU_TABLES = ("kernels", "memcpy", "memset")
HOST_TABLES = ("cuda_api",)


def grouped_sums(path: Path, keys: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Stream a Parquet file and return, per key, the row count and the sum of each value.

    Each batch is aggregated by Arrow's own group-by over dictionary-encoded text keys (the
    codes Parquet stored), and the partial sums are combined by value.
    """
    parts = []
    schema = pq.read_schema(path)
    text_keys = [k for k in keys if pa.types.is_string(schema.field(k).type)]
    parquet = pq.ParquetFile(path, read_dictionary=text_keys)
    aggregations = [(values[0], "count", pc.CountOptions(mode="all")), *((v, "sum") for v in values)]
    for batch in parquet.iter_batches(columns=[*keys, *values], batch_size=1 << 20):
        if batch.num_rows:
            grouped = pa.Table.from_batches([batch]).group_by(list(keys), use_threads=False).aggregate(aggregations)
            parts.append(grouped.to_pandas())
    if not parts:
        return pd.DataFrame(columns=[*keys, "count", *values])
    names = {f"{values[0]}_count": "count", **{f"{v}_sum": v for v in values}}
    frame = pd.concat(parts).rename(columns=names)
    combined = frame.groupby(list(keys), dropna=False, sort=True)[["count", *values]].sum().reset_index()
    return combined


def time_span(stage: Path, names: Iterable[str]) -> tuple[int, int] | None:
    """Earliest start and latest end over tables, read from Parquet column statistics."""
    lo, hi = None, None
    for name in names:
        parquet = pq.ParquetFile(stage / f"{name}.parquet")
        for i in range(parquet.metadata.num_row_groups):
            group = parquet.metadata.row_group(i)
            for j in range(group.num_columns):
                column = group.column(j)
                stats = column.statistics
                if stats is None or not stats.has_min_max:
                    continue
                if column.path_in_schema == "start_ns":
                    lo = stats.min if lo is None else min(lo, stats.min)
                elif column.path_in_schema == "end_ns":
                    hi = stats.max if hi is None else max(hi, stats.max)
    return (int(lo), int(hi)) if lo is not None and hi is not None else None


def capture_window(stage: Path) -> dict[str, Any]:
    """The analysed window: from the first CUDA call or GPU operation to the last one.

    Falls back to NVTX ranges, then OS runtime calls, for captures without CUDA activity.
    """
    for basis, names in (("cuda", (*HOST_TABLES, *GPU_TABLES)), ("nvtx", ("nvtx",)), ("osrt", ("osrt",))):
        span = time_span(stage, names)
        if span is not None:
            return {"basis": basis, "start_ns": span[0], "end_ns": span[1], "duration_ns": span[1] - span[0]}
    return {"basis": "none", "start_ns": 0, "end_ns": 0, "duration_ns": 0}


class _DeviceActivity:
    """Running union of one device's GPU intervals, fed in start order."""

    def __init__(self) -> None:
        self.first_ns: int | None = None
        self.last_end_ns = -(1 << 62)
        self.busy_ns = 0
        self.operations = 0
        self.gaps: list[tuple[int, int]] = []  # min-heap of (duration_ns, start_ns)

    def add(self, starts: np.ndarray, ends: np.ndarray) -> None:
        if self.first_ns is None:
            self.first_ns = int(starts[0])
        covered_until = np.maximum.accumulate(np.concatenate([[self.last_end_ns], ends]))[:-1]
        self.busy_ns += int(np.maximum(0, ends - np.maximum(starts, covered_until)).sum())
        gap = starts - covered_until
        if self.operations == 0:
            gap[0] = 0  # nothing ran before the first operation: not a gap
        for i in np.argsort(-gap, kind="stable")[:TOP_GAPS]:
            if gap[i] <= 0:
                break
            item = (int(gap[i]), int(covered_until[i]))
            if len(self.gaps) < TOP_GAPS:
                heapq.heappush(self.gaps, item)
            elif item > self.gaps[0]:
                heapq.heapreplace(self.gaps, item)
        self.last_end_ns = max(self.last_end_ns, int(ends.max()))
        self.operations += len(starts)


def gpu_activity(stage: Path, window: dict[str, Any]) -> dict[str, Any]:
    """Per device: busy time (union of kernels, copies and memsets), idle share and largest gaps.

    The intervals of each device are read from the extracted tables and sorted by start in
    memory (24 bytes per GPU operation), then merged in one pass.
    """
    columns = ["device_id", "start_ns", "end_ns"]
    parts = [pq.read_table(stage / f"{t}.parquet", columns=columns) for t in GPU_TABLES]
    intervals = pa.concat_tables(parts)
    devices: dict[int, _DeviceActivity] = {}
    if intervals.num_rows:
        device = intervals.column("device_id").to_numpy(zero_copy_only=False)
        start = intervals.column("start_ns").to_numpy(zero_copy_only=False)
        end = intervals.column("end_ns").to_numpy(zero_copy_only=False)
        order = np.lexsort((start, device))
        device, start, end = device[order], start[order], end[order]
        for value in np.unique(device):
            lo, hi = np.searchsorted(device, value, "left"), np.searchsorted(device, value, "right")
            devices[int(value)] = _DeviceActivity()
            devices[int(value)].add(start[lo:hi], end[lo:hi])
    span = max(int(window["duration_ns"]), 1)
    per_device = []
    for device, activity in sorted(devices.items()):
        per_device.append(
            {
                "device_id": device,
                "operations": activity.operations,
                "busy_ns": activity.busy_ns,
                "busy_fraction": activity.busy_ns / span,
                "idle_fraction": 1 - activity.busy_ns / span,
                "largest_gaps": [
                    {"start_ns": start, "duration_ns": duration}
                    for duration, start in sorted(activity.gaps, key=lambda g: (-g[0], g[1]))
                ],
            }
        )
    busy = sum(d["busy_ns"] for d in per_device)
    fraction = busy / (span * len(per_device)) if per_device else 0.0
    return {
        "captured": bool(per_device),
        "devices": per_device,
        "busy_ns": busy,
        "busy_fraction": fraction,
        "idle_fraction": 1 - fraction if per_device else None,
    }


def kernel_metrics(stage: Path, classifier: Classifier) -> dict[str, Any]:
    """GPU time per kernel family and the top kernels by total time."""
    per_name = grouped_sums(stage / "kernels.parquet", ["name", "short_name", "category"], ["duration_ns"])
    total = int(per_name["duration_ns"].sum()) if len(per_name) else 0
    by_category = per_name.groupby("category")[["duration_ns", "count"]].sum() if total else None
    categories = []
    for category in CATEGORY_ORDER:
        time_ns = (
            int(by_category.loc[category, "duration_ns"])
            if by_category is not None and category in by_category.index
            else 0
        )
        count = (
            int(by_category.loc[category, "count"]) if by_category is not None and category in by_category.index else 0
        )
        categories.append(
            {"category": category, "time_ns": time_ns, "count": count, "share": time_ns / total if total else 0.0}
        )
    per_name = per_name.assign(
        tensor_core=[bool(TENSOR_CORE.search(f"{n} {s}")) for n, s in zip(per_name["name"], per_name["short_name"])]
    )
    gemm = per_name[per_name["category"] == "gemm"]
    gemm_ns = int(gemm["duration_ns"].sum())
    top = per_name.sort_values(["duration_ns", "name"], ascending=[False, True]).head(TOP_KERNELS)
    count = int(per_name["count"].sum()) if len(per_name) else 0
    return {
        "count": count,
        "time_ns": total,
        "mean_duration_ns": total / count if count else None,
        "categories": categories,
        "tensor_core_share_of_gemm": int(gemm.loc[gemm["tensor_core"], "duration_ns"].sum()) / gemm_ns
        if gemm_ns
        else None,
        "top": [
            {
                "name": row.name,
                "short_name": row.short_name,
                "category": row.category,
                "time_ns": int(row.duration_ns),
                "count": int(row.count),
                "share": int(row.duration_ns) / total,
                "tensor_core": bool(row.tensor_core),
            }
            for row in top.itertuples(index=False)
        ],
    }


def cuda_api_metrics(stage: Path) -> dict[str, Any]:
    """Host time in CUDA calls, by kind (sync, launch, memcpy, ...)."""
    per_kind = grouped_sums(stage / "cuda_api.parquet", ["kind"], ["duration_ns"])
    total = int(per_kind["duration_ns"].sum()) if len(per_kind) else 0
    kinds = {
        str(row.kind): {"time_ns": int(row.duration_ns), "count": int(row.count), "share": int(row.duration_ns) / total}
        for row in per_kind.sort_values("kind").itertuples(index=False)
    }
    share = lambda kind: kinds.get(kind, {}).get("share", 0.0) if total else None  # noqa: E731
    return {
        "count": int(per_kind["count"].sum()) if len(per_kind) else 0,
        "time_ns": total,
        "kinds": kinds,
        "sync_share": share("sync"),
        "memcpy_share": share("memcpy"),
        "launch_share": (share("launch") or 0.0) + (share("graph") or 0.0) if total else None,
    }


def memcpy_metrics(stage: Path) -> dict[str, Any]:
    """Bytes, time and count of copies per direction (H2D, D2H, D2D, ...)."""
    per_direction = grouped_sums(stage / "memcpy.parquet", ["direction"], ["size_bytes", "duration_ns"])
    directions = {
        str(row.direction): {"bytes": int(row.size_bytes), "time_ns": int(row.duration_ns), "count": int(row.count)}
        for row in per_direction.sort_values("direction").itertuples(index=False)
    }
    for name in ("H2D", "D2H", "D2D"):
        directions.setdefault(name, {"bytes": 0, "time_ns": 0, "count": 0})
    return {"directions": directions, "total_bytes": sum(d["bytes"] for d in directions.values())}


def nvtx_metrics(stage: Path) -> dict[str, Any]:
    """NVTX ranges and the GPU time their CUDA calls launched."""
    ranges = grouped_sums(stage / "nvtx.parquet", ["name", "style"], ["duration_ns"])
    projected = pq.read_table(stage / "nvtx_gpu.parquet").to_pandas()
    gpu = (
        projected.assign(proj_ns=projected["proj_end_ns"] - projected["proj_start_ns"])
        .groupby(["name", "style"])[["proj_ns", "gpu_time_ns", "gpu_ops"]]
        .sum()
        if len(projected)
        else None
    )
    rows = []
    for row in ranges.sort_values(["duration_ns", "name"], ascending=[False, True]).itertuples(index=False):
        key = (row.name, row.style)
        found = gpu is not None and key in gpu.index
        rows.append(
            {
                "name": row.name,
                "style": row.style,
                "instances": int(row.count),
                "range_ns": int(row.duration_ns),
                "gpu_projected_ns": int(gpu.loc[key, "proj_ns"]) if found else 0,
                "gpu_time_ns": int(gpu.loc[key, "gpu_time_ns"]) if found else 0,
                "gpu_ops": int(gpu.loc[key, "gpu_ops"]) if found else 0,
            }
        )
    return {"range_count": int(ranges["count"].sum()) if len(ranges) else 0, "ranges": rows}


#: vLLM's NVTX range per engine step: requests and tokens of context (prefill) and generation (decode).
VLLM_STEP = re.compile(r"execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)")


def step_phase(name: str) -> str | None:
    """prefill, decode or mixed for a vLLM engine-step range name; None for other ranges."""
    match = VLLM_STEP.search(name)
    if match is None:
        return None
    context, generation = int(match.group(1)), int(match.group(3))
    if context and generation:
        return "mixed"
    return "prefill" if context else "decode"


def phase_metrics(stage: Path) -> dict[str, Any]:
    """GPU time of vLLM engine steps by phase (prefill, decode, mixed), from their NVTX ranges."""
    projected = pq.read_table(stage / "nvtx_gpu.parquet", columns=["name", "gpu_time_ns", "gpu_ops"]).to_pandas()
    phases = projected.assign(phase=[step_phase(str(n)) for n in projected["name"]]).dropna(subset=["phase"])
    rows = []
    for phase in ("prefill", "decode", "mixed"):
        part = phases[phases["phase"] == phase]
        rows.append(
            {
                "phase": phase,
                "steps": len(part),
                "gpu_time_ns": int(part["gpu_time_ns"].sum()),
                "gpu_ops": int(part["gpu_ops"].sum()),
            }
        )
    return {"source": "vllm_step_ranges" if len(phases) else None, "phases": rows}


def osrt_metrics(stage: Path) -> dict[str, Any]:
    """OS runtime time and the share of it spent waiting (poll, futex, condition waits, ...)."""
    per_name = grouped_sums(stage / "osrt.parquet", ["name"], ["duration_ns"])
    total = int(per_name["duration_ns"].sum()) if len(per_name) else 0
    waiting = (
        int(per_name.loc[[bool(WAITING_OSRT.search(str(n))) for n in per_name["name"]], "duration_ns"].sum())
        if total
        else 0
    )
    top = per_name.sort_values(["duration_ns", "name"], ascending=[False, True]).head(5)
    return {
        "count": int(per_name["count"].sum()) if len(per_name) else 0,
        "time_ns": total,
        "waiting_share": waiting / total if total else None,
        "top": [
            {"name": r.name, "time_ns": int(r.duration_ns), "count": int(r.count)} for r in top.itertuples(index=False)
        ],
    }


def gpus(stage: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(stage / "gpus.parquet").to_pylist()
    return rows


def compute_metrics(export: Export, stage: Path, classifier: Classifier) -> dict[str, Any]:
    """All headline metrics of one capture (see the module docstring)."""
    metadata = export.metadata()
    window = capture_window(stage)
    return {
        "source": {
            "file": export.path.name,
            "size_bytes": export.path.stat().st_size,
            "nsys_version": metadata.get("EXPORT_PRODUCT_VERSION"),
            "export_schema_version": metadata.get("EXPORT_SCHEMA_VERSION"),
        },
        "capture_window": window,
        "gpus": gpus(stage),
        "gpu_activity": gpu_activity(stage, window),
        "kernels": kernel_metrics(stage, classifier),
        "cuda_api": cuda_api_metrics(stage),
        "memcpy": memcpy_metrics(stage),
        "sync_events": int(pq.ParquetFile(stage / "sync.parquet").metadata.num_rows),
        "nvtx": nvtx_metrics(stage),
        "phases": phase_metrics(stage),
        "osrt": osrt_metrics(stage),
    }
