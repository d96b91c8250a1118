"""Automated findings: rules over a run's metrics and records, each with its evidence and the next step.

Rules are written the way ``nsys analyze`` rules are: one small function per
rule, comparing the records with named threshold constants, registered with its
id, a description and its thresholds in :data:`RULES`, which :func:`findings`
runs in order. A rule reads only the records it is given, so every finding can
be traced to the numbers that support it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from llmprof.analysis.expert import GAP_MS, UTIL_THRESHOLD_PCT
from llmprof.analysis.idle import CLASS_WORDS
from llmprof.analysis.iterations import MIN_STEADY_STEPS, no_step_reasons
from llmprof.analysis.timing import GRAPHS_WHOLE, run_timing, serving, serving_tpot, shown_load, timed_span
from llmprof.common.records import FindingRecord, IterationTiming, Metrics, Rank, RunRecord

#: What a rule reads: a run's records (:class:`RunResults`) or a study's table.
Subject = TypeVar("Subject")

#: Copies into the GPU beyond this suggest model loading inside the capture.
SETUP_H2D_BYTES = 256 * 10**6
#: Allocation calls taking this share of CUDA API time suggest setup inside the capture.
SETUP_ALLOC_SHARE = 0.25
#: Synchronizing calls taking this share of CUDA API time mean the host waits on the GPU.
SYNC_SHARE = 0.30
#: OS runtime time spent in waits (poll, futex, condition waits) from which threads count as mostly waiting.
WAITING_SHARE = 0.50
#: Idle share of the capture window from which the GPU counts as waiting on the host.
GPU_IDLE_SHARE = 0.20
#: Share of GPU time from which the largest kernel family is a warning rather than information.
DOMINANT_SHARE = 0.50
#: Mean kernel duration below which kernels count as short (launch overhead dominates) ...
SHORT_KERNEL_NS = 10_000
#: ... when at least this many kernels ran.
SHORT_KERNEL_MIN_COUNT = 1_000
#: Traced throughput this far below untraced makes traced timings unrepresentative.
OVERHEAD_SHARE = 0.10
#: Share of the capture window a GPU spends running copies or memsets with no kernel beside them, from which
#: its copy engines, not its SMs, account for its busy time.
COPY_ONLY_SHARE = 0.50
#: Share of host-to-device and device-to-host bytes copied from pageable host memory from which the copies
#: count as staged by the host CPU.
PAGEABLE_SHARE = 0.50
#: Share of a GPU's idle time given to one host-side class from which the idle analysis names a dominant cause.
IDLE_CAUSE_SHARE = 0.50
#: Share of the capture window covered by the profiler's own work from which it is a finding.
PROFILER_WINDOW_SHARE = 0.01
#: A step's host side (launch calls and the time between them) this far above its GPU and communication
#: time, as a share of the host side, makes steps launch-bound.
LAUNCH_BOUND_MARGIN = 0.10
#: Kernels launched outside CUDA graphs named by the launch-bound finding.
NAMED_LAUNCHES = 5
#: A serving load's p99 time to first token this many times its median means requests queue before prefill.
TTFT_TAIL_RATIO = 3.0

NEXT_FOR_FAMILY = {
    "gemm": "GEMM-bound: check that shapes keep tensor cores busy (batch size, padding to multiples of 8/16), "
    "and consider lower precision (FP8) or quantized weights.",
    "attention": "Attention-bound: check the attention backend (FlashAttention 3 on Hopper), KV-cache block size "
    "and sequence lengths; long contexts favour paged/flash kernels.",
    "normalization": "Normalization kernels are memory-bound: fuse them with the residual add or the next GEMM "
    "(torch.compile, fused RMSNorm).",
    "activation": "Activation kernels are memory-bound: fuse them into the GEMM epilogue or with the gate multiply.",
    "elementwise/fused": "Many elementwise kernels: fuse them (torch.compile / Triton) and capture with CUDA graphs.",
    "communication": "Collectives dominate: the collectives finding says whether ranks wait for each other (skew) "
    "or move data (bandwidth); for bandwidth, check tensor-parallel size, NVLink topology and overlap with compute.",
    "memory": "Copy/gather kernels dominate: look for avoidable layout changes and host round trips.",
    "other": "Unclassified kernels dominate: add patterns for them under `categories:` in the config.",
}


class Observation(NamedTuple):
    """What a rule saw: how serious it is, a title, the numbers behind it and what to do next.

    ``numbers`` holds the values the rule compared with its thresholds (units in the keys), so a
    reader can check the finding without re-deriving them; ``confidence`` says how directly the
    capture supports it: ``high`` when measured, ``medium`` when inferred from traced timings the
    tracer may distort, ``low`` when the data needed to be sure is missing.
    """

    severity: str  # warning or info
    title: str
    evidence: str
    next_step: str
    numbers: Mapping[str, float | int | str] = {}
    confidence: str = "high"


@dataclass(frozen=True)
class Finding:
    """One finding: the rule that made it, what was seen, the numbers behind it, and what to do next."""

    id: str
    severity: str  # "warning" or "info"
    title: str
    evidence: str
    next_step: str
    numbers: Mapping[str, float | int | str] = field(default_factory=dict)
    confidence: str = "high"
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> FindingRecord:
        return {
            "id": self.id,
            "severity": self.severity,
            "title": self.title,
            "evidence": self.evidence,
            "next_step": self.next_step,
            "numbers": dict(sorted(self.numbers.items())),
            "thresholds": dict(sorted(self.thresholds.items())),
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class Rule(Generic[Subject]):
    """One rule: the id of its findings, what it looks for, the thresholds it compares with, and its check.

    The check yields an observation for each finding it supports (most rules: at most one).
    """

    id: str
    description: str
    thresholds: Mapping[str, float]
    check: Callable[[Subject], Iterable[Observation]]

    def apply(self, subject: Subject) -> list[Finding]:
        return [Finding(self.id, *seen, thresholds=self.thresholds) for seen in self.check(subject)]


def run_rules(rules: Iterable[Rule[Subject]], subject: Subject) -> list[Finding]:
    """Every finding the rules support, warnings first, otherwise in rule order."""
    found = [finding for rule in rules for finding in rule.apply(subject)]
    return sorted(found, key=lambda f: f.severity != "warning")


class RunResults(NamedTuple):
    """What the rules of one run read: its metrics and, when given, its traced and untraced run records."""

    metrics: Metrics
    traced: RunRecord | None = None
    untraced: RunRecord | None = None


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _bytes(value: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms"


def no_gpu_work(run: RunResults) -> Iterator[Observation]:
    m = run.metrics
    if m["gpu_activity"]["captured"]:
        return
    yield Observation(
        "warning",
        "No GPU work captured",
        f"0 kernels, 0 copies and 0 memsets in the export; {m['cuda_api']['count']:,} CUDA API calls were traced "
        "on the host.",
        "Check that the capture range started where the work runs (cudaProfilerStart reached with "
        "--capture-range=cudaProfilerApi), that --trace includes cuda, and that GPU activity can be traced "
        "on this platform (under WSL2 it often is not).",
        {"kernels": 0, "cuda_api_calls": m["cuda_api"]["count"]},
    )


def nvtx_absent(run: RunResults) -> Iterator[Observation]:
    if run.metrics["nvtx"]["range_count"]:
        return
    yield Observation(
        "warning",
        "NVTX ranges absent",
        "The export holds no NVTX push/pop or start/end ranges, so GPU time cannot be attributed to phases.",
        "Wrap warmup, generate and each iteration in NVTX ranges (the `nvtx` package or torch.cuda.nvtx.range) "
        "and trace with --trace=cuda,nvtx.",
        {"nvtx_ranges": 0},
    )


def setup_in_capture(run: RunResults) -> Iterator[Observation]:
    m = run.metrics
    h2d = m["memcpy"]["directions"]["H2D"]["bytes"]
    kinds = m["cuda_api"]["kinds"]
    alloc = kinds["alloc"]["share"] if "alloc" in kinds else 0.0
    seen = []
    if h2d >= SETUP_H2D_BYTES:
        seen.append(f"{_bytes(h2d)} copied host-to-device")
    if alloc >= SETUP_ALLOC_SHARE:
        seen.append(f"allocation calls take {pct(alloc)} of CUDA API time")
    if not seen:
        return
    yield Observation(
        "warning",
        f"Capture includes setup ({'; '.join(seen)})",
        "Weight loading and allocation show up as large host-to-device copies and cudaMalloc time; "
        "they distort steady-state numbers.",
        "Start the capture after loading and warmup: nsys --capture-range=cudaProfilerApi with "
        "cudaProfilerStart/Stop around the steady-state loop only.",
        {"h2d_bytes": h2d, "alloc_share": alloc},
    )


def host_blocked_in_sync(run: RunResults) -> Iterator[Observation]:
    api = run.metrics["cuda_api"]
    share = api["sync_share"]
    if share is None or share < SYNC_SHARE:
        return
    sync = api["kinds"]["sync"]
    yield Observation(
        "warning",
        f"Host blocked in synchronization {pct(share)} of CUDA API time",
        f"{sync['count']:,} synchronizing calls (stream/event/device synchronize, waits) took {_ms(sync['time_ns'])} "
        f"of {_ms(api['time_ns'])} in CUDA calls.",
        "Find the syncs in the loop (.item(), .cpu(), .tolist(), torch.cuda.synchronize) and remove or defer them; "
        "use pinned memory and non_blocking copies.",
        {"sync_share": share, "sync_ns": sync["time_ns"], "cuda_api_ns": api["time_ns"], "sync_calls": sync["count"]},
        "medium",
    )


def _graphs_whole(run: RunResults) -> bool:
    """Whether the capture recorded CUDA graphs whole, so kernels inside them are not among the kernels."""
    return run_timing(run.metrics, run.traced, run.untraced)["cuda_graph_trace"] == "graph"


def _not_measured(what: str) -> Observation:
    """What a kernel-level rule says instead of a number when CUDA graphs were traced whole."""
    return Observation(
        "info",
        f"{what} not measured: {GRAPHS_WHOLE.partition(' (')[0]}",
        f"The capture was made with --cuda-graph-trace=graph: {GRAPHS_WHOLE.partition(' (')[0]}, so the "
        "kernels table holds only the work launched outside graphs.",
        "Capture again with --cuda-graph-trace=node (nsys.cuda_graph_trace: node) to see kernels inside graphs.",
        {"cuda_graph_trace": "graph"},
        "low",
    )


def _inflation(timing: IterationTiming) -> str:
    """How much the tracer stretched the window the raw share is of: an iteration, or a serving run's whole load
    (whose length its request rate mostly sets, so not by the per-token slowdown)."""
    if timed_span(timing) == "iteration":
        overhead = timing["iteration_overhead"]
        return f"inflated by the tracer by {'an unknown amount' if overhead is None else pct(overhead)} per iteration"
    traced, untraced = timing["traced_latency"], timing["untraced_latency"]
    if traced is None or untraced is None or untraced["median_s"] <= 0:
        return "with a traced load of unknown length against the untraced one"
    return f"with the traced load {pct(traced['median_s'] / untraced['median_s'] - 1)} longer than the untraced one"


def _idle_evidence(timing: IterationTiming, raw_idle: float, untraced_s: float, largest_ns: int) -> str:
    """The corrected idle share's numbers: the raw share, busy per iteration, the untraced latency, the assumption."""
    span = timed_span(timing)
    return (
        f"Raw {pct(raw_idle)} idle of the traced window (the profiler's own work left out), {_inflation(timing)}. "
        f"GPU busy {_ms(timing['busy_ns_per_iteration'] or 0)} per captured {span} ({timing['iterations']} captured) "
        f"against an untraced median {span} of {_ms(untraced_s * 1e9)}; largest gap between GPU operations "
        f"{_ms(largest_ns)}. {timing['assumption']}"
    )


