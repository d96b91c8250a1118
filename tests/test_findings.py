"""Each finding rule on the real demo's metrics: it fires just past its threshold, not just below, with the numbers.

A new rule comes with one test here: start from the demo's ``metrics.json``
(or the demo study's table), move the number the rule reads to either side of
its threshold, and check the finding and the numbers in its evidence.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd
import pytest
from conftest import DATA, SAMPLES

from llmprof.analysis import findings as rules
from llmprof.analysis.findings import RULES, Finding, RunResults, findings
from llmprof.analysis.study import (
    SHARE_CHANGE,
    STUDY_RULES,
    RunEntry,
    StudyResults,
    comparison_groups,
    numeric_sweeps,
    study_findings,
    study_table,
)
from llmprof.analysis.timing import ASSUMPTION
from llmprof.capture.serve import serving_record
from llmprof.common.config import run_spec
from llmprof.common.records import Metrics, RunRecord, load_metrics, load_run_record

DEMO = "vllm_inproc_h100_3iter/vllm"
RULE = {rule.id: rule for rule in RULES}
STUDY_RULE = {rule.id: rule for rule in STUDY_RULES}


@pytest.fixture
def m(extracted: dict[str, Path]) -> Metrics:
    """A fresh copy of the demo's metrics for each test to change."""
    return load_metrics(extracted[DEMO])


def _records() -> tuple[RunRecord, RunRecord]:
    folder = SAMPLES / "vllm-llama1b-bs16"
    return load_run_record(folder / "run.json"), load_run_record(folder / "baseline.json")


def fired(
    rule_id: str, metrics: Metrics, traced: RunRecord | None = None, untraced: RunRecord | None = None
) -> Finding:
    """The one finding of a rule; fails when it did not fire."""
    (found,) = RULE[rule_id].apply(RunResults(metrics, traced, untraced))
    return found


def silent(rule_id: str, metrics: Metrics, traced: RunRecord | None = None, untraced: RunRecord | None = None) -> bool:
    return not RULE[rule_id].apply(RunResults(metrics, traced, untraced))


def test_the_demo_findings_and_their_order(m: Metrics) -> None:
    assert [(f.id, f.severity) for f in findings(m)] == [
        ("gpu_idle", "warning"),
        ("dominant_kernel_family", "warning"),
        ("launch_bound_steps", "warning"),
        ("idle_cause", "warning"),
        ("short_kernels", "info"),
        ("cpu_threads_waiting", "info"),
        ("profiler_work", "info"),
        ("nsys_expert_rules", "info"),
    ]


def test_rules_are_listed_once_with_what_they_read() -> None:
    assert [r.id for r in RULES] == [
        "no_gpu_work",
        "nvtx_absent",
        "setup_in_capture",
        "host_blocked_in_sync",
        "gpu_idle",
        "dominant_kernel_family",
        "short_kernels",
        "cpu_threads_waiting",
        "collective_balance",
        "setup_outliers",
        "library_nvtx_only",
        "few_steady_steps",
        "launch_bound_steps",
        "profiler_overhead",
        "copies_fill_gpu",
        "idle_cause",
        "profiler_work",
        "nsys_expert_rules",
        "ttft_tail",
    ]
    assert all(r.description.endswith(".") for r in RULES)
    assert RULE["gpu_idle"].thresholds == {"idle_share": rules.GPU_IDLE_SHARE}


def test_no_gpu_work(m: Metrics, extracted: dict[str, Path]) -> None:
    assert silent("no_gpu_work", m)
    m["gpu_activity"]["captured"] = False
    assert "13,444 CUDA API calls were traced" in fired("no_gpu_work", m).evidence
    wsl = load_metrics(extracted["capture_without_kernels/report1"])
    assert f"{wsl['cuda_api']['count']:,} CUDA API calls" in fired("no_gpu_work", wsl).evidence


def test_nvtx_absent(m: Metrics) -> None:
    assert silent("nvtx_absent", m)
    m["nvtx"]["range_count"] = 0
    assert fired("nvtx_absent", m).title == "NVTX ranges absent"


def test_setup_in_capture_by_copies(m: Metrics) -> None:
    m["memcpy"]["directions"]["H2D"]["bytes"] = rules.SETUP_H2D_BYTES - 1
    assert silent("setup_in_capture", m)
    m["memcpy"]["directions"]["H2D"]["bytes"] = rules.SETUP_H2D_BYTES
    assert fired("setup_in_capture", m).title == "Capture includes setup (256.0 MB copied host-to-device)"
    m["memcpy"]["directions"]["H2D"]["bytes"] = 6_400_000_000
    assert fired("setup_in_capture", m).title == "Capture includes setup (6.4 GB copied host-to-device)"


