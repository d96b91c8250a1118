"""Headline metrics of one capture, computed from the extracted Parquet tables.

Everything streams from the Parquet tables: per-batch group-bys, and GPU busy
time from operation starts and ends sorted a time window at a time, so memory
stays flat as exports grow. The result is the :class:`CaptureMetrics` record
that extraction completes into ``metrics.json``; the report reads only that
file and the tables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmprof.analysis.categories import CATEGORY_ORDER, TENSOR_CORE, WAITING_OSRT, Classifier
from llmprof.common.records import (
    ApiKind,
    CaptureMetrics,
    CaptureWindow,
    CopyDirection,
    CudaApiMetrics,
    GpuActivity,
    GpuRecord,
    KernelCategory,
    KernelMetrics,
    MemcpyMetrics,
    NvtxMetrics,
    NvtxRange,
    OsrtMetrics,
    PhaseMetrics,
    PhaseRecord,
)
from llmprof.nsys.export import Export

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
    combined: pd.DataFrame = frame.groupby(list(keys), dropna=False, sort=True)[["count", *values]].sum()
    return combined.reset_index()


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


def capture_window(stage: Path) -> CaptureWindow:
    """The analysed window: from the first CUDA call or GPU operation to the last one.

    Falls back to NVTX ranges, then OS runtime calls, for captures without CUDA activity.
    """
    for basis, names in (("cuda", (*HOST_TABLES, *GPU_TABLES)), ("nvtx", ("nvtx",)), ("osrt", ("osrt",))):
        span = time_span(stage, names)
        if span is not None:
            return {"basis": basis, "start_ns": span[0], "end_ns": span[1], "duration_ns": span[1] - span[0]}
    return {"basis": "none", "start_ns": 0, "end_ns": 0, "duration_ns": 0}


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a small frame as plain dicts, a missing value (NaN) as None."""
    return [{str(k): None if _missing(v) else v for k, v in row.items()} for row in frame.to_dict("records")]


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def kernel_metrics(stage: Path, classifier: Classifier) -> KernelMetrics:
    """GPU time per kernel family and the top kernels by total time."""
    per_name = records(grouped_sums(stage / "kernels.parquet", ["name", "short_name", "category"], ["duration_ns"]))
    total = sum(int(r["duration_ns"]) for r in per_name)
    count = sum(int(r["count"]) for r in per_name)
    categories: list[KernelCategory] = []
    for category in CATEGORY_ORDER:
        rows = [r for r in per_name if r["category"] == category]
        time_ns = sum(int(r["duration_ns"]) for r in rows)
        categories.append(
            {
                "category": category,
                "time_ns": time_ns,
                "count": sum(int(r["count"]) for r in rows),
                "share": time_ns / total if total else 0.0,
            }
        )
    for row in per_name:
        row["tensor_core"] = bool(TENSOR_CORE.search(f"{row['name']} {row['short_name']}"))
    gemm = [r for r in per_name if r["category"] == "gemm"]
    gemm_ns = sum(int(r["duration_ns"]) for r in gemm)
    tensor_ns = sum(int(r["duration_ns"]) for r in gemm if r["tensor_core"])
    top = sorted(per_name, key=lambda r: (-int(r["duration_ns"]), str(r["name"])))[:TOP_KERNELS]
    return {
        "count": count,
        "time_ns": total,
        "mean_duration_ns": total / count if count else None,
        "categories": categories,
        "tensor_core_share_of_gemm": tensor_ns / gemm_ns if gemm_ns else None,
        "top": [
            {
                "name": row["name"],
                "short_name": row["short_name"],
                "category": row["category"],
                "time_ns": int(row["duration_ns"]),
                "count": int(row["count"]),
                "share": int(row["duration_ns"]) / total,
                "tensor_core": row["tensor_core"],
            }
            for row in top
        ],
    }


def _by_key(path: Path, key: str, values: list[str]) -> dict[str, dict[str, int]]:
    """Per value of ``key``: the row count and the sum of each value, keys sorted."""
    rows = records(grouped_sums(path, [key], values))
    return {
        str(r[key]): {"count": int(r["count"]), **{v: int(r[v]) for v in values}}
        for r in sorted(rows, key=lambda r: str(r[key]))
    }


def cuda_api_metrics(stage: Path) -> CudaApiMetrics:
    """Host time in CUDA calls, by kind (sync, launch, memcpy, ...)."""
    per_kind = _by_key(stage / "cuda_api.parquet", "kind", ["duration_ns"])
    total = sum(k["duration_ns"] for k in per_kind.values())
    kinds: dict[str, ApiKind] = {
        kind: {"time_ns": k["duration_ns"], "count": k["count"], "share": k["duration_ns"] / total}
        for kind, k in per_kind.items()
    }

    def share(kind: str) -> float | None:
        return kinds[kind]["share"] if kind in kinds else (0.0 if total else None)

    return {
        "count": sum(k["count"] for k in per_kind.values()),
        "time_ns": total,
        "kinds": kinds,
        "sync_share": share("sync"),
        "memcpy_share": share("memcpy"),
        "launch_share": (share("launch") or 0.0) + (share("graph") or 0.0) if total else None,
    }