def _idle_without_profiler(m: Metrics) -> float | None:
    """The idle share of the capture window, less the GPU idle time the profiler's own work covers."""
    activity, window = m["gpu_activity"], m["capture_window"]["duration_ns"]
    if activity["idle_fraction"] is None:
        return None
    devices = max(len(activity["devices"]), 1)
    return activity["idle_fraction"] - m["profiler"]["gpu_idle_ns"] / max(window * devices, 1)


def gpu_idle(run: RunResults) -> Iterator[Observation]:
    m = run.metrics
    activity = m["gpu_activity"]
    if _graphs_whole(run):
        yield _not_measured("GPU idle share")
        return
    timing = run_timing(m, run.traced, run.untraced)
    raw_idle, corrected = _idle_without_profiler(m), timing["busy_share_corrected"]
    idle = raw_idle if corrected is None else 1 - corrected
    if not activity["captured"] or raw_idle is None or idle is None or idle < GPU_IDLE_SHARE:
        return
    largest = max((g["duration_ns"] for d in activity["devices"] for g in d["largest_gaps"]), default=0)
    untraced = timing["untraced_latency"]
    if corrected is not None and untraced is not None:
        title = f"GPU idle {pct(idle)} of an untraced {timed_span(timing)}"
        evidence = _idle_evidence(timing, raw_idle, untraced["median_s"], largest)
    else:
        title = f"GPU idle {pct(idle)} of the capture window"
        evidence = (
            f"GPU busy {_ms(activity['busy_ns'])} of a {_ms(m['capture_window']['duration_ns'])} window"
            + (
                f", {_ms(m['profiler']['gpu_idle_ns'])} of profiler work not counted as idle"
                if m["profiler"]["gpu_idle_ns"]
                else ""
            )
            + f"; largest gap between GPU operations {_ms(largest)}. The raw share is {timing['note']}."
        )
    yield Observation(
        "warning",
        title,
        evidence,
        "The GPU waits on the host: raise the batch size or concurrency, capture decode steps in CUDA graphs, "
        "and remove host synchronization between steps.",
        {"idle_share": idle, "raw_idle_share": raw_idle, "busy_ns": activity["busy_ns"], "largest_gap_ns": largest},
        "high" if corrected is not None else "medium",
    )


