"""Engine steps of real vLLM captures, and a serving run's report beside them.

The serving run is a real one (tests/data/vllm_serve_h200_rate32: `vllm serve` on an H200 under `vllm bench serve`
at 32 requests/s, traced and untraced). The study tests build request-rate sweeps from the offline captures' own
run records plus that run's client result, scaled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, SAMPLES

from llmprof.analysis.findings import profiler_overhead
from llmprof.analysis.serving import engine_steps, mean_batch_requests, phase_steps
from llmprof.analysis.study import RunEntry, numeric_sweeps, study_findings, study_table, swept_parameter
from llmprof.analysis.timing import iteration_timing
from llmprof.capture.serve import serving_record
from llmprof.common.config import run_spec
from llmprof.common.records import load_metrics
from llmprof.render.report import write_report
from llmprof.render.study import write_study

HOOK = "samples/vllm-llama1b-bs16"
INPROC = "vllm_inproc_h100_3iter/vllm"
SERVE = "vllm_serve_h200_rate32/profile"
SERVE_RUN = DATA / "vllm_serve_h200_rate32"
RESULT = DATA / "vllm_serve_h200_rate32" / "client-result.json"


def test_steps_carry_phase_batch_and_gpu_time(extracted: dict[str, Path]) -> None:
    steps = engine_steps(extracted[HOOK])
    assert len(steps) == 66 and steps["start_ns"].is_monotonic_increasing
    first_mixed = steps[steps["phase"] == "mixed"].iloc[0]  # execute_context_13(208)_generation_3(3)
    assert (first_mixed["context_requests"], first_mixed["context_tokens"]) == (13, 208)
    assert (first_mixed["batch_requests"], first_mixed["batch_tokens"]) == (16, 211)
    assert steps["gpu_busy_share"].between(0, 1).all() and (steps["duration_ns"] > 0).all()
    phases = {p.phase: p for p in phase_steps(steps)}
    assert {name: p.steps for name, p in phases.items()} == {"prefill": 2, "decode": 62, "mixed": 2}
    assert phases["decode"].median_batch_requests == 16 and phases["prefill"].max_batch_requests == 3
    assert sum(p.gpu_time_share for p in phases.values()) == pytest.approx(1.0)
    recorded = {p["phase"]: p for p in load_metrics(extracted[HOOK])["phases"]["phases"]}
    for name, phase in phases.items():  # the same GPU time the extract stage files under each phase
        assert phase.gpu_time_ns == recorded[name]["gpu_time_ns"], name
    # the range names: prefill of 3 and 1 requests, mixed 13 + 3 and 15 + 1, decode of 13, 15 and 60 times 16
    assert mean_batch_requests(steps) == pytest.approx((3 + 1 + 16 + 16 + 13 + 15 + 16 * 60) / 66)


def test_a_capture_without_step_ranges_has_no_steps(extracted: dict[str, Path]) -> None:
    steps = engine_steps(extracted[INPROC])
    assert steps.empty and "batch_requests" in steps.columns
    assert phase_steps(steps) == [] and mean_batch_requests(steps) is None


def test_serving_capture_steps_account_for_every_output_token(extracted: dict[str, Path]) -> None:
    """Each engine step yields one token per running request: the steps' requests add up to the client's tokens."""
    steps = engine_steps(extracted[SERVE])
    result = json.loads(RESULT.read_text())
    assert int(steps["batch_requests"].sum()) == result["total_output_tokens"] == 24 * 16
    phases = {p.phase: p for p in phase_steps(steps)}
    assert {name: p.steps for name, p in phases.items()} == {"prefill": 4, "decode": 173, "mixed": 18}
    context = steps["context_requests"].sum()
    assert context == result["completed"]  # every request's prefill is in one step, alone or beside decodes


def test_report_puts_latency_beside_the_engine_steps(extracted: dict[str, Path], tmp_path: Path) -> None:
    traced, untraced = SERVE_RUN / "run.json", SERVE_RUN / "baseline.json"
    found = write_report(extracted[SERVE], tmp_path / "report", run="srv", record=traced, baseline=untraced)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Serving: latency and the GPU behind it" in text
    assert "24 requests at 32 requests/s (Poisson arrivals), input 64 tokens, output 16 tokens, client vllm" in text
    assert "| TTFT | 14.41 ms | 15.89 ms | 16.86 ms | prefill | 4 | 1 (1 max) | 64 |" in text
    assert "| TPOT | 1.94 ms | 2.74 ms | 2.79 ms | decode | 173 | 1 (5 max) | 1 |" in text
    assert "| TTFT | 20.08 ms / 14.41 ms | 22.64 ms / 15.89 ms | 28.23 ms / 16.86 ms | 39.3% | 67.4% |" in text
    assert "| Per-output-token overhead (traced / untraced median TPOT − 1) | 73.3% |" in text  # 3.36 / 1.94 ms
    assert "Measured slowdown of a traced output token: 73.3%" in text
    assert "| Captured iteration |" not in text  # a serving load is one captured load, not iterations
    assert "Serving: latency" in (tmp_path / "report" / "report.html").read_text()
    overhead = next(f for f in found if f.id == "profiler_overhead")
    assert overhead.title == "Profiler overhead: 42.3% of per-token speed under nsys"


def test_offline_report_has_no_serving_section(extracted: dict[str, Path], tmp_path: Path) -> None:
    folder = SAMPLES / "vllm-llama1b-bs16"
    write_report(extracted[HOOK], tmp_path / "r", record=folder / "run.json", baseline=folder / "baseline.json")
    text = (tmp_path / "r" / "report.md").read_text()
    assert "Serving: latency" not in text and "| Captured iteration |" in text


def _serving_entry(tmp: Path, extracted: dict[str, Path], size: int, rate: float, slower: float) -> RunEntry:
    """A serving run at ``rate`` requests/s from the bundled capture of batch ``size``; latency ``slower`` × the
    real client result's, throughput ``rate``."""
    settings = run_spec("srv", {"model": "m", "mode": "serve", "serve": {"request_rate": rate, "num_prompts": 16}})
    paths = []
    for name in ("run", "baseline"):
        record: dict[str, Any] = json.loads((SAMPLES / f"vllm-llama1b-bs{size}" / f"{name}.json").read_text())
        record["spec"].update(mode="serve", serve=settings["serve"])
        result = {k: v * slower if k.endswith("_ms") else v for k, v in json.loads(RESULT.read_text()).items()}
        result["request_throughput"] = rate
        record["serving"] = serving_record(result, settings, RESULT)
        paths.append(tmp / f"rate{rate}-{name}.json")
        paths[-1].write_text(json.dumps(record))
    sweep = {"name": "srv", "values": {"serve.request_rate": rate}}
    return RunEntry(f"srv-rate{rate:g}", extracted[f"samples/vllm-llama1b-bs{size}"], paths[0], paths[1], None, sweep)