def memcpy_metrics(stage: Path) -> MemcpyMetrics:
    """Bytes, time and count of copies per direction (H2D, D2H, D2D, ...)."""
    per_direction = _by_key(stage / "memcpy.parquet", "direction", ["size_bytes", "duration_ns"])
    directions: dict[str, CopyDirection] = {
        name: {"bytes": d["size_bytes"], "time_ns": d["duration_ns"], "count": d["count"]}
        for name, d in per_direction.items()
    }
    for name in ("H2D", "D2H", "D2D"):
        directions.setdefault(name, {"bytes": 0, "time_ns": 0, "count": 0})
    return {"directions": directions, "total_bytes": sum(d["bytes"] for d in directions.values())}


def nvtx_metrics(stage: Path) -> NvtxMetrics:
    """NVTX ranges and the GPU time their CUDA calls launched."""
    ranges = records(grouped_sums(stage / "nvtx.parquet", ["name", "style"], ["duration_ns"]))
    gpu: dict[tuple[str, str], dict[str, int]] = {}
    for row in pq.read_table(stage / "nvtx_gpu.parquet").to_pylist():
        entry = gpu.setdefault((row["name"], row["style"]), {"proj_ns": 0, "gpu_time_ns": 0, "gpu_ops": 0})
        entry["proj_ns"] += row["proj_end_ns"] - row["proj_start_ns"]
        entry["gpu_time_ns"] += row["gpu_time_ns"]
        entry["gpu_ops"] += row["gpu_ops"]
    rows: list[NvtxRange] = []
    for row in sorted(ranges, key=lambda r: (-int(r["duration_ns"]), str(r["name"]))):
        found = gpu.get((row["name"], row["style"]), {"proj_ns": 0, "gpu_time_ns": 0, "gpu_ops": 0})
        rows.append(
            {
                "name": row["name"],
                "style": row["style"],
                "instances": int(row["count"]),
                "range_ns": int(row["duration_ns"]),
                "gpu_projected_ns": found["proj_ns"],
                "gpu_time_ns": found["gpu_time_ns"],
                "gpu_ops": found["gpu_ops"],
            }
        )
    return {"range_count": sum(int(r["count"]) for r in ranges), "ranges": rows}


#: vLLM's NVTX range per engine step: requests and tokens of context (prefill) and generation (decode).
VLLM_STEP = re.compile(r"execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)")


def phase_of(context_requests: int, generation_requests: int) -> str:
    """An engine step's phase from its requests: prefill, decode, mixed, or empty when it scheduled none."""
    if context_requests and generation_requests:
        return "mixed"
    if context_requests:
        return "prefill"
    return "decode" if generation_requests else "empty"


def step_phase(name: str) -> str | None:
    """prefill, decode or mixed for a vLLM engine-step range name; None for other ranges. The GPU time of a step
    that scheduled no request is filed under decode here, as metrics.json has always filed it."""
    match = VLLM_STEP.search(name)
    if match is None:
        return None
    phase = phase_of(int(match.group(1)), int(match.group(3)))
    return "decode" if phase == "empty" else phase


def phase_metrics(stage: Path) -> PhaseMetrics:
    """GPU time of vLLM engine steps by phase (prefill, decode, mixed), from their NVTX ranges."""
    projected = pq.read_table(stage / "nvtx_gpu.parquet", columns=["name", "gpu_time_ns", "gpu_ops"]).to_pandas()
    phases = projected.assign(phase=[step_phase(str(n)) for n in projected["name"]]).dropna(subset=["phase"])
    rows: list[PhaseRecord] = []
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


def osrt_metrics(stage: Path) -> OsrtMetrics:
    """OS runtime time and the share of it spent waiting (poll, futex, condition waits, ...)."""
    per_name = _by_key(stage / "osrt.parquet", "name", ["duration_ns"])
    total = sum(r["duration_ns"] for r in per_name.values())
    waiting = sum(r["duration_ns"] for name, r in per_name.items() if WAITING_OSRT.search(name))
    top = sorted(per_name.items(), key=lambda item: (-item[1]["duration_ns"], item[0]))[:5]
    return {
        "count": sum(r["count"] for r in per_name.values()),
        "time_ns": total,
        "waiting_share": waiting / total if total else None,
        "top": [{"name": name, "time_ns": r["duration_ns"], "count": r["count"]} for name, r in top],
    }


def gpus(stage: Path) -> list[GpuRecord]:
    """The capturing machine's GPUs, as extraction wrote them."""
    return cast(list[GpuRecord], pq.read_table(stage / "gpus.parquet").to_pylist())


def compute_metrics(export: Export, stage: Path, classifier: Classifier, activity: GpuActivity) -> CaptureMetrics:
    """All headline metrics of one capture (see the module docstring).

    ``activity``: :func:`llmprof.analysis.busy.gpu_time`'s (extraction runs it beside the summaries, as soon as
    the GPU tables are written).
    """
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
        "gpu_activity": activity,
        "kernels": kernel_metrics(stage, classifier),
        "cuda_api": cuda_api_metrics(stage),
        "memcpy": memcpy_metrics(stage),
        "sync_events": int(pq.ParquetFile(stage / "sync.parquet").metadata.num_rows),
        "nvtx": nvtx_metrics(stage),
        "phases": phase_metrics(stage),
        "osrt": osrt_metrics(stage),
    }