def dominant_kernel_family(run: RunResults) -> Iterator[Observation]:
    kernels = run.metrics["kernels"]
    if _graphs_whole(run):
        yield _not_measured("Kernel families")
        return
    categories = [c for c in kernels["categories"] if c["time_ns"] > 0]
    if not categories:
        return
    top = max(categories, key=lambda c: (c["share"], c["category"]))
    family = top["category"]
    tensor = kernels["tensor_core_share_of_gemm"]
    detail = f" ({pct(tensor)} of GEMM time in tensor-core kernels)" if family == "gemm" and tensor is not None else ""
    evidence = f"{top['count']:,} {family} kernels ran for {_ms(top['time_ns'])} of {_ms(kernels['time_ns'])}"
    largest = next((k for k in kernels["top"] if k["category"] == family), None)
    if largest is not None:
        evidence += f"; the largest is {largest['short_name']} ({pct(largest['share'])})."
    name = family.upper() if family == "gemm" else family.capitalize()
    yield Observation(
        "warning" if top["share"] >= DOMINANT_SHARE else "info",
        f"{name} kernels {pct(top['share'])} of GPU time{detail}",
        evidence,
        NEXT_FOR_FAMILY[family],
        {"category": family, "share": top["share"], "time_ns": top["time_ns"], "kernel_time_ns": kernels["time_ns"]},
    )


def short_kernels(run: RunResults) -> Iterator[Observation]:
    mean, count = run.metrics["kernels"]["mean_duration_ns"], run.metrics["kernels"]["count"]
    if _graphs_whole(run):
        yield _not_measured("Kernel durations")
        return
    if mean is None or count < SHORT_KERNEL_MIN_COUNT or mean >= SHORT_KERNEL_NS:
        return
    yield Observation(
        "info",
        f"Many short kernels: mean {mean / 1e3:.1f} µs over {count:,} kernels",
        "Kernels this short are dominated by launch overhead unless launched from CUDA graphs.",
        "Fuse small kernels (torch.compile) and keep CUDA graphs enabled (avoid enforce_eager).",
        {"mean_ns": mean, "count": count},
        "medium",
    )


def cpu_threads_waiting(run: RunResults) -> Iterator[Observation]:
    osrt = run.metrics["osrt"]
    share = osrt["waiting_share"]
    if share is None or share < WAITING_SHARE:
        return
    top = ", ".join(f"{t['name']} {_ms(t['time_ns'])}" for t in osrt["top"][:3])
    yield Observation(
        "info",
        f"CPU threads mostly waiting: {pct(share)} of OS runtime time in waits",
        f"Largest OS runtime calls: {top}.",
        "Helper threads idling in poll/condition waits is normal; if the GPU is also idle, the main thread is "
        "the bottleneck: profile it with --sample=process-tree (CPU sampling with backtraces) to see where it "
        "spends its time.",
        {"waiting_share": share, "osrt_ns": osrt["time_ns"]},
    )