def test_setup_in_capture_by_allocation(m: Metrics) -> None:
    m["cuda_api"]["kinds"]["alloc"] = {"time_ns": 1, "count": 1, "share": rules.SETUP_ALLOC_SHARE - 0.001}
    assert silent("setup_in_capture", m)
    m["cuda_api"]["kinds"]["alloc"]["share"] = rules.SETUP_ALLOC_SHARE + 0.001
    assert "allocation calls take 25.1% of CUDA API time" in fired("setup_in_capture", m).title


def test_host_blocked_in_sync(m: Metrics) -> None:
    api = m["cuda_api"]
    api["sync_share"] = rules.SYNC_SHARE - 0.001
    assert silent("host_blocked_in_sync", m)
    api["sync_share"] = rules.SYNC_SHARE + 0.001
    found = fired("host_blocked_in_sync", m)
    assert found.title == "Host blocked in synchronization 30.1% of CUDA API time"
    sync = api["kinds"]["sync"]
    assert (sync["count"], sync["time_ns"], api["time_ns"]) == (1_176, 6_820_884, 147_262_725)
    assert found.evidence.startswith("1,176 synchronizing calls")
    assert "took 6.82 ms of 147.26 ms in CUDA calls" in found.evidence


def test_gpu_idle(m: Metrics) -> None:
    activity = m["gpu_activity"]
    assert fired("gpu_idle", m).title == "GPU idle 58.1% of the capture window"  # 62.2% less the profiler's 4.1%
    m["profiler"]["gpu_idle_ns"] = 0
    activity["idle_fraction"] = rules.GPU_IDLE_SHARE - 0.001
    assert silent("gpu_idle", m)
    activity["idle_fraction"] = rules.GPU_IDLE_SHARE + 0.001
    found = fired("gpu_idle", m)
    assert found.title == "GPU idle 20.1% of the capture window"
    largest = max(g["duration_ns"] for g in activity["devices"][0]["largest_gaps"])
    assert (activity["busy_ns"], m["capture_window"]["duration_ns"], largest) == (244_674_348, 647_378_608, 3_019_376)
    assert found.evidence == (
        "GPU busy 244.67 ms of a 647.38 ms window; largest gap between GPU operations 3.02 ms. "
        "The raw share is inflated by the tracer by an unknown amount (no untraced run of the same workload)."
    )


@pytest.fixture
def bs16(extracted: dict[str, Path]) -> Metrics:
    """The batch-16 sample's metrics, whose run records (:func:`_records`) are of the same workload."""
    return load_metrics(extracted["samples/vllm-llama1b-bs16"])


def _untraced_latency(untraced: RunRecord, seconds: float) -> None:
    for iteration in untraced["iterations"]:
        iteration["latency_s"] = seconds


def test_gpu_idle_of_an_untraced_iteration(bs16: Metrics) -> None:
    traced, untraced = _records()
    found = fired("gpu_idle", bs16, traced, untraced)
    busy_ns = bs16["gpu_activity"]["busy_ns"]
    untraced_ns = statistics.median(i["latency_s"] for i in untraced["iterations"]) * 1e9
    traced_ns = statistics.median(i["latency_s"] for i in traced["iterations"]) * 1e9
    assert found.title == f"GPU idle {rules.pct(1 - busy_ns / 2 / untraced_ns)} of an untraced iteration"
    assert found.title == "GPU idle 50.2% of an untraced iteration"  # raw: 76.8% of the traced window
    assert found.evidence.startswith(
        f"Raw {rules.pct(rules._idle_without_profiler(bs16) or 0)} idle of the traced window "
        "(the profiler's own work left out), inflated by the "
        f"tracer by {rules.pct(traced_ns / untraced_ns - 1)} per iteration. GPU busy {busy_ns / 2e6:.2f} ms per "
        f"captured iteration (2 captured) against an untraced median iteration of {untraced_ns / 1e6:.2f} ms"
    )
    assert "Raw 61.0% idle" in found.evidence and "by 81.2% per iteration" in found.evidence
    assert found.evidence.endswith(ASSUMPTION)
    _untraced_latency(untraced, busy_ns / 2 / 1e9 / (1 - rules.GPU_IDLE_SHARE + 0.001))
    assert silent("gpu_idle", bs16, traced, untraced)  # the raw share (61.0%) no longer decides
    _untraced_latency(untraced, busy_ns / 2 / 1e9 / (1 - rules.GPU_IDLE_SHARE - 0.001))
    assert fired("gpu_idle", bs16, traced, untraced).title == "GPU idle 20.1% of an untraced iteration"


