"""Serving analysis: the engine steps behind a serving load, and its latency traced and untraced.

vLLM names each engine step's NVTX range after what the scheduler put in it,
``execute_context_C(T)_generation_G(T)``: C requests in prefill with T prompt tokens,
G requests in decode with T tokens. Each step's range, projected onto the GPU work its
CUDA calls launched (``nvtx_gpu``), gives per step: its phase, its batch (requests and
tokens), its GPU time and the share of the step the GPU was busy. The client's record
gives the latency the requests saw; both are read here so that a report can put them
side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from llmprof.analysis.metrics import VLLM_STEP, phase_of
from llmprof.common.records import LatencyPercentiles

#: The step phases in the order reports list them; ``empty``: a step that scheduled no request.
STEP_PHASES = ("prefill", "decode", "mixed", "empty")
STEP_COLUMNS = {
    "start_ns": "int64",
    "duration_ns": "int64",  # the range's span, or the GPU work it launched where that ends later
    "gpu_time_ns": "int64",
    "gpu_ops": "int64",
    "context_requests": "int64",
    "context_tokens": "int64",
    "generation_requests": "int64",
    "generation_tokens": "int64",
    "batch_requests": "int64",
    "batch_tokens": "int64",
    "phase": "object",
    "gpu_busy_share": "float64",
}
#: Client latencies reported per serving run, with their names in reports.
LATENCIES = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2EL"))


def engine_steps(extract_dir: Path) -> pd.DataFrame:
    """One row per vLLM engine-step range of an extract folder, in time order (no row when there is none)."""
    columns = ["name", "start_ns", "end_ns", "proj_end_ns", "gpu_time_ns", "gpu_ops"]
    ranges = pq.read_table(extract_dir / "nvtx_gpu.parquet", columns=columns).to_pandas()
    parsed = ranges["name"].astype(str).str.extract(VLLM_STEP).dropna()
    if parsed.empty:
        return pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in STEP_COLUMNS.items()})
    counts = parsed.astype("int64").set_axis(
        ["context_requests", "context_tokens", "generation_requests", "generation_tokens"], axis=1
    )
    steps = pd.concat([ranges.loc[parsed.index, columns[1:]], counts], axis=1)
    end = np.maximum(steps["end_ns"], steps["proj_end_ns"].fillna(steps["end_ns"]))
    steps["duration_ns"] = (end - steps["start_ns"]).astype("int64")
    steps["batch_requests"] = steps["context_requests"] + steps["generation_requests"]
    steps["batch_tokens"] = steps["context_tokens"] + steps["generation_tokens"]
    steps["phase"] = [phase_of(c, g) for c, g in zip(steps["context_requests"], steps["generation_requests"])]
    steps["gpu_busy_share"] = (steps["gpu_time_ns"] / steps["duration_ns"].clip(lower=1)).clip(upper=1.0)
    ordered: pd.DataFrame = steps.sort_values(["start_ns", "batch_tokens"], kind="stable").reset_index(drop=True)
    return ordered[list(STEP_COLUMNS)].astype(STEP_COLUMNS)


@dataclass(frozen=True)
class PhaseSteps:
    """The engine steps of one phase: how many, how large, how long on the GPU, how busy the GPU was."""

    phase: str
    steps: int
    median_batch_requests: float
    max_batch_requests: int
    median_batch_tokens: float
    median_gpu_time_ns: float
    gpu_time_ns: int
    gpu_time_share: float  # of the GPU time of every step
    median_gpu_busy_share: float


def phase_steps(steps: pd.DataFrame) -> list[PhaseSteps]:
    """Per phase present, in :data:`STEP_PHASES` order, the summary of its steps."""
    total = int(steps["gpu_time_ns"].sum())
    found = []
    for phase in STEP_PHASES:
        part = steps[steps["phase"] == phase]
        if part.empty:
            continue
        time_ns = int(part["gpu_time_ns"].sum())
        found.append(
            PhaseSteps(
                phase=phase,
                steps=len(part),
                median_batch_requests=float(part["batch_requests"].median()),
                max_batch_requests=int(part["batch_requests"].max()),
                median_batch_tokens=float(part["batch_tokens"].median()),
                median_gpu_time_ns=float(part["gpu_time_ns"].median()),
                gpu_time_ns=time_ns,
                gpu_time_share=time_ns / total if total else 0.0,
                median_gpu_busy_share=float(part["gpu_busy_share"].median()),
            )
        )
    return found


def mean_batch_requests(steps: pd.DataFrame) -> float | None:
    """Requests per engine step, averaged over the steps that scheduled any (None without step ranges)."""
    busy = steps[steps["batch_requests"] > 0]
    return float(busy["batch_requests"].mean()) if len(busy) else None


def latency_overhead(traced: LatencyPercentiles, untraced: LatencyPercentiles, key: str) -> float | None:
    """How much longer a latency percentile is under nsys: traced / untraced - 1."""
    a, b = traced[key], untraced[key]  # type: ignore[literal-required]
    return a / b - 1 if a is not None and b else None
