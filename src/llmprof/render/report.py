"""Report stage: ``metrics.json`` and figures in, ``report.md``, ``report.html`` and ``findings.json`` out.

The report is built once as blocks (:mod:`llmprof.render.document`) and
rendered to Markdown and to standalone HTML. It reads only the extract folder
and the run records, never the SQLite export.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from llmprof.analysis.categories import kernel_label
from llmprof.analysis.findings import Finding, findings, pct, profiler_overhead, rank_label
from llmprof.analysis.idle import CLASS_WORDS
from llmprof.analysis.iterations import MIN_STEADY_STEPS, no_step_reasons
from llmprof.analysis.serving import LATENCIES, PhaseSteps, engine_steps, latency_overhead, phase_steps
from llmprof.analysis.timing import run_timing, serving, shown_load, timed_span
from llmprof.common.errors import InputError
from llmprof.common.outputs import staged_directory, write_json
from llmprof.common.records import (
    IterationTiming,
    Metrics,
    RunRecord,
    ServingRecord,
    StepMetrics,
    load_metrics,
    load_run_record,
)
from llmprof.render.document import Block, Figure, Heading, Paragraph, Table, embedded_images, to_html, to_markdown
from llmprof.render.figures import FIGURES, figure_links


def _ms(ns: float) -> str:
    return f"{ns / 1e6:,.2f} ms"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else pct(value)


def _mb(value: int) -> str:
    return f"{value / 1e6:,.2f} MB"


def _busy_share(value: float | None, timing: IterationTiming) -> str:
    """A busy share, or why there is none."""
    if value is not None:
        return pct(value)
    return timing["note"] if timing["basis"] == "none" else "not measured (see the basis below)"


def _timing_rows(timing: IterationTiming) -> list[tuple[str, str]]:
    """The tracer's per-iteration overhead and the busy share of the traced window beside an untraced iteration's."""
    overhead, unit = timing["iteration_overhead"], timing["overhead_unit"]
    measure = "TPOT" if unit == "output token" else "latency"
    return [
        (
            f"Per-{unit.replace(' ', '-')} overhead (traced / untraced median {measure} − 1)",
            "not measured" if overhead is None else pct(overhead),
        ),
        ("GPU busy, traced window (raw)", _busy_share(timing["busy_share_raw"], timing)),
        (f"GPU busy, untraced {timed_span(timing)} (corrected)", _busy_share(timing["busy_share_corrected"], timing)),
    ]


def _timing_note(timing: IterationTiming) -> Paragraph:
    """What the busy shares rest on, in words."""
    return Paragraph(f"**Busy share basis: {timing['basis']}** ({timing['note']}). {timing['assumption']}")


def _gpus(m: Metrics) -> str:
    """The GPUs by name, or by count from the GPU activity when the export does not name them."""
    names = ", ".join(sorted({name for g in m["gpus"] if (name := g["name"])}))
    if names:
        return names
    seen = len(m["busy"]["devices"])
    return f"{seen} with GPU activity (names not recorded)" if seen else "not recorded"


def _per_gpu(m: Metrics, share: str) -> str:
    """One share per GPU, as ``GPU 0 2.3%, GPU 1 2.3%``."""
    return ", ".join(f"GPU {d['device_id']} {pct(float(d[share]))}" for d in m["busy"]["devices"]) or "n/a"  # type: ignore[literal-required]


def _headline(m: Metrics, timing: IterationTiming) -> Table:
    top = max(m["kernels"]["categories"], key=lambda c: c["share"])
    copies = m["memcpy"]["directions"]
    rows = [
        ("Capture window", _ms(m["capture_window"]["duration_ns"])),
        ("GPUs", _gpus(m)),
        ("Kernels", f"{m['kernels']['count']:,} ({_ms(m['kernels']['time_ns'])} of GPU time)"),
        ("GPU compute busy (a kernel running), of the window", _per_gpu(m, "kernel_fraction")),
        ("GPU copy engines busy (a copy running), of the window", _per_gpu(m, "copy_fraction")),
        *_timing_rows(timing),
        ("Idle time explained by host-side cause", _explained(m)),
        ("Profiler's own work in the window", _profiler_row(m)),
        ("Largest kernel family", f"{top['category']} ({_pct(top['share'])})" if top["time_ns"] else "n/a"),
        ("CUDA API calls", f"{m['cuda_api']['count']:,} ({_ms(m['cuda_api']['time_ns'])})"),
        ("Synchronization share of API time", _pct(m["cuda_api"]["sync_share"])),
        ("Copies H2D / D2H / D2D", " / ".join(_mb(copies[d]["bytes"]) for d in ("H2D", "D2H", "D2D"))),
        ("NVTX ranges", f"{m['nvtx']['range_count']:,}"),
    ]
    return Table(("Metric", "Value"), tuple(rows))


def _explained(m: Metrics) -> str:
    devices = m["idle"]["devices"]
    return (
        ", ".join(f"GPU {d['device_id']} {_pct(d['explained_share'])} of {_ms(d['idle_ns'])}" for d in devices) or "n/a"
    )


def _profiler_row(m: Metrics) -> str:
    work = m["profiler"]
    if not work["recorded"]:
        return "not recorded in this export"
    return (
        f"{_ms(work['in_window_ns'])} ({work['count']} windows, {_ms(work['time_ns'])} summed over threads); "
        f"{_ms(work['gpu_idle_ns'])} of GPU idle time"
    )


def finding_blocks(found: list[Finding], none: str) -> list[Block]:
    """Each finding as a marked heading, its evidence and its next step; ``none`` when there is none."""
    if not found:
        return [Paragraph(none)]
    blocks: list[Block] = []
    for f in found:
        marker = "⚠" if f.severity == "warning" else "ℹ"
        blocks.append(Heading(f"{marker} {f.title}", 3))
        blocks.append(Paragraph(f"**Evidence.** {f.evidence}"))
        blocks.append(Paragraph(f"**Next step.** {f.next_step}"))
        blocks.append(Paragraph(f"*Rule `{f.id}`; confidence {f.confidence}{_thresholds(f)}.*"))
    return blocks


def _thresholds(found: Finding) -> str:
    """The rule's thresholds as ``; thresholds: a = 1, b = 2``, or nothing when it has none."""
    if not found.thresholds:
        return ""
    return "; thresholds: " + ", ".join(f"{k} = {v:g}" for k, v in sorted(found.thresholds.items()))