#: Share of a rank's collective time spent waiting for one other rank that makes skew a finding.
SKEW_WAIT_SHARE = 0.25
#: Domains of NVTX ranges that libraries emit on their own; such ranges do not mark a workload's phases.
LIBRARY_DOMAINS = ("NCCL", "CCCL", "cuBLAS", "cuBLASLt", "cuDNN", "CUTLASS", "NVSHMEM", "cuFFT", "cuSPARSE", "Thrust")


def rank_label(rank: Rank | None) -> str:
    """How findings and reports name a rank: its GPU, and its process where known."""
    if rank is None:
        return "GPU ?"
    return f"GPU {rank['device_id']}" + (f" (pid {rank['pid']})" if rank["pid"] is not None else "")


def collective_balance(run: RunResults) -> Iterator[Observation]:
    """Skew (a rank waits inside collectives for a late one) or transfer-bound collectives, never confused."""
    verdict = run.metrics["multi_gpu"]["verdict"]
    matched = verdict["transfer_ns"] + verdict["wait_ns"]
    if verdict["verdict"] == "transfer" and verdict["transfer_share"] is not None:
        yield Observation(
            "info",
            f"Collectives move data most of their time: transfer {pct(verdict['transfer_share'])} of collective time",
            f"Matched across ranks, the fastest rank's time (transfer) is {_ms(verdict['transfer_ns'])} of "
            f"{_ms(matched)}; the rest is ranks waiting for each other.",
            "Communication-bound: check tensor-parallel size, NVLink topology and overlap of collectives with compute.",
            {"transfer_share": verdict["transfer_share"], "transfer_ns": verdict["transfer_ns"], "matched_ns": matched},
        )
    own = verdict["waiting_collective_ns"]
    if verdict["verdict"] != "skew" or not own or verdict["pair_wait_ns"] / own < SKEW_WAIT_SHARE:
        return
    waiting, straggler = rank_label(verdict["waiting"]), rank_label(verdict["straggler"])
    share = verdict["pair_wait_ns"] / own
    transfer = pct(verdict["transfer_share"]) if verdict["transfer_share"] is not None else "n/a"
    yield Observation(
        "warning",
        f"{waiting} waits for {straggler} in collectives: {pct(share)} of its collective time",
        f"{_ms(verdict['pair_wait_ns'])} of {waiting}'s {_ms(own)} in {verdict['kind']} is spent waiting for "
        f"{straggler} to arrive ({verdict['pair_instances']:,} instances). Transfer (the fastest rank's time) is "
        f"{transfer} of {_ms(matched)} matched collective time: this is skew, not bandwidth.",
        f"Find why {straggler} arrives late: compare what runs before each collective on that rank (load imbalance, "
        "host delays, another kernel mix); faster links would not help.",
        {"skew_wait_share": share, "pair_wait_ns": verdict["pair_wait_ns"], "waiting_collective_ns": own},
    )


def setup_outliers(run: RunResults) -> Iterator[Observation]:
    """One-off instances far above their kind's median (a startup barrier, a weight upload) are setup."""
    multi = run.metrics["multi_gpu"]
    kernels, collectives = multi["setup_kernels"], multi["collectives"]["setup"]
    if not kernels and not collectives:
        return
    named = [f"{c['kind']} {_ms(c['duration_ns'])} (median {_ms(c['kind_median_ns'])})" for c in collectives]
    named += [
        f"{k['label']} on GPU {k['device_id']} {_ms(k['duration_ns'])} (median {_ms(k['name_median_ns'])})"
        for k in kernels
    ]
    yield Observation(
        "warning",
        f"Setup inside the capture: {len(named)} one-off instance(s) far above their kind's median",
        "Largest: " + "; ".join(named[:3]) + ". They are kept out of the per-GPU steady-state shares.",
        "Start the capture after startup and warmup (--capture-range=cudaProfilerApi around the steady state), "
        "so barriers and uploads do not weigh on the numbers.",
        {
            "instances": len(named),
            "largest_ns": max([c["duration_ns"] for c in collectives] + [k["duration_ns"] for k in kernels]),
        },
    )


def library_nvtx_only(run: RunResults) -> Iterator[Observation]:
    """NVTX ranges exist, but every one comes from a library domain: nothing marks the workload's phases."""
    ranges = run.metrics["nvtx"]["ranges"]
    domains = sorted({r["name"].split(":", 1)[0] for r in ranges})
    if not ranges or "" in domains or not all(d in LIBRARY_DOMAINS for d in domains):
        return
    yield Observation(
        "warning",
        f"NVTX ranges only from libraries ({', '.join(domains)}): no range marks a phase",
        f"{run.metrics['nvtx']['range_count']:,} ranges, all in library domains; GPU time cannot be given to the "
        "workload's own phases (warmup, prefill, decode, iterations).",
        "Wrap the phases in NVTX ranges (the `nvtx` package or torch.cuda.nvtx.range) and open a capture range "
        "around the steady state only (cudaProfilerStart/Stop with --capture-range=cudaProfilerApi).",
        {"nvtx_ranges": run.metrics["nvtx"]["range_count"], "library_domains": ", ".join(domains)},
    )


def profiler_overhead(traced: RunRecord, untraced: RunRecord) -> float | None:
    """Relative throughput lost under nsys: 1 - traced tok/s / untraced tok/s; for a serving run, where the request
    rate sets the throughput, the speed per token lost: 1 - untraced / traced median TPOT."""
    if serving(traced) is not None:
        tpot = serving_tpot(traced, untraced)
        return None if tpot is None else 1 - tpot[1] / tpot[0]
    t, u = traced["output_tokens_per_s"], untraced["output_tokens_per_s"]
    return 1 - t / u if t and u else None