def _graphs_traced_whole(traced: RunRecord) -> None:
    nsys = traced["nsys"]
    nsys["arguments"] = [
        a.replace("=node", "=graph") if a.startswith("--cuda-graph-trace") else a for a in nsys["arguments"]
    ]


def test_kernel_findings_say_graph_kernels_are_not_recorded(bs16: Metrics) -> None:
    traced, untraced = _records()
    _graphs_traced_whole(traced)
    for rule_id, what in (
        ("gpu_idle", "GPU idle share"),
        ("dominant_kernel_family", "Kernel families"),
        ("short_kernels", "Kernel durations"),
    ):
        found = fired(rule_id, bs16, traced, untraced)
        assert found.severity == "info"
        assert found.title == f"{what} not measured: kernels inside CUDA graphs are not recorded one by one"
        assert "%" not in found.title + found.evidence
    assert "GEMM kernels" in fired("dominant_kernel_family", bs16, *_records()).title  # traced per node: a number


def _set_top_share(m: Metrics, share: float) -> None:
    for category in m["kernels"]["categories"]:
        category["share"] = share if category["category"] == "gemm" else min(category["share"], share / 2)


def test_dominant_kernel_family(m: Metrics) -> None:
    _set_top_share(m, rules.DOMINANT_SHARE - 0.001)
    assert fired("dominant_kernel_family", m).severity == "info"
    _set_top_share(m, rules.DOMINANT_SHARE + 0.001)
    found = fired("dominant_kernel_family", m)
    assert found.severity == "warning"
    assert found.title == "GEMM kernels 50.1% of GPU time (97.2% of GEMM time in tensor-core kernels)"
    gemm = m["kernels"]["categories"][0]
    assert (gemm["count"], gemm["time_ns"], m["kernels"]["time_ns"]) == (15_552, 176_972_679, 243_561_007)
    assert found.evidence == (
        "15,552 gemm kernels ran for 176.97 ms of 243.56 ms; "
        "the largest is nvjet_sm90_tst_128x8_64x12_2x1_v_bz_TNT (32.0%)."
    )
    assert found.next_step == rules.NEXT_FOR_FAMILY["gemm"]
    for category in m["kernels"]["categories"]:
        category["time_ns"] = 0
    assert silent("dominant_kernel_family", m)


def test_short_kernels(m: Metrics) -> None:
    kernels = m["kernels"]
    kernels["mean_duration_ns"] = rules.SHORT_KERNEL_NS
    assert silent("short_kernels", m)
    kernels["mean_duration_ns"] = rules.SHORT_KERNEL_NS - 1
    assert fired("short_kernels", m).title == "Many short kernels: mean 10.0 µs over 40,755 kernels"
    kernels["count"] = rules.SHORT_KERNEL_MIN_COUNT - 1
    assert silent("short_kernels", m)
    kernels["count"] = rules.SHORT_KERNEL_MIN_COUNT
    assert fired("short_kernels", m).title == "Many short kernels: mean 10.0 µs over 1,000 kernels"


def test_cpu_threads_waiting(m: Metrics) -> None:
    osrt = m["osrt"]
    osrt["waiting_share"] = rules.WAITING_SHARE - 0.001
    assert silent("cpu_threads_waiting", m)
    osrt["waiting_share"] = rules.WAITING_SHARE + 0.001
    found = fired("cpu_threads_waiting", m)
    assert found.title == "CPU threads mostly waiting: 50.1% of OS runtime time in waits"
    assert [(t["name"], t["time_ns"]) for t in osrt["top"][:3]] == [
        ("pthread_cond_timedwait", 5_704_601_465),
        ("epoll_wait", 3_876_035_727),
        ("epoll_pwait", 1_000_270_434),
    ]
    assert found.evidence == (
        "Largest OS runtime calls: pthread_cond_timedwait 5704.60 ms, epoll_wait 3876.04 ms, epoll_pwait 1000.27 ms."
    )