def _top_kernels(m: Metrics) -> Table:
    rows = tuple(
        (
            kernel_label(k["name"], k["short_name"]),
            k["category"],
            f"{k['count']:,}",
            _ms(k["time_ns"]),
            _pct(k["share"]),
        )
        for k in m["kernels"]["top"]
    )
    return Table(("Kernel", "Category", "Instances", "GPU time", "Share"), rows)


def _nvtx_table(m: Metrics) -> Table:
    rows = tuple(
        (
            r["name"],
            r["style"],
            f"{r['instances']:,}",
            _ms(r["range_ns"]),
            _ms(r["gpu_projected_ns"]),
            _ms(r["gpu_time_ns"]),
            f"{r['gpu_ops']:,}",
        )
        for r in m["nvtx"]["ranges"][:20]
    )
    return Table(("Range", "Style", "Instances", "Range time", "GPU projected", "GPU kernel time", "GPU ops"), rows)


def _workload_text(traced: RunRecord) -> str:
    """The workload in words: the generate batches, or the serving load."""
    workload, load = traced["spec"]["workload"], serving(traced)
    if load is None:
        return (
            f"batch {workload['batch_size']}, input {workload['input_len']} tokens, output "
            f"{workload['output_len']} tokens; {len(traced['warmup_latency_s'])} warmup calls before the "
            f"capture, {len(traced['iterations'])} captured"
        )
    rate = f"at {load['request_rate']:g} requests/s (Poisson arrivals)" if load["request_rate"] else "sent at once"
    limit = f", at most {load['max_concurrency']} in flight" if load["max_concurrency"] else ""
    return (
        f"`vllm serve`: {load['num_prompts']} requests {rate}{limit}, input {workload['input_len']} tokens, output "
        f"{workload['output_len']} tokens, client {load['client']}; {len(traced['warmup_latency_s'])} warmup "
        "requests before the capture, the load captured"
    )


