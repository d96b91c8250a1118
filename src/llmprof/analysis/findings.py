"""Automated findings: rules over ``metrics.json``, each with its evidence and the next step.

Rules read only the metrics dict, so a finding can always be traced to the
numbers that support it. Thresholds are module constants, named and documented.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Copies into the GPU beyond this suggest model loading inside the capture.
SETUP_H2D_BYTES = 256 * 10**6
#: Allocation calls taking this share of CUDA API time suggest setup inside the capture.
SETUP_ALLOC_SHARE = 0.25
SYNC_SHARE = 0.30
WAITING_SHARE = 0.50
GPU_IDLE_SHARE = 0.20
DOMINANT_SHARE = 0.50
SHORT_KERNEL_NS = 10_000
SHORT_KERNEL_MIN_COUNT = 1_000

NEXT_FOR_FAMILY = {
    "gemm": "GEMM-bound: check that shapes keep tensor cores busy (batch size, padding to multiples of 8/16), "
    "and consider lower precision (FP8) or quantized weights.",
    "attention": "Attention-bound: check the attention backend (FlashAttention 3 on Hopper), KV-cache block size "
    "and sequence lengths; long contexts favour paged/flash kernels.",
    "normalization": "Normalization kernels are memory-bound: fuse them with the residual add or the next GEMM "
    "(torch.compile, fused RMSNorm).",
    "activation": "Activation kernels are memory-bound: fuse them into the GEMM epilogue or with the gate multiply.",
    "elementwise/fused": "Many elementwise kernels: fuse them (torch.compile / Triton) and capture with CUDA graphs.",
    "communication": "Communication-bound: check tensor-parallel size, NVLink topology and overlap of collectives.",
    "memory": "Copy/gather kernels dominate: look for avoidable layout changes and host round trips.",
    "other": "Unclassified kernels dominate: add patterns for them under `categories:` in the config.",
}


@dataclass(frozen=True)
class Finding:
    """One finding: what was seen, the numbers behind it, and what to do next."""

    id: str
    severity: str  # "warning" or "info"
    title: str
    evidence: str
    next_step: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _bytes(value: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms"


def _no_gpu_work(m: dict[str, Any]) -> Finding | None:
    if m["gpu_activity"]["captured"]:
        return None
    api = m["cuda_api"]["count"]
    return Finding(
        "no_gpu_work",
        "warning",
        "No GPU work captured",
        f"0 kernels, 0 copies and 0 memsets in the export; {api:,} CUDA API calls were traced on the host.",
        "Check that the capture range started where the work runs (cudaProfilerStart reached with "
        "--capture-range=cudaProfilerApi), that --trace includes cuda, and that GPU activity can be traced "
        "on this platform (under WSL2 it often is not).",
    )


def _nvtx_absent(m: dict[str, Any]) -> Finding | None:
    if m["nvtx"]["range_count"]:
        return None
    return Finding(
        "nvtx_absent",
        "warning",
        "NVTX ranges absent",
        "The export holds no NVTX push/pop or start/end ranges, so GPU time cannot be attributed to phases.",
        "Wrap warmup, generate and each iteration in NVTX ranges (the `nvtx` package or torch.cuda.nvtx.range) "
        "and trace with --trace=cuda,nvtx.",
    )


def _setup_in_capture(m: dict[str, Any]) -> Finding | None:
    h2d = m["memcpy"]["directions"]["H2D"]["bytes"]
    alloc = m["cuda_api"]["kinds"].get("alloc", {}).get("share", 0.0)
    if h2d < SETUP_H2D_BYTES and alloc < SETUP_ALLOC_SHARE:
        return None
    evidence = []
    if h2d >= SETUP_H2D_BYTES:
        evidence.append(f"{_bytes(h2d)} copied host-to-device")
    if alloc >= SETUP_ALLOC_SHARE:
        evidence.append(f"allocation calls take {_pct(alloc)} of CUDA API time")
    return Finding(
        "setup_in_capture",
        "warning",
        f"Capture includes setup ({'; '.join(evidence)})",
        "Weight loading and allocation show up as large host-to-device copies and cudaMalloc time; "
        "they distort steady-state numbers.",
        "Start the capture after loading and warmup: nsys --capture-range=cudaProfilerApi with "
        "cudaProfilerStart/Stop around the steady-state loop only.",
    )


def _host_sync(m: dict[str, Any]) -> Finding | None:
    share = m["cuda_api"]["sync_share"]
    if share is None or share < SYNC_SHARE:
        return None
    sync = m["cuda_api"]["kinds"]["sync"]
    return Finding(
        "host_blocked_in_sync",
        "warning",
        f"Host blocked in synchronization {_pct(share)} of CUDA API time",
        f"{sync['count']:,} synchronizing calls (stream/event/device synchronize, waits) took {_ms(sync['time_ns'])} "
        f"of {_ms(m['cuda_api']['time_ns'])} in CUDA calls.",
        "Find the syncs in the loop (.item(), .cpu(), .tolist(), torch.cuda.synchronize) and remove or defer them; "
        "use pinned memory and non_blocking copies.",
    )


def _threads_waiting(m: dict[str, Any]) -> Finding | None:
    share = m["osrt"]["waiting_share"]
    if share is None or share < WAITING_SHARE:
        return None
    top = ", ".join(f"{t['name']} {_ms(t['time_ns'])}" for t in m["osrt"]["top"][:3])
    return Finding(
        "cpu_threads_waiting",
        "info",
        f"CPU threads mostly waiting: {_pct(share)} of OS runtime time in waits",
        f"Largest OS runtime calls: {top}.",
        "Helper threads idling in poll/condition waits is normal; if the GPU is also idle, the main thread is "
        "the bottleneck: profile it with --sample=cpu to see where it spends its time.",
    )


def _dominant_family(m: dict[str, Any]) -> Finding | None:
    categories = [c for c in m["kernels"]["categories"] if c["time_ns"] > 0]
    if not categories:
        return None
    top = max(categories, key=lambda c: (c["share"], c["category"]))
    tensor = m["kernels"]["tensor_core_share_of_gemm"]
    detail = (
        f" ({_pct(tensor)} of GEMM time in tensor-core kernels)"
        if top["category"] == "gemm" and tensor is not None
        else ""
    )
    kernel = next((k for k in m["kernels"]["top"] if k["category"] == top["category"]), None)
    evidence = (
        f"{top['count']:,} {top['category']} kernels ran for {_ms(top['time_ns'])} of {_ms(m['kernels']['time_ns'])}"
    )
    if kernel is not None:
        evidence += f"; the largest is {kernel['short_name']} ({_pct(kernel['share'])})."
    severity = "warning" if top["share"] >= DOMINANT_SHARE else "info"
    return Finding(
        "dominant_kernel_family",
        severity,
        f"{top['category'].upper() if top['category'] == 'gemm' else top['category'].capitalize()} kernels "
        f"{_pct(top['share'])} of GPU time{detail}",
        evidence,
        NEXT_FOR_FAMILY[top["category"]],
    )


def _gpu_idle(m: dict[str, Any]) -> Finding | None:
    activity = m["gpu_activity"]
    if not activity["captured"] or activity["idle_fraction"] < GPU_IDLE_SHARE:
        return None
    gaps = [g for d in activity["devices"] for g in d["largest_gaps"]]
    largest = max((g["duration_ns"] for g in gaps), default=0)
    return Finding(
        "gpu_idle",
        "warning",
        f"GPU idle {_pct(activity['idle_fraction'])} of the capture window",
        f"GPU busy {_ms(activity['busy_ns'])} of a {_ms(m['capture_window']['duration_ns'])} window; "
        f"largest gap between GPU operations {_ms(largest)}.",
        "The GPU waits on the host: raise the batch size or concurrency, capture decode steps in CUDA graphs, "
        "and remove host synchronization between steps.",
    )


def _short_kernels(m: dict[str, Any]) -> Finding | None:
    mean, count = m["kernels"]["mean_duration_ns"], m["kernels"]["count"]
    if mean is None or count < SHORT_KERNEL_MIN_COUNT or mean >= SHORT_KERNEL_NS:
        return None
    return Finding(
        "short_kernels",
        "info",
        f"Many short kernels: mean {mean / 1e3:.1f} µs over {count:,} kernels",
        "Kernels this short are dominated by launch overhead unless launched from CUDA graphs.",
        "Fuse small kernels (torch.compile) and keep CUDA graphs enabled (avoid enforce_eager).",
    )


RULES = (
    _no_gpu_work,
    _nvtx_absent,
    _setup_in_capture,
    _host_sync,
    _gpu_idle,
    _dominant_family,
    _short_kernels,
    _threads_waiting,
)


#: Traced throughput this far below untraced makes traced timings unrepresentative.
OVERHEAD_SHARE = 0.10


def profiler_overhead(traced: dict[str, Any], untraced: dict[str, Any]) -> float | None:
    """Relative throughput lost under nsys: 1 - traced tok/s / untraced tok/s."""
    t, u = traced.get("output_tokens_per_s"), untraced.get("output_tokens_per_s")
    return 1 - t / u if t and u else None


def _overhead(traced: dict[str, Any], untraced: dict[str, Any]) -> Finding | None:
    loss = profiler_overhead(traced, untraced)
    if loss is None:
        return None
    severity = "warning" if loss >= OVERHEAD_SHARE else "info"
    return Finding(
        "profiler_overhead",
        severity,
        f"Profiler overhead: {_pct(loss)} of throughput under nsys",
        f"{traced['output_tokens_per_s']:,.0f} output tok/s traced against {untraced['output_tokens_per_s']:,.0f} "
        "untraced, same workload, same machine.",
        "Quote the untraced throughput; read traced kernel times as relative. To lower the overhead, trace less "
        "(drop osrt, --cuda-graph-trace=graph) or capture fewer iterations.",
    )


def findings(
    metrics: dict[str, Any], traced: dict[str, Any] | None = None, untraced: dict[str, Any] | None = None
) -> list[Finding]:
    """Every finding the metrics (and the run records, when given) support, warnings first, in rule order."""
    found = [f for rule in RULES if (f := rule(metrics)) is not None]
    if traced is not None and untraced is not None and (f := _overhead(traced, untraced)) is not None:
        found.append(f)
    return sorted(found, key=lambda f: f.severity != "warning")