def _overhead_evidence(traced: RunRecord, untraced: RunRecord) -> str:
    tpot = serving_tpot(traced, untraced)
    if tpot is not None:
        return (
            f"Median time per output token {tpot[0]:,.2f} ms traced against {tpot[1]:,.2f} ms untraced, same load, "
            "same machine (the request rate, not the server, sets a serving run's throughput)."
        )
    return (
        f"{traced['output_tokens_per_s']:,.0f} output tok/s traced against "
        f"{untraced['output_tokens_per_s']:,.0f} untraced, same workload, same machine."
    )


def nsys_overhead(run: RunResults) -> Iterator[Observation]:
    if run.traced is None or run.untraced is None:
        return
    loss = profiler_overhead(run.traced, run.untraced)
    if loss is None:
        return
    what = "per-token speed" if serving(run.traced) is not None else "throughput"
    yield Observation(
        "warning" if loss >= OVERHEAD_SHARE else "info",
        f"Profiler overhead: {pct(loss)} of {what} under nsys",
        _overhead_evidence(run.traced, run.untraced),
        "Quote the untraced throughput (a serving run's untraced latencies) and the corrected busy share; read traced "
        "kernel times as relative. The cost "
        "is CUDA tracing itself (benchmarks/overhead/LADDER.md): no flag that still times every kernel lowers it "
        "measurably, and --cuda-graph-trace=graph lowers it by no longer timing the kernels inside CUDA graphs.",
        {
            "loss_share": loss,
            "traced_tok_per_s": run.traced["output_tokens_per_s"] or 0.0,
            "untraced_tok_per_s": run.untraced["output_tokens_per_s"] or 0.0,
        },
    )


def copies_fill_gpu(run: RunResults) -> Iterator[Observation]:
    """Per GPU: copies or memsets ran with no kernel beside them most of the window; the SMs were mostly idle."""
    busy = run.metrics["busy"]
    window = busy["window_ns"]
    for d in busy["devices"]:
        share = d["copy_only_ns"] / window if window else 0.0
        if share < COPY_ONLY_SHARE:
            continue
        host_bytes = d["copy_bytes"]["H2D"] + d["copy_bytes"]["D2H"]
        pageable = d["pageable_host_bytes"] / host_bytes if host_bytes else 0.0
        directions = ", ".join(
            f"{name} {_bytes(d['copy_bytes'][name])} in {_ms(ns)} at {d['copy_bytes'][name] / ns:.1f} GB/s"
            for name, ns in d["copy_directions_ns"].items()
            if ns >= window / 100
        )
        staged = pageable >= PAGEABLE_SHARE
        critical = (
            f"{pct(pageable)} of the host-to-device and device-to-host bytes are pageable host memory, which the "
            "host CPU stages through pinned buffers: the host is the critical path."
            if staged
            else "The copies use pinned or device memory: the copy engines (the link), not the host, are the critical "
            "path."
        )
        yield Observation(
            "warning",
            f"GPU {d['device_id']}: SMs idle {pct(1 - d['kernel_fraction'])} of the window; copies filled "
            f"{pct(share)} of it",
            f"Kernels ran {_ms(d['kernel_ns'])} of a {_ms(window)} window (compute busy {pct(d['kernel_fraction'])}); "
            f"copies or memsets ran alone {_ms(d['copy_only_ns'])} ({directions}). Copies of this size are setup "
            f"(weight loading), not steady state. {critical}",
            "Start the capture after the weights are loaded (cudaProfilerStart after loading and warmup). To load "
            "faster: "
            + (
                "read the weights into pinned memory and copy asynchronously."
                if staged
                else "the link is the limit, so copy less (load each weight once, in its final dtype) or overlap "
                "loading with other work."
            ),
            {
                "device_id": d["device_id"],
                "kernel_ns": d["kernel_ns"],
                "copy_only_ns": d["copy_only_ns"],
                "window_ns": window,
                "copy_only_share": share,
                "h2d_bytes": d["copy_bytes"]["H2D"],
                "pageable_share": pageable,
            },
            "medium" if staged else "high",
        )


#: What to do about each dominant cause of GPU idle time.
NEXT_FOR_IDLE = {
    "host": "The host runs Python between launches: capture the step in CUDA graphs (including input preparation "
    "and sampling), batch more requests per step, or profile the host with --sample=process-tree (CPU sampling "
    "with backtraces) to see where it spends it.",
    "launch": "The GPU waits for launch calls: fewer, larger kernels (fusion, torch.compile) and CUDA graphs cut "
    "launch overhead.",
    "sync": "The host blocks in synchronization and launches nothing meanwhile: remove .item()/.cpu() syncs from "
    "the loop or overlap them with queued work.",
    "rank_wait": "The host waits for a collective on another GPU: balance the ranks' work (see the collectives "
    "finding).",
    "cuda_api": "Other CUDA calls (event records, async copies, allocation) keep the host from launching: move them "
    "out of the step or into CUDA graphs.",
    "profiler": "The profiler's own work covers this idle time: it is not the workload's; quote the untraced "
    "run's numbers.",
    "unattributed": "The launching calls are missing from the export: trace with --trace=cuda to attribute gaps.",
}