def _workload_rows(traced: RunRecord, untraced: RunRecord | None) -> tuple[tuple[str, str], ...]:
    """What ran, how fast with and without nsys, and on what."""
    model, versions = traced["model"], traced["versions"]
    nsys = traced.get("nsys")
    loss = profiler_overhead(traced, untraced) if untraced is not None else None
    return (
        (
            "Model",
            f"{model['name']} ({model['source']}"
            + (f", {model['parameters'] / 1e9:.2f}B parameters)" if model.get("parameters") else ")"),
        ),
        ("Capture mode", traced["capture_mode"]),
        ("Workload", _workload_text(traced)),
        ("Throughput traced", f"{traced['output_tokens_per_s']:,.0f} output tok/s"),
        ("Throughput untraced", f"{untraced['output_tokens_per_s']:,.0f} output tok/s" if untraced else "not measured"),
        ("Profiler overhead", _pct(loss)),
        ("GPU", f"{traced['gpu']['name']} × {traced['gpu']['count']}"),
        (
            "Versions",
            f"vLLM {versions['vllm']}, torch {versions['torch']}, CUDA {versions['cuda']}, "
            f"driver {versions['driver'] or 'n/a'}, {(nsys['version'] if nsys else None) or 'nsys n/a'}",
        ),
        ("Kernels captured", f"{nsys['kernels_captured']:,}" if nsys else "n/a"),
    )


def _workload_blocks(traced: RunRecord, untraced: RunRecord | None) -> list[Block]:
    latency = tuple(
        (
            str(i["index"]),
            f"{i['latency_s'] * 1e3:,.1f} ms",
            f"{i['output_tokens']:,}",
            f"{i['output_tokens_per_s']:,.0f}",
        )
        for i in traced["iterations"]
    )
    blocks: list[Block] = [Heading("Workload"), Table(("Item", "Value"), _workload_rows(traced, untraced))]
    if serving(traced) is None:
        blocks.append(Table(("Captured iteration", "Latency", "Output tokens", "tok/s"), latency))
    return blocks


def _latency_cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f} ms"


def _latency_table(traced: ServingRecord, untraced: ServingRecord | None) -> Table:
    """Each client latency's p50, p90 and p99, traced and untraced, and how much longer p50 and p99 are traced."""
    rows = []
    for metric, label in LATENCIES:
        a = traced[metric]  # type: ignore[literal-required]
        b = untraced[metric] if untraced is not None else None  # type: ignore[literal-required]
        spread = [
            f"{_latency_cell(a[k])} / {_latency_cell(b[k] if b else None)}" for k in ("p50_ms", "p90_ms", "p99_ms")
        ]
        overhead = [_pct(latency_overhead(a, b, k)) if b else "not measured" for k in ("p50_ms", "p99_ms")]
        rows.append((label, *spread, *overhead))
    header = ("Latency", "p50 traced / untraced", "p90 traced / untraced", "p99 traced / untraced")
    return Table((*header, "p50 overhead", "p99 overhead"), tuple(rows))


def _side_by_side(load: ServingRecord, which: str, phases: list[PhaseSteps]) -> Table:
    """The client's latency percentiles beside the engine steps of the capture, phase by phase."""
    left = [
        (label, *(_latency_cell(load[m][k]) for k in ("p50_ms", "p90_ms", "p99_ms")))  # type: ignore[literal-required]
        for m, label in LATENCIES
    ]
    right = [
        (
            p.phase,
            f"{p.steps:,}",
            f"{p.median_batch_requests:g} ({p.max_batch_requests:,} max)",
            f"{p.median_batch_tokens:g}",
            _ms(p.median_gpu_time_ns),
            _pct(p.gpu_time_share),
            _pct(p.median_gpu_busy_share),
        )
        for p in phases
    ]
    blank_left, blank_right = ("",) * 4, ("",) * 7
    rows = tuple(
        (*(left[i] if i < len(left) else blank_left), *(right[i] if i < len(right) else blank_right))
        for i in range(max(len(left), len(right)))
    )
    header = (f"Latency ({which})", "p50", "p90", "p99", "Engine steps", "Steps", "Requests per step (median)")
    return Table(
        (*header, "Tokens per step (median)", "GPU time per step", "Share of step GPU time", "GPU busy per step"), rows
    )