def test_profiler_overhead(m: Metrics) -> None:
    traced, untraced = _records()
    assert silent("profiler_overhead", m, traced) and silent("profiler_overhead", m, None, untraced)
    untraced["output_tokens_per_s"] = 4000.0
    traced["output_tokens_per_s"] = 4000.0 * (1 - rules.OVERHEAD_SHARE) + 1
    assert fired("profiler_overhead", m, traced, untraced).severity == "info"
    traced["output_tokens_per_s"] = 4000.0 * (1 - rules.OVERHEAD_SHARE) - 1
    found = fired("profiler_overhead", m, traced, untraced)
    assert found.severity == "warning" and found.title == "Profiler overhead: 10.0% of throughput under nsys"
    assert found.evidence.startswith("3,599 output tok/s traced against 4,000 untraced")
    traced["output_tokens_per_s"] = None
    assert silent("profiler_overhead", m, traced, untraced)


def test_nsys_expert_rules(m: Metrics, extracted: dict[str, Path]) -> None:
    found = fired("nsys_expert_rules", m)
    assert found.title == "nsys analyze gpu_time_util: 2 stretches under 50% GPU time utilization " + (
        "(copies and the profiler's flushes count as use)"
    )
    assert "lowest 34.2% over 257.08 ms on GPU 0" in found.evidence and found.numbers == {"rows": 2}
    sync_heavy = load_metrics(extracted["nsys2024_cloverleaf_a100/perlmutter-cloverleaf-cuda"])
    titles = [f.title for f in RULE["nsys_expert_rules"].apply(RunResults(sync_heavy))]
    assert titles[0].startswith("nsys analyze cuda_api_sync: ") and "synchronous copies" in titles[1]
    for record in m["nsys_rules"]:
        record["rows"] = 0
    assert silent("nsys_expert_rules", m)


def test_warnings_come_first_then_rule_order(bs16: Metrics) -> None:
    traced, untraced = _records()
    found = findings(bs16, traced, untraced)
    assert [f.id for f in found] == [
        "gpu_idle",
        "dominant_kernel_family",
        "launch_bound_steps",
        "profiler_overhead",
        "idle_cause",
        "short_kernels",
        "cpu_threads_waiting",
        "profiler_work",
        "nsys_expert_rules",
    ]
    assert found[3].title == "Profiler overhead: 44.8% of throughput under nsys"
    assert found[3].evidence.startswith("3,224 output tok/s traced against 5,843 untraced")


# The study's rules, on the demo study's two runs (batch size 1 and 16)


@pytest.fixture
def study(extracted: dict[str, Path]) -> pd.DataFrame:
    """The demo study's table, built from the sample captures and their run records."""
    entries = [
        RunEntry(
            f"llama1b-bs{size}",
            extracted[f"samples/vllm-llama1b-bs{size}"],
            SAMPLES / f"vllm-llama1b-bs{size}" / "run.json",
            SAMPLES / f"vllm-llama1b-bs{size}" / "baseline.json",
        )
        for size in (1, 16)
    ]
    return study_table(entries)


def compared(rule_id: str, table: pd.DataFrame) -> list[Finding]:
    return STUDY_RULE[rule_id].apply(StudyResults(table, numeric_sweeps(table)))


def test_the_demo_study_findings(study: pd.DataFrame) -> None:
    assert [(f.id, f.title) for f in study_findings(study)] == [
        (
            "idle_trend",
            "GPU idle rises from 48.4% at batch size 1 to 50.2% at batch size 16 (share of an untraced iteration)",
        ),
        ("throughput_scaling", "Throughput grows 14.0× from batch size 1 to 16 (untraced)"),
        ("overhead_range", "Profiler overhead 29.1%–44.8% across runs"),
    ]


def test_run_failed(study: pd.DataFrame) -> None:
    assert not compared("run_failed", study)
    failed = study.copy()
    failed.loc[0, ["status", "reason"]] = ["failed", "extract: database disk image is malformed"]
    (found,) = compared("run_failed", failed)
    assert (found.severity, found.title, found.evidence) == (
        "warning",
        "Run llama1b-bs1 failed",
        "extract: database disk image is malformed",
    )
    assert [f.id for f in study_findings(failed)] == ["run_failed"]  # one complete run: nothing to compare