def idle_cause(run: RunResults) -> Iterator[Observation]:
    """Per GPU idle a large share of the window: the host-side class holding most of its idle time."""
    idle, window = run.metrics["idle"], run.metrics["busy"]["window_ns"]
    for d in idle["devices"]:
        dominant = d["dominant"]
        share = d["idle_ns"] / window if window else 0.0
        if dominant is None or share < GPU_IDLE_SHARE or not d["idle_ns"]:
            continue
        classes = d["classes"]
        part = classes[dominant] / d["idle_ns"]
        if part < IDLE_CAUSE_SHARE:
            continue
        listed = "; ".join(
            f"{CLASS_WORDS[name].listed} {_ms(classes[name])} ({pct(classes[name] / d['idle_ns'])})"
            for name in sorted(classes, key=lambda c: -classes[c])
            if name != "copy" and classes[name]
        )
        largest = next((g for g in idle["largest"] if g["device_id"] == d["device_id"]), None)
        detail = (
            f" The longest gap, {_ms(largest['duration_ns'])}, ended with {largest['next_operation']} "
            f"({largest['next_call'] or 'call not in the export'}); its cause: {CLASS_WORDS[largest['cause']].listed}."
            if largest is not None and largest["next_operation"]
            else ""
        )
        yield Observation(
            "warning",
            f"GPU {d['device_id']} idle time mostly {CLASS_WORDS[dominant].cause}: {pct(part)} of "
            f"{_ms(d['idle_ns'])} idle",
            f"Nothing ran on GPU {d['device_id']} for {_ms(d['idle_ns'])} of a {_ms(window)} window "
            f"({pct(share)}). By what the launching thread did in the {d['gaps']:,} gaps of at least "
            f"{idle['gap_min_ns'] / 1e3:g} µs: {listed}; {pct(d['explained_share'] or 0.0)} of the idle time is "
            f"explained, {_ms(d['short_gap_ns'])} lies in shorter gaps.{detail}",
            NEXT_FOR_IDLE[dominant],
            {
                "device_id": d["device_id"],
                "idle_ns": d["idle_ns"],
                "window_ns": window,
                "idle_share": share,
                "cause": dominant,
                "cause_ns": classes[dominant],
                "cause_share": part,
                "explained_share": d["explained_share"] or 0.0,
            },
            "medium",
        )


def profiler_work(run: RunResults) -> Iterator[Observation]:
    """The profiler's own work (PROFILER_OVERHEAD) covers a visible share of the capture window."""
    work, window = run.metrics["profiler"], run.metrics["capture_window"]["duration_ns"]
    share = work["in_window_ns"] / window if window else 0.0
    if not work["recorded"] or share < PROFILER_WINDOW_SHARE:
        return
    largest = work["largest"][0]
    timing = run_timing(run.metrics, run.traced, run.untraced)
    slowdown = timing["iteration_overhead"]
    measured = (
        f"The measured slowdown of a traced {timing['overhead_unit']} is {pct(slowdown)}: most of it is the tracing "
        "of every call, which these windows do not show."
        if slowdown is not None
        else "Only an untraced run of the same workload measures the tracer's whole slowdown."
    )
    yield Observation(
        "info",
        f"Profiler's own work: {_ms(work['in_window_ns'])} of the capture window ({pct(share)})",
        f"{work['count']} windows of profiler work ({_ms(work['time_ns'])} summed over threads); the largest is "
        f"{largest['name']} ({_ms(largest['duration_ns'])}{'' if largest['in_window'] else ', after the window'}). "
        f"They cover {_ms(work['gpu_idle_ns'])} of GPU idle time (windows on any thread of the launching "
        f"process), counted as profiler work, not idle. {measured}",
        "Read the idle share without the profiler's windows (the idle analysis does); compare with the untraced run.",
        {
            "in_window_ns": work["in_window_ns"],
            "window_ns": window,
            "window_share": share,
            "time_ns": work["time_ns"],
            "gpu_idle_ns": work["gpu_idle_ns"],
        },
        "medium",  # the windows are measured; that they delay the launching thread from any thread is inferred
    )


def _us(ns: float) -> str:
    return f"{ns / 1e3:,.0f} µs"


def few_steady_steps(run: RunResults) -> Iterator[Observation]:
    """Fewer than three steady iterations (engine steps): per-iteration numbers are anecdotal or absent."""
    steps, kernels = run.metrics["steps"], run.metrics["kernels"]["count"]
    if not kernels or steps["steady_steps"] >= MIN_STEADY_STEPS:
        return
    numbers = {"steady_steps": steps["steady_steps"], "steps": steps["steps"]}
    if not steps["steps"]:
        why = no_step_reasons(steps)
        yield Observation(
            "info",
            "No repeating iteration found: no per-iteration numbers",
            f"No vLLM step range and no repeating kernel sequence ({why or 'no kernels to compare'}); "
            f"{kernels:,} kernels in the capture.",
            "Mark each iteration with an NVTX range (torch.cuda.nvtx.range) or capture several steady-state "
            "iterations, so per-iteration latency and launch costs can be measured.",
            numbers,
            "medium",
        )
        return
    yield Observation(
        "warning",
        f"Only {steps['steady_steps']} steady iteration(s) captured",
        f"{steps['steps']} steps found ({steps['method']}), {steps['steady_steps']} of them steady (the most common "
        "kernel count, with a next step to time them against): per-iteration numbers rest on too few samples.",
        "Capture more steady-state iterations (more profile iterations or longer outputs inside the capture range).",
        numbers,
        steps["confidence"] or "medium",
    )


def _named_launches(run: RunResults) -> str:
    costs = run.metrics["steps"]["nongraph_launches"][:NAMED_LAUNCHES]
    return "; ".join(
        f"{c['name']} ×{c['per_step']:.1f}/step, {_us(c['host_ns_per_launch'])} host per launch "
        f"({_us(c['launch_call_ns_per_launch'])} in the call) for {_us(c['kernel_ns_per_launch'])} on the GPU"
        for c in costs
    )