def _serving_blocks(traced: RunRecord, untraced: RunRecord | None, steps: pd.DataFrame | None) -> list[Block]:
    """The serving load's latency percentiles beside the engine steps that served it."""
    load, baseline, quoted = serving(traced), serving(untraced), shown_load(traced, untraced)
    if load is None or quoted is None:
        return []
    shown, which = quoted
    phases = phase_steps(steps) if steps is not None else []
    throughput = ", ".join(
        f"{record['request_throughput_per_s']:,.2f} requests/s and {record['output_tokens_per_s']:,.0f} output tok/s "
        f"{name}"
        for name, record in (("untraced", baseline), ("traced", load))
        if record is not None
    )
    return [
        Heading("Serving: latency and the GPU behind it"),
        Paragraph(
            f"{load['completed']:,} requests completed: {throughput}. Latency is what the client measured per "
            "request (TTFT: to the first token; TPOT: per output token after the first; ITL: between streamed "
            "tokens; E2EL: the whole request). The engine steps are vLLM's NVTX ranges in the traced capture: "
            "requests and tokens per step from the range's name, GPU time of the kernels the step launched, and "
            "GPU busy per step (that time over the step's span, inflated by the tracer)."
        ),
        _side_by_side(shown, which, phases)
        if phases
        else Paragraph("The capture holds no vLLM engine-step range: the GPU side cannot be split by step."),
        _latency_table(load, baseline),
    ]


def _phase_blocks(m: Metrics) -> list[Block]:
    phases = m["phases"]
    if not phases["source"]:
        return []
    total = sum(p["gpu_time_ns"] for p in phases["phases"]) or 1
    rows = tuple(
        (
            p["phase"],
            f"{p['steps']:,}",
            _ms(p["gpu_time_ns"]),
            _pct(p["gpu_time_ns"] / total),
            _ms(p["gpu_time_ns"] / p["steps"]) if p["steps"] else "n/a",
        )
        for p in phases["phases"]
    )
    return [
        Heading("Prefill and decode"),
        Paragraph(
            "GPU time of vLLM's engine steps, by the requests each step's NVTX range names "
            "(context requests: prefill; generation requests: decode)."
        ),
        Table(("Phase", "Steps", "GPU kernel time", "Share", "Per step"), rows),
    ]


def _busy_blocks(m: Metrics) -> list[Block]:
    """Per GPU: what kept it busy (kernels, each copy direction, memsets) and, per iteration, its compute busy."""
    busy = m["busy"]
    if not busy["devices"]:
        return []
    window = busy["window_ns"] or 1
    rows = tuple(
        (
            f"GPU {d['device_id']}",
            f"{_ms(d['kernel_ns'])} ({pct(d['kernel_ns'] / window)})",
            f"{_ms(d['copy_ns'])} ({pct(d['copy_ns'] / window)})",
            ", ".join(f"{k} {_ms(v)}" for k, v in d["copy_directions_ns"].items() if v) or "none",
            _ms(d["memset_ns"]),
            f"{_ms(d['union_ns'])} ({pct(d['union_ns'] / window)})",
        )
        for d in busy["devices"]
    )
    blocks: list[Block] = [
        Heading("Busy time per GPU"),
        Paragraph(
            "Time with at least one operation of each kind running, in the capture window: kernels keep the SMs "
            "busy, copies the copy engines. A GPU whose busy time is mostly copies computes nothing meanwhile."
        ),
        Table(("GPU", "Kernels (compute)", "Copies", "By direction", "Memsets", "Anything"), rows),
    ]
    iterations = tuple(
        (
            f"GPU {d['device_id']}",
            str(i["index"]),
            _ms(i["end_ns"] - i["start_ns"]),
            f"{_ms(i['kernel_ns'])} ({pct(i['kernel_ns'] / max(i['end_ns'] - i['start_ns'], 1))})",
            _ms(i["copy_ns"]),
        )
        for d in busy["devices"]
        for i in d["iterations"]
    )
    if iterations:
        blocks += [
            Paragraph(f"Per iteration ({ITERATION_SOURCES.get(busy['iterations_source'] or '', 'given windows')})."),
            Table(("GPU", "Iteration", "Window", "Kernels (compute)", "Copies"), iterations),
        ]
    return blocks


