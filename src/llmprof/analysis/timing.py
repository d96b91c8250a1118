"""Iteration timing: the tracer's inflation of an iteration, and the GPU's busy share corrected for it.

Under nsys the host side of every iteration slows down (each CUDA call is
intercepted), so the traced capture window is longer than the workload's own
iteration and the GPU looks idler than it is. The busy share is therefore also
taken against the median latency of the same workload run without nsys: the
GPU work of an iteration is assumed to be the same traced and untraced (the
tracer slows host calls, not kernels). Both shares are kept side by side, with
the basis the findings use and why.
"""

from __future__ import annotations

import math
import statistics

from llmprof.common.records import CaptureMetrics, IterationTiming, LatencySpread, Metrics, RunRecord, ServingRecord

ASSUMPTION = (
    "The GPU work of an iteration is taken to be the same traced and untraced: the tracer slows host calls, "
    "not kernels. With several devices, busy time is the mean over devices."
)
#: Why a share is not given or not corrected, by the fact that prevents it.
NO_UNTRACED = "inflated by the tracer by an unknown amount (no untraced run of the same workload)"
NO_TRACED = "inflated by the tracer by an unknown amount (no traced run record: captured iterations unknown)"
GRAPHS_WHOLE = "kernels inside CUDA graphs are not recorded one by one (--cuda-graph-trace=graph)"


def latency_spread(record: RunRecord | None) -> LatencySpread | None:
    """Median and range of a record's per-iteration latency, or None without a record or iterations."""
    latencies = [i["latency_s"] for i in record["iterations"]] if record is not None else []
    if not latencies:
        return None
    return {"median_s": statistics.median(latencies), "min_s": min(latencies), "max_s": max(latencies)}


def serving(record: RunRecord | None) -> ServingRecord | None:
    """The serving measurements of a run record (None for a record of an offline run, or no record)."""
    return record.get("serving") if record is not None else None


def shown_load(traced: RunRecord | None, untraced: RunRecord | None) -> tuple[ServingRecord, str] | None:
    """The serving load to quote and which it is: the untraced one where there is one, else the traced one."""
    untraced_load, traced_load = serving(untraced), serving(traced)
    if untraced_load is not None:
        return untraced_load, "untraced"
    return (traced_load, "traced") if traced_load is not None else None


def serving_tpot(traced: RunRecord | None, untraced: RunRecord | None) -> tuple[float, float] | None:
    """Median TPOT (ms) traced and untraced of a serving run: its speed per token, which a fixed request rate does
    not hide as it hides throughput and the load's duration. None for offline runs, and where either is missing,
    zero (one output token per request) or not a number."""
    a, b = serving(traced), serving(untraced)
    if a is None or b is None:
        return None
    t, u = a["tpot"]["p50_ms"], b["tpot"]["p50_ms"]
    if not (isinstance(t, (int, float)) and isinstance(u, (int, float))):
        return None
    return (float(t), float(u)) if all(math.isfinite(v) and v > 0 for v in (t, u)) else None


def _slowdown(traced: RunRecord | None, untraced: RunRecord | None) -> tuple[float | None, str]:
    """The tracer's slowdown and what it is of: a serving load's duration is set by its request rate, so a
    serving run's is that of an output token (none without a TPOT to compare); an offline run's, an iteration's."""
    if serving(traced) is not None:
        tpot = serving_tpot(traced, untraced)
        return (None if tpot is None else tpot[0] / tpot[1] - 1), "output token"
    traced_latency, untraced_latency = latency_spread(traced), latency_spread(untraced)
    if traced_latency is None or untraced_latency is None or untraced_latency["median_s"] <= 0:
        return None, "iteration"
    return traced_latency["median_s"] / untraced_latency["median_s"] - 1, "iteration"


def timed_span(timing: IterationTiming) -> str:
    """What the corrected busy share is of: a serving run's whole untraced load, else an untraced iteration."""
    return "load" if timing["overhead_unit"] == "output token" else "iteration"


def cuda_graph_trace(traced: RunRecord | None) -> str | None:
    """The ``--cuda-graph-trace`` value the traced run was captured with (None: no record of its arguments)."""
    nsys = traced.get("nsys") if traced is not None else None
    if nsys is None:
        return None
    arguments = nsys["arguments"]
    for i, argument in enumerate(arguments):
        if argument.startswith("--cuda-graph-trace="):
            return argument.partition("=")[2]
        if argument == "--cuda-graph-trace" and i + 1 < len(arguments):
            return arguments[i + 1]
    return None


def _busy_ns_per_device(metrics: CaptureMetrics) -> tuple[float, int]:
    """Mean busy time over the devices that ran GPU work, and how many did."""
    devices = metrics["gpu_activity"]["devices"]
    if not devices:
        return float(metrics["gpu_activity"]["busy_ns"]), 1
    return statistics.fmean(d["busy_ns"] for d in devices), len(devices)


def iteration_timing(
    metrics: CaptureMetrics, traced: RunRecord | None = None, untraced: RunRecord | None = None
) -> IterationTiming:
    """The raw and, where an untraced run exists, the corrected busy share of one run's iterations."""
    activity = metrics["gpu_activity"]
    busy_ns, devices = _busy_ns_per_device(metrics)
    iterations = (len(traced["iterations"]) or None) if traced is not None else None
    traced_latency, untraced_latency = latency_spread(traced), latency_spread(untraced)
    graphs = cuda_graph_trace(traced)
    measured = activity["captured"] and graphs != "graph"
    per_iteration = busy_ns / iterations if measured and iterations else None
    overhead, unit = _slowdown(traced, untraced)
    corrected = None
    if per_iteration is not None and untraced_latency is not None and untraced_latency["median_s"] > 0:
        corrected = min(1.0, per_iteration / (untraced_latency["median_s"] * 1e9))
    if graphs == "graph":
        basis, note = "none", GRAPHS_WHOLE
    elif not activity["captured"]:
        basis, note = "none", "no GPU work captured"
    elif corrected is not None:
        basis, note = (
            "untraced",
            (
                "busy time in the captured load over the untraced load's duration"
                if unit == "output token"
                else "busy time per captured iteration over the untraced median iteration latency"
            ),
        )
    else:
        basis, note = "traced window", NO_UNTRACED if untraced is None else NO_TRACED
    return {
        "iterations": iterations,
        "devices": devices,
        "busy_ns_per_iteration": per_iteration,
        "traced_latency": traced_latency,
        "untraced_latency": untraced_latency,
        "iteration_overhead": overhead,
        "overhead_unit": unit,
        "busy_share_raw": activity["busy_fraction"] if measured else None,
        "busy_share_corrected": corrected,
        "cuda_graph_trace": graphs,
        "basis": basis,
        "note": note,
        "assumption": ASSUMPTION,
    }


def run_timing(metrics: Metrics, traced: RunRecord | None = None, untraced: RunRecord | None = None) -> IterationTiming:
    """A run's timing: from its records when the traced one is given, else what extraction wrote."""
    if traced is not None:
        return iteration_timing(metrics, traced, untraced)
    return metrics["timing"]