def test_study_sweeps_the_request_rate(extracted: dict[str, Path], tmp_path: Path) -> None:
    entries = [_serving_entry(tmp_path, extracted, 1, 2.0, 1.0), _serving_entry(tmp_path, extracted, 16, 8.0, 3.0)]
    table = study_table(entries)
    assert table["mode"].tolist() == ["serve", "serve"] and table["request_rate"].tolist() == [2.0, 8.0]
    assert swept_parameter(table) == "request_rate"
    p99 = json.loads(RESULT.read_text())["p99_ttft_ms"]
    assert table["ttft_p99_ms_untraced"].tolist() == [p99, pytest.approx(3 * p99)]
    assert table["request_per_s_untraced"].tolist() == [2.0, 8.0] and table["mean_batch_requests"].notna().all()
    (served,) = [f for f in study_findings(table) if f.id == "throughput_scaling"]
    assert served.title == "Served 8.0 of 8 requests/s offered at the highest rate (100.0%)"
    assert "2 offered: 2.00 served; 8 offered: 8.00 served" in served.evidence
    (overhead,) = [f for f in study_findings(table) if f.id == "overhead_range"]
    assert overhead.title.startswith("Profiler overhead: median TPOT ") and "per-token speed lost" in overhead.evidence
    (found,) = [f for f in study_findings(table) if f.id == "latency_throughput"]
    assert found.title == "From request rate 2.0 to 8.0: requests/s 4.0×, TTFT p99 3.0×, TPOT p50 3.0×"
    assert f"request rate 2.0: 2.00 requests/s, TTFT p99 {p99:.1f} ms" in found.evidence
    write_study(entries, tmp_path / "study")
    assert (tmp_path / "study" / "figures" / "serving.png").stat().st_size > 0
    text = (tmp_path / "study" / "report.md").read_text()
    assert "| TTFT p99 |" in text and "| srv-rate8 | ok |" in text
    assert "| per-token speed lost to nsys | TPOT slowdown under nsys |" in text  # a fixed rate hides throughput
    assert "| GPU busy, untraced load |" in text and "iteration" not in text.split("## Findings")[0]


def test_study_refuses_to_mix_offline_and_serving_runs(extracted: dict[str, Path], tmp_path: Path) -> None:
    offline = RunEntry(
        "offline-bs16",
        extracted["samples/vllm-llama1b-bs16"],
        SAMPLES / "vllm-llama1b-bs16" / "run.json",
        SAMPLES / "vllm-llama1b-bs16" / "baseline.json",
    )
    table = study_table([offline, _serving_entry(tmp_path, extracted, 1, 2.0, 1.0)])
    assert table["comparison_group"].tolist() == ["mode=offline", "mode=serve"]
    assert numeric_sweeps(table) == ()
    assert [f.id for f in study_findings(table)] == ["comparison_split"]
    write_study([offline, _serving_entry(tmp_path, extracted, 1, 2.0, 1.0)], tmp_path / "study")
    text = (tmp_path / "study" / "report.md").read_text()
    assert "| lost to nsys (tok/s; serving: per-token speed) | slowdown under nsys (iteration; serving: TPOT) |" in text


@pytest.mark.parametrize("tpot", [0.0, float("nan"), None], ids=["one-token-requests", "nan", "missing"])
def test_serving_overhead_without_a_tpot_is_unknown_not_the_load_duration(
    tpot: float | None, extracted: dict[str, Path]
) -> None:
    """Without a TPOT to compare, a serving run's overhead is not measured: never the load's duration ratio, which
    its request rate sets, nor the throughput lost."""
    traced, untraced = (json.loads((SERVE_RUN / name).read_text()) for name in ("run.json", "baseline.json"))
    assert profiler_overhead(traced, untraced) == pytest.approx(1 - 1.9400 / 3.3630, abs=1e-4)
    traced["serving"]["tpot"]["p50_ms"] = tpot
    timing = iteration_timing(load_metrics(extracted[SERVE]), traced, untraced)
    assert (timing["iteration_overhead"], timing["overhead_unit"]) == (None, "output token")
    assert profiler_overhead(traced, untraced) is None