def _step_blocks(m: Metrics) -> list[Block]:
    """Iterations (engine steps): how they were found, their latency, and what bounds them."""
    steps = m["steps"]
    if not steps["steps"]:
        reasons = no_step_reasons(steps)
        return [Heading("Iterations"), Paragraph(f"No repeating iteration found{': ' + reasons if reasons else ''}.")]
    per, latency = steps["per_step"], steps["latency"]
    found = (
        f"{steps['steps']:,} steps found by {steps['method']} (confidence {steps['confidence']}), "
        f"{steps['steady_steps']:,} steady"
        + (f", in {steps['marked_iterations']} marked iterations" if steps["marked_iterations"] else "")
        + (
            f". Fewer than {MIN_STEADY_STEPS} steady steps: per-step numbers rest on too few samples."
            if steps["steady_steps"] < MIN_STEADY_STEPS
            else "."
        )
    )
    blocks: list[Block] = [Heading("Iterations"), Paragraph(found)]
    if per and latency is not None:
        rows = (
            (
                "Latency (median, p10–p90)",
                f"{_ms(latency['median_ns'])} ({_ms(latency['p10_ns'])}–{_ms(latency['p90_ns'])})",
            ),
            ("Kernels (in CUDA graphs)", f"{per['kernels']:.0f} ({per['graph_kernels']:.0f})"),
            ("GPU kernel time (communication)", f"{_ms(per['kernel_ns'])} ({_ms(per['communication_ns'])})"),
            ("Copies and memsets", _ms(per["copy_ns"])),
            (
                "Host: launch calls + between",
                f"{_ms(per['host_launch_ns'])} + {_ms(per['host_between_ns'])}"
                if steps["host_known_steps"]
                else "not known: kernels without their launch call",
            ),
            (
                "Non-graph kernels: host / GPU",
                f"{_ms(per['nongraph_host_ns'])} / {_ms(per['nongraph_kernel_ns'])}"
                if steps["host_known_steps"]
                else f"n/a / {_ms(per['nongraph_kernel_ns'])}",
            ),
            ("Critical path (margin)", f"{steps['critical_path'] or 'unknown'} ({_pct(steps['critical_margin'])})"),
        )
        blocks.append(Table(("Per steady step (median)", "Value"), rows))
    return blocks + _launch_blocks(steps)


def _launch_blocks(steps: StepMetrics) -> list[Block]:
    """The kernels launched outside CUDA graphs, by host time per steady step (none: no blocks)."""
    launches = tuple(
        (
            c["name"],
            f"{c['per_step']:.1f}",
            f"{c['host_ns_per_launch'] / 1e3:,.1f} µs",
            f"{c['launch_call_ns_per_launch'] / 1e3:,.1f} µs",
            f"{c['kernel_ns_per_launch'] / 1e3:,.1f} µs",
        )
        for c in steps["nongraph_launches"]
    )
    if not launches:
        return []
    return [
        Paragraph(
            "Kernels launched outside CUDA graphs, by host time per steady step: host per launch is the "
            "launch call and the host time since the step's previous launch."
        ),
        Table(("Kernel", "Per step", "Host per launch", "In the call", "GPU per launch"), launches),
    ]


#: Where iteration windows came from, in words.
ITERATION_SOURCES = {"nvtx_iteration_ranges": "the capture's `iteration k` NVTX ranges"}