def _untraced_step(run: RunResults) -> tuple[str, str, dict[str, float]]:
    """Whether the GPU still waits in an untraced step: its sentence, the finding's confidence, the numbers.

    An untraced step lasts the untraced iteration's median latency over the steps of a marked iteration;
    its GPU work is taken to be the traced one (the tracer slows host calls, not kernels). Without an
    untraced run the confidence is medium: the tracer inflates the host side by an unknown amount.
    """
    steps, per = run.metrics["steps"], run.metrics["steps"]["per_step"]
    untraced = run_timing(run.metrics, run.traced, run.untraced)["untraced_latency"]
    per_iteration = steps["steps_per_iteration"]
    if untraced is None or not per_iteration:
        return "Traced host calls are slower than untraced ones, so the margin is an upper bound.", "medium", {}
    step_ns = untraced["median_s"] * 1e9 / per_iteration
    gpu_work = per["kernel_ns"] + per["copy_ns"]
    numbers = {"untraced_step_ns": step_ns, "gpu_work_ns_per_step": gpu_work}
    if step_ns >= gpu_work * (1 + LAUNCH_BOUND_MARGIN):
        return (
            f"Untraced, a step lasts {_us(step_ns)} (median iteration over {per_iteration:.0f} steps) against "
            f"{_us(gpu_work)} of GPU work: the GPU still waits on the host.",
            "high",
            numbers,
        )
    return (
        f"Untraced, a step lasts {_us(step_ns)}, about its {_us(gpu_work)} of GPU work: the host may only "
        "lead under the tracer.",
        "low",
        numbers,
    )


def launch_bound_steps(run: RunResults) -> Iterator[Observation]:
    """The host's launching is the step's critical path; the kernels launched outside CUDA graphs are named.

    Silent when graphs were traced whole: their kernels are missing, so the GPU side would look too short.
    """
    if _graphs_whole(run):
        return
    steps = run.metrics["steps"]
    margin = steps["critical_margin"]
    if steps["critical_path"] != "host" or margin is None or margin < LAUNCH_BOUND_MARGIN:
        return
    per = steps["per_step"]
    outside = per["nongraph_kernels"]
    evidence = (
        f"Median over {steps['steady_steps']} steady steps ({steps['method']}): the host spends {_us(per['host_ns'])} "
        f"issuing a step ({_us(per['host_launch_ns'])} in {per['launch_calls']:.0f} launch calls, "
        f"{_us(per['host_between_ns'])} between them) against {_us(per['gpu_ns'])} of GPU kernels, "
        f"{_us(per['communication_ns'])} of communication and {_us(per['copy_ns'])} of copies: host ahead by "
        f"{pct(margin)}. {outside:.0f} kernels per "
        f"step run outside CUDA graphs ({per['graph_kernels']:.0f} inside): {_us(per['nongraph_host_ns'])} of host "
        f"time for {_us(per['nongraph_kernel_ns'])} of GPU time."
    )
    if steps["nongraph_launches"]:
        evidence += f" Most host time: {_named_launches(run)}."
    untraced, confidence, checked = _untraced_step(run)
    yield Observation(
        "warning",
        f"Steps launch-bound: host {_us(per['host_ns'])} per step against {_us(per['gpu_ns'])} on the GPU; "
        f"{outside:.0f} kernels per step launched outside CUDA graphs",
        f"{evidence} {untraced}",
        "Move the named kernels into the CUDA graph or fuse them (input preparation and sampling: vLLM's "
        "full CUDA-graph mode, torch.compile), cut Python work between launches, and overlap the next step's "
        "preparation with the GPU (async scheduling).",
        {
            "host_ns_per_step": per["host_ns"],
            "gpu_ns_per_step": per["gpu_ns"],
            "communication_ns_per_step": per["communication_ns"],
            "copy_ns_per_step": per["copy_ns"],
            "critical_margin": margin,
            "nongraph_kernels_per_step": outside,
            "nongraph_host_ns_per_step": per["nongraph_host_ns"],
            "steady_steps": steps["steady_steps"],
            **checked,
        },
        confidence,
    )


#: What each of nsys's expert rules found, in words: a noun for its rows and the first row described.
_EXPERT_WORDS: dict[str, tuple[str, Callable[[Mapping[str, object]], str]]] = {
    "cuda_api_sync": ("synchronizing CUDA calls", lambda r: f"longest {r['api_name']}, {_ms(_num(r, 'duration_ns'))}"),
    "cuda_memcpy_sync": ("synchronous copies", lambda r: f"longest {_copy(r)}"),
    "cuda_memcpy_async": ("asynchronous copies from pageable memory", lambda r: f"longest {_copy(r)}"),
    "cuda_memset_sync": ("synchronous memsets", lambda r: f"longest {_ms(_num(r, 'duration_ns'))} ({r['api_name']})"),
    "gpu_gaps": (
        "GPU gaps over 500 ms",
        lambda r: f"longest {_ms(_num(r, 'duration_ns'))} on GPU {r['device_id']} (process {r['pid']})",
    ),
    "gpu_time_util": (
        "stretches under 50% GPU time utilization (copies and the profiler's flushes count as use)",
        lambda r: f"lowest {r['in_use_pct']}% over {_ms(_num(r, 'duration_ns'))} on GPU {r['device_id']}",
    ),
}


def _num(row: Mapping[str, object], key: str) -> float:
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def _copy(row: Mapping[str, object]) -> str:
    return (
        f"{_bytes(int(_num(row, 'bytes')))} {row.get('src_kind')} to {row.get('dst_kind')} in "
        f"{_ms(_num(row, 'duration_ns'))} ({row.get('api_name')})"
    )


def nsys_expert_rules(run: RunResults) -> Iterator[Observation]:
    """One finding per ``nsys analyze`` rule that returned rows, with its first row, so the report
    says what NVIDIA's own rules say about the same capture."""
    for record in run.metrics["nsys_rules"]:
        if record["skipped"] is not None or not record["rows"] or record["rule"] not in _EXPERT_WORDS:
            continue
        noun, first = _EXPERT_WORDS[record["rule"]]
        yield Observation(
            "info",
            f"nsys analyze {record['rule']}: {record['rows']:,} {noun}",
            f"{record['title']}: {first(record['top'][0])}.",
            f"`llmprof analyze EXPORT -r {record['rule']}` (equal to `nsys analyze`) lists them all.",
            {"rows": record["rows"]},
        )