def test_idle_trend(study: pd.DataFrame) -> None:
    (found,) = compared("idle_trend", study)
    assert study["busy_share_corrected"].round(3).tolist() == [0.516, 0.498]
    assert study["busy_share_raw"].round(3).tolist() == [0.304, 0.232]
    assert study["iteration_overhead"].round(3).tolist() == [0.410, 0.812]
    assert found.evidence == (
        "Busy share of an untraced iteration per run: llama1b-bs1 51.6%, llama1b-bs16 49.8%; "
        "of the traced window (raw, inflated by the tracer): llama1b-bs1 30.4%, llama1b-bs16 23.2%."
    )
    study.loc[1, "busy_share_corrected"] = 0.5
    assert compared("idle_trend", study)[0].title.startswith("GPU idle rises from 48.4% at batch size 1 to 50.0%")
    study.loc[1, "busy_share_corrected"] = None  # one run without an untraced run: the raw shares, said inflated
    (found,) = compared("idle_trend", study)
    assert found.title == (
        "GPU idle rises from 69.6% at batch size 1 to 76.8% at batch size 16 "
        "(share of the traced window, inflated by the tracer)"
    )
    assert found.evidence.startswith("Busy share of the traced window per run (raw: inflated by the tracer by an")
    assert found.evidence.endswith(": llama1b-bs1 30.4%, llama1b-bs16 23.2%.")
    study.loc[1, "busy_share_raw"] = None
    assert not compared("idle_trend", study)


def test_throughput_scaling(study: pd.DataFrame) -> None:
    (found,) = compared("throughput_scaling", study)
    assert study["output_tok_per_s_untraced"].round().tolist() == [418.0, 5843.0]
    assert found.evidence == "418 → 5,843 output tok/s; batch size grows 16.0×."
    study["output_tok_per_s_untraced"] = None
    (found,) = compared("throughput_scaling", study)
    assert study["output_tok_per_s_traced"].round().tolist() == [296.0, 3224.0]
    assert found.title == "Throughput grows 10.9× from batch size 1 to 16 (traced)"
    assert found.evidence == "296 → 3,224 output tok/s; batch size grows 16.0×."
    study.loc[0, "output_tok_per_s_traced"] = 0.0
    assert not compared("throughput_scaling", study)


def test_category_shift(study: pd.DataFrame) -> None:
    assert not compared("category_shift", study)  # the demo's families move less than SHARE_CHANGE
    study.loc[1, "share_attention"] = study.loc[0, "share_attention"] + SHARE_CHANGE - 0.001
    assert not compared("category_shift", study)
    study.loc[1, "share_attention"] = study.loc[0, "share_attention"] + SHARE_CHANGE + 0.001
    (found,) = compared("category_shift", study)
    assert found.title == "attention's share of GPU time grows from 13.6% to 18.7% with batch size"
    assert found.evidence == "llama1b-bs1: 13.6%; llama1b-bs16: 18.7%."


def test_overhead_range(study: pd.DataFrame) -> None:
    (found,) = compared("overhead_range", study)
    assert study["profiler_overhead"].round(3).tolist() == [0.291, 0.448]
    assert found.title == "Profiler overhead 29.1%–44.8% across runs"
    study["profiler_overhead"] = None
    assert not compared("overhead_range", study)


def test_comparisons_need_a_numeric_sweep(study: pd.DataFrame) -> None:
    same = study.assign(batch_size=pd.array([16, 16], dtype="Int64"))
    assert numeric_sweeps(same) == () and study_findings(same) == []
    modes = same.assign(capture_mode=["vllm_hook", "in_process"])
    modes["comparison_group"] = comparison_groups(modes)
    assert numeric_sweeps(modes) == ()
    assert [f.id for f in study_findings(modes)] == ["comparison_split"]


def _entry(run: str, size: int, extracted: dict[str, Path], record: Path | None = None) -> RunEntry:
    folder = SAMPLES / f"vllm-llama1b-bs{size}"
    extract = extracted[f"samples/vllm-llama1b-bs{size}"]
    return RunEntry(run, extract, record or folder / "run.json", folder / "baseline.json")