def _idle_blocks(m: Metrics) -> list[Block]:
    """Per GPU: its idle time by what the host did, and the largest gaps with their cause."""
    idle = m["idle"]
    if not idle["devices"]:
        return []
    rows = []
    for d in idle["devices"]:
        for name in idle["classes"]:
            if d["classes"][name]:
                share = _pct(d["classes"][name] / d["idle_ns"]) if name != "copy" and d["idle_ns"] else "—"
                rows.append((f"GPU {d['device_id']}", CLASS_WORDS[name].described, _ms(d["classes"][name]), share))
        rows.append((f"GPU {d['device_id']}", "shorter gaps (not classified)", _ms(d["short_gap_ns"]), "—"))
    gaps = tuple(
        (
            f"GPU {g['device_id']}",
            _ms(g["duration_ns"]),
            "n/a" if g["iteration"] is None else str(g["iteration"]),
            CLASS_WORDS[g["cause"]].described,
            f"{g['next_operation'] or 'end of window'}" + (f" ({g['next_call']})" if g["next_call"] else ""),
        )
        for g in idle["largest"][:5]
    )
    shown = [c for c in idle["classes"] if any(d["classes"][c] for d in idle["devices"])]
    iterations = tuple(
        (f"GPU {d['device_id']}", str(i["index"]), *(_ms(i["classes"][c]) for c in shown))
        for d in idle["devices"]
        for i in d["iterations"]
    )
    header = ("GPU", "Iteration", *(CLASS_WORDS[c].header for c in shown))
    per_iteration: list[Block] = [Paragraph("Per iteration window:"), Table(header, iterations)] if iterations else []
    return [
        Heading("Idle time explained"),
        Paragraph(
            f"Every gap of at least {idle['gap_min_ns'] / 1e3:g} µs with no kernel running, by what the thread that "
            "launched the next operation was doing; each instant goes to the first class that holds (copies, the "
            "profiler's own work, waiting on another rank, synchronization, launch calls, other CUDA calls, host "
            "code). Shares are of the time with nothing running on the GPU."
        ),
        Table(("GPU", "Cause", "Time", "Share of idle"), tuple(rows)),
        *per_iteration,
        Table(("GPU", "Largest gap", "Iteration", "Cause", "Ended by"), gaps),
    ]


def _profiler_blocks(m: Metrics, timing: IterationTiming) -> list[Block]:
    """The profiler's own windows beside the measured slowdown of a traced iteration."""
    work = m["profiler"]
    if not work["recorded"]:
        return []
    overhead = timing["iteration_overhead"]
    rows = tuple(
        (
            w["name"] or "?",
            f"{w['pid']}/{w['tid']}",
            _ms(w["duration_ns"]),
            "inside" if w["in_window"] else "outside",
        )
        for w in work["largest"]
    )
    return [
        Heading("The profiler's own work"),
        Paragraph(
            f"The export records {work['count']} windows of profiler work ({_ms(work['time_ns'])} summed over "
            f"threads, {_ms(work['in_window_ns'])} of the capture window); {_ms(work['gpu_idle_ns'])} of GPU idle "
            "time falls in them and is counted as profiler work, not idle. Measured slowdown of a traced "
            f"{timing['overhead_unit']}: {'not measured (no untraced run)' if overhead is None else pct(overhead)}. "
            "These windows show only part of the profiler's cost: the tracing of every call slows the host too, "
            "which only the untraced run measures."
        ),
        Table(("Profiler work", "pid/tid", "Duration", "Capture window"), rows),
    ]


def _device_blocks(m: Metrics) -> list[Block]:
    """Each GPU beside the others, and each collective kind across ranks (captures of several GPUs only)."""
    multi = m["multi_gpu"]
    if len(multi["devices"]) < 2:
        return []
    devices = tuple(
        (
            f"GPU {d['device_id']}",
            ", ".join(str(p["pid"]) for p in d["processes"]) or "n/a",
            f"{d['kernels']:,}",
            _pct(d["busy_fraction"]),
            _ms(d["collective_ns"]),
            _pct(d["overlap_fraction"]),
            d["top_kernels"][0]["label"] if d["top_kernels"] else "n/a",
        )
        for d in multi["devices"]
    )
    blocks: list[Block] = [
        Heading("GPUs side by side"),
        Table(
            ("GPU", "Processes", "Kernels", "Busy", "In collectives", "Overlapped with compute", "Top kernel"), devices
        ),
    ]
    kinds = tuple(
        (
            k["kind"],
            f"{k['matched_instances']:,}",
            _ms(k["transfer_ns"]),
            _ms(k["wait_ns"]),
            _pct(k["transfer_share"]),
            rank_label(k["straggler"]) if k["straggler"] else "n/a",
        )
        for k in multi["collectives"]["kinds"]
    )
    if kinds:
        blocks += [
            Paragraph(
                "Collectives matched instance by instance across ranks: transfer is the fastest rank's time, "
                "wait is every other rank's time beyond it; the straggler is the rank the others wait for."
            ),
            Table(("Collective", "Instances", "Transfer", "Wait", "Transfer share", "Straggler"), kinds),
        ]
    return blocks