def ttft_tail(run: RunResults) -> Iterator[Observation]:
    """A serving load whose slowest first tokens take several times the median: requests wait to be scheduled."""
    shown = shown_load(run.traced, run.untraced)
    if shown is None:
        return
    load, which = shown
    p50, p99 = load["ttft"]["p50_ms"], load["ttft"]["p99_ms"]
    if p50 is None or p99 is None or p50 <= 0 or p99 / p50 < TTFT_TAIL_RATIO:
        return
    rate = f"{load['request_rate']:g} requests/s" if load["request_rate"] else "every request at once"
    yield Observation(
        "warning",
        f"Time to first token: p99 {p99 / p50:.1f}× the median at {rate}",
        f"TTFT p50 {p50:,.1f} ms, p99 {p99:,.1f} ms ({which} load of {load['completed']:,} requests); TPOT p50 "
        f"{load['tpot']['p50_ms'] or 0:,.2f} ms. The slowest requests wait before their prefill is scheduled.",
        "The server is near its capacity at this load: compare TTFT along a request-rate sweep to find the knee, "
        "and look at the engine steps beside the latency (requests per step, prefill steps) in the report.",
        {"ttft_p50_ms": p50, "ttft_p99_ms": p99, "ratio": p99 / p50},
        "high" if which == "untraced" else "medium",
    )


#: The rules of one run, in the order their findings are listed (after warnings come first).
RULES: tuple[Rule[RunResults], ...] = (
    Rule("no_gpu_work", "The capture holds no kernel, copy or memset.", {}, no_gpu_work),
    Rule("nvtx_absent", "The capture holds no NVTX range to attribute GPU time to.", {}, nvtx_absent),
    Rule(
        "setup_in_capture",
        "Model loading or allocation inside the capture: large host-to-device copies or allocation time.",
        {"h2d_bytes": SETUP_H2D_BYTES, "alloc_share": SETUP_ALLOC_SHARE},
        setup_in_capture,
    ),
    Rule(
        "host_blocked_in_sync",
        "Synchronizing calls take a large share of CUDA API time.",
        {"sync_share": SYNC_SHARE},
        host_blocked_in_sync,
    ),
    Rule(
        "gpu_idle",
        "The GPU idles a large share of an untraced iteration (of the traced window when no untraced run exists).",
        {"idle_share": GPU_IDLE_SHARE},
        gpu_idle,
    ),
    Rule(
        "dominant_kernel_family",
        "The kernel family with the most GPU time; a warning when it holds most of it.",
        {"share": DOMINANT_SHARE},
        dominant_kernel_family,
    ),
    Rule(
        "short_kernels",
        "Many kernels, short on average: launch overhead dominates.",
        {"mean_ns": SHORT_KERNEL_NS, "min_count": SHORT_KERNEL_MIN_COUNT},
        short_kernels,
    ),
    Rule(
        "cpu_threads_waiting",
        "OS runtime time is mostly spent in waits.",
        {"waiting_share": WAITING_SHARE},
        cpu_threads_waiting,
    ),
    Rule(
        "collective_balance",
        "Collectives matched across ranks: a rank waiting for a late one (skew), or transfer dominating.",
        {"skew_wait_share": SKEW_WAIT_SHARE},
        collective_balance,
    ),
    Rule(
        "setup_outliers",
        "One-off instances far above their kind's median: setup, not steady state.",
        {},
        setup_outliers,
    ),
    Rule("library_nvtx_only", "Every NVTX range comes from a library domain.", {}, library_nvtx_only),
    Rule(
        "few_steady_steps",
        "Fewer steady iterations (engine steps) than make per-iteration numbers reliable, or none found.",
        {"min_steady_steps": MIN_STEADY_STEPS},
        few_steady_steps,
    ),
    Rule(
        "launch_bound_steps",
        "The host's launches are a step's critical path, ahead of GPU, communication and copy time.",
        {"critical_margin": LAUNCH_BOUND_MARGIN},
        launch_bound_steps,
    ),
    Rule(
        "profiler_overhead",
        "Throughput under nsys against the same workload without it; a warning when the loss is large.",
        {"loss_share": OVERHEAD_SHARE},
        nsys_overhead,
    ),
    Rule(
        "copies_fill_gpu",
        "Per GPU: copies or memsets ran with no kernel beside them most of the window (the SMs idle); "
        "pageable host memory makes the host the critical path.",
        {"copy_only_share": COPY_ONLY_SHARE, "pageable_share": PAGEABLE_SHARE},
        copies_fill_gpu,
    ),
    Rule(
        "idle_cause",
        "Per GPU idle a large share of the window: the host-side cause holding most of the idle time.",
        {"idle_share": GPU_IDLE_SHARE, "cause_share": IDLE_CAUSE_SHARE},
        idle_cause,
    ),
    Rule(
        "profiler_work",
        "The profiler's own work recorded in the export covers a visible share of the capture window.",
        {"window_share": PROFILER_WINDOW_SHARE},
        profiler_work,
    ),
    Rule(
        "nsys_expert_rules",
        "What Nsight Systems' own expert rules (nsys analyze) report, with nsys's defaults.",
        {"gpu_gap_ms": GAP_MS, "gpu_time_util_pct": UTIL_THRESHOLD_PCT},
        nsys_expert_rules,
    ),
    Rule(
        "ttft_tail",
        "A serving load's p99 time to first token is several times its median (untraced where measured).",
        {"ratio": TTFT_TAIL_RATIO},
        ttft_tail,
    ),
)


def findings(metrics: Metrics, traced: RunRecord | None = None, untraced: RunRecord | None = None) -> list[Finding]:
    """Every finding the metrics (and the run records, when given) support, warnings first, in rule order."""
    return run_rules(RULES, RunResults(metrics, traced, untraced))