def test_runs_of_another_capture_mode_are_split_apart(extracted: dict[str, Path], tmp_path: Path) -> None:
    entries = [_entry(f"hook-bs{size}", size, extracted) for size in (1, 16)]
    for size in (1, 16):
        record = load_run_record(SAMPLES / f"vllm-llama1b-bs{size}" / "run.json")
        record["capture_mode"] = record["spec"]["capture_mode"] = "in_process"
        path = tmp_path / f"bs{size}.json"
        path.write_text(json.dumps(record))
        entries.append(_entry(f"inproc-bs{size}", size, extracted, path))
    table = study_table(entries)
    assert table["comparison_group"].tolist() == ["capture_mode=vllm_hook"] * 2 + ["capture_mode=in_process"] * 2
    assert [(s.group, s.parameter, s.runs["run"].tolist()) for s in numeric_sweeps(table)] == [
        ("capture_mode=vllm_hook", "batch_size", ["hook-bs1", "hook-bs16"]),
        ("capture_mode=in_process", "batch_size", ["inproc-bs1", "inproc-bs16"]),
    ]
    found = study_findings(table)
    split = next(f for f in found if f.id == "comparison_split")
    assert split.title == "Runs split into 2 comparison groups by capture_mode"
    assert split.evidence.startswith(
        "capture_mode=vllm_hook: hook-bs1, hook-bs16; capture_mode=in_process: inproc-bs1, inproc-bs16."
    )
    trends = [f.title for f in found if f.id == "throughput_scaling"]
    assert trends == [
        "Throughput grows 14.0× from batch size 1 to 16 (untraced) (capture_mode=vllm_hook)",
        "Throughput grows 14.0× from batch size 1 to 16 (untraced) (capture_mode=in_process)",
    ]
    idle = [f.title for f in found if f.id == "idle_trend"]
    assert [t.split(" (")[1] for t in idle] == ["capture_mode=vllm_hook)", "capture_mode=in_process)"]


def _serving(p50_ms: float, p99_ms: float) -> dict[str, object]:
    """A serving record of a real client result (tests/data/vllm_serve_h200_rate32) with the given TTFT."""
    document = json.loads((DATA / "vllm_serve_h200_rate32" / "client-result.json").read_text())
    document.update(p50_ttft_ms=p50_ms, p99_ttft_ms=p99_ms)
    settings = run_spec("srv", {"model": "m", "mode": "serve", "serve": {"request_rate": 32, "num_prompts": 24}})
    return dict(serving_record(document, settings, DATA / "result.json"))


def test_ttft_tail(m: Metrics) -> None:
    traced, untraced = _records()
    assert silent("ttft_tail", m, traced, untraced)  # offline runs have no serving load
    traced["serving"] = _serving(10.0, 10.0 * rules.TTFT_TAIL_RATIO + 0.01)  # type: ignore[typeddict-item]
    found = fired("ttft_tail", m, traced)
    assert found.confidence == "medium" and found.title == "Time to first token: p99 3.0× the median at 32 requests/s"
    assert found.numbers["ttft_p99_ms"] == 30.01 and "traced load of 24 requests" in found.evidence
    untraced["serving"] = _serving(10.0, 10.0 * rules.TTFT_TAIL_RATIO - 0.01)  # type: ignore[typeddict-item]
    assert silent("ttft_tail", m, traced, untraced)  # the untraced load is the one judged where it exists
    untraced["serving"] = _serving(10.0, 10.0 * rules.TTFT_TAIL_RATIO + 0.01)  # type: ignore[typeddict-item]
    assert fired("ttft_tail", m, traced, untraced).confidence == "high"


def test_profiler_overhead_of_a_serving_run_is_per_token(m: Metrics) -> None:
    """At a fixed request rate throughput hides the tracer's cost; the median TPOT shows it."""
    traced, untraced = _records()
    traced["serving"], untraced["serving"] = _serving(10, 20), _serving(10, 20)  # type: ignore[typeddict-item]
    untraced["serving"]["tpot"]["p50_ms"] = 6.0  # type: ignore[typeddict-item]
    traced["serving"]["tpot"]["p50_ms"] = 6.0 / (1 - rules.OVERHEAD_SHARE) - 0.001  # type: ignore[typeddict-item]
    found = fired("profiler_overhead", m, traced, untraced)
    assert found.severity == "info" and found.title.endswith("of per-token speed under nsys")
    traced["serving"]["tpot"]["p50_ms"] = 6.0 / (1 - rules.OVERHEAD_SHARE) + 0.001  # type: ignore[typeddict-item]
    found = fired("profiler_overhead", m, traced, untraced)
    assert found.severity == "warning" and found.title == "Profiler overhead: 10.0% of per-token speed under nsys"
    assert found.evidence.startswith("Median time per output token 6.67 ms traced against 6.00 ms untraced")