def build_report(
    run: str,
    m: Metrics,
    found: list[Finding],
    figures: Sequence[tuple[str, str]],
    traced: RunRecord | None = None,
    untraced: RunRecord | None = None,
    steps: pd.DataFrame | None = None,
) -> list[Block]:
    """The report's blocks for one run (with its workload when the run records are given).

    ``figures``: (path relative to the report, caption) of each figure shown; ``steps``: the capture's
    engine steps (:func:`llmprof.analysis.serving.engine_steps`), shown beside a serving run's latency.
    """
    source, timing = m["source"], run_timing(m, traced, untraced)
    blocks: list[Block] = [
        Heading(f"llmprof report: {run}", 1),
        Paragraph(
            f"Capture `{source['file']}` "
            f"(exported by Nsight Systems {source['nsys_version'] or 'of a version this export does not record'}, "
            f"export schema {source['export_schema_version'] or 'n/a'})."
        ),
        Heading("Headline numbers"),
        _headline(m, timing),
        _timing_note(timing),
        *(_workload_blocks(traced, untraced) if traced is not None else []),
        *(_serving_blocks(traced, untraced, steps) if traced is not None else []),
        Heading("Findings"),
        *finding_blocks(found, "No rule fired: no finding is supported by these numbers."),
    ]
    if figures:
        blocks.append(Heading("Figures"))
        blocks += [Figure(path, caption) for path, caption in figures]
    blocks += [Heading("Top kernels"), _top_kernels(m) if m["kernels"]["top"] else Paragraph("No kernels.")]
    blocks += _phase_blocks(m)
    blocks += _busy_blocks(m) + _idle_blocks(m) + _profiler_blocks(m, timing)
    blocks += _step_blocks(m)
    blocks += _device_blocks(m)
    blocks += [
        Heading("NVTX ranges and their GPU work"),
        _nvtx_table(m) if m["nvtx"]["ranges"] else Paragraph("No NVTX ranges."),
    ]
    if m["skipped_summaries"]:
        blocks.append(Heading("Summaries without data"))
        blocks += [Paragraph(f"`{name}`: {why}") for name, why in sorted(m["skipped_summaries"].items())]
    return blocks


def _figures_beside(figures_dir: Path, out: Path) -> list[tuple[str, str]]:
    """Links from ``out`` to the figures of a folder that holds every one of them (percent-encoded)."""
    missing = [f"{name}.png" for name in FIGURES if not (figures_dir / f"{name}.png").is_file()]
    if missing:
        raise InputError(f"{figures_dir}: figure {missing[0]} missing; run `llmprof figures` into this folder first")
    folder = Path(os.path.relpath(figures_dir, out)).as_posix()
    return [(urllib.parse.quote(path), caption) for path, caption in figure_links(FIGURES, folder)]


def write_report(
    extract_dir: str | Path,
    out: str | Path,
    *,
    run: str | None = None,
    figures_dir: str | Path | None = None,
    record: str | Path | None = None,
    baseline: str | Path | None = None,
    force: bool = False,
) -> list[Finding]:
    """Write report.md, report.html and findings.json for one run into ``out``.

    Args:
        extract_dir: the run's extract folder (metrics.json and tables).
        out: the report folder.
        run: the run's name for the title (default: the extract folder's parent name).
        figures_dir: the run's figures folder, linked relative to ``out``.
        record: the profiled run's record (run.json of the profile stage).
        baseline: the same workload's record without nsys (baseline stage).
        force: replace ``out`` if it exists.
    """
    extract_dir, out = Path(extract_dir), Path(out)
    metrics = load_metrics(extract_dir)
    traced = load_run_record(Path(record)) if record is not None else None
    untraced = load_run_record(Path(baseline)) if baseline is not None else None
    found = findings(metrics, traced, untraced)
    figures = _figures_beside(Path(figures_dir), out) if figures_dir is not None else []
    name = run or extract_dir.resolve().parent.name
    steps = engine_steps(extract_dir) if serving(traced) is not None else None
    blocks = build_report(name, metrics, found, figures, traced, untraced, steps)
    with staged_directory(out, force, "report") as stage:
        (stage / "report.md").write_text(to_markdown(blocks))
        images = embedded_images(blocks, out)
        (stage / "report.html").write_text(to_html(blocks, f"llmprof report: {name}", images))
        write_json(stage / "findings.json", [f.to_dict() for f in found])
    return found
