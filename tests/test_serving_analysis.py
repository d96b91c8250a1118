"""Engine steps of a real vLLM capture (hook mode, batch 16), and a serving run's report beside them.

The serving records are built from the bundled capture's own run records plus the documented result file of
`vllm bench serve` (tests/data/vllm_bench_serve_result), the untraced one with every latency 0.8 times as long.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, SAMPLES

from llmprof.analysis.serving import engine_steps, mean_batch_requests, phase_steps
from llmprof.analysis.study import RunEntry, numeric_sweeps, study_findings, study_table, swept_parameter
from llmprof.capture.serve import serving_record
from llmprof.common.config import run_spec
from llmprof.common.records import load_metrics
from llmprof.render.report import write_report
from llmprof.render.study import write_study

HOOK = "samples/vllm-llama1b-bs16"
INPROC = "vllm_inproc_h100_3iter/vllm"
RESULT = DATA / "vllm_bench_serve_result" / "result.json"


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


def _serving_records(folder: Path) -> tuple[Path, Path]:
    """The bundled capture's records, as a serving run's: traced, and untraced with 0.8 times the latencies."""
    settings = run_spec("srv", {"model": "m", "mode": "serve", "serve": {"request_rate": 4, "num_prompts": 16}})
    result = json.loads(RESULT.read_text())
    paths = []
    for name, scale in (("run", 1.0), ("baseline", 0.8)):
        record: dict[str, Any] = json.loads((SAMPLES / "vllm-llama1b-bs16" / f"{name}.json").read_text())
        record["spec"].update(mode="serve", serve=settings["serve"])
        scaled = {k: v * scale if k.endswith("_ms") else v for k, v in result.items()}
        record["serving"] = serving_record(scaled, settings, RESULT)
        paths.append(folder / f"{name}.json")
        paths[-1].write_text(json.dumps(record))
    return paths[0], paths[1]


def test_report_puts_latency_beside_the_engine_steps(extracted: dict[str, Path], tmp_path: Path) -> None:
    traced, untraced = _serving_records(tmp_path)
    found = write_report(extracted[HOOK], tmp_path / "report", run="srv", record=traced, baseline=untraced)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Serving: latency and the GPU behind it" in text
    assert "16 requests 4 requests/s (Poisson), input 128 tokens, output 32 tokens, client vllm" in text
    assert "| TTFT | 15.80 ms | 21.80 ms | 26.80 ms | prefill | 2 | 2 (3 max) | 32 |" in text
    assert "| TPOT | 4.90 ms | 5.50 ms | 6.00 ms | decode | 62 | 16 (16 max) | 16 |" in text
    assert "| TTFT | 19.75 ms / 15.80 ms | 27.25 ms / 21.80 ms | 33.50 ms / 26.80 ms | 25.0% | 25.0% |" in text
    assert "| Captured iteration |" not in text  # a serving load is one captured load, not iterations
    assert "Serving: latency" in (tmp_path / "report" / "report.html").read_text()
    assert "ttft_tail" not in {f.id for f in found}  # p99 / p50 = 1.7 in the documented result


def test_offline_report_has_no_serving_section(extracted: dict[str, Path], tmp_path: Path) -> None:
    folder = SAMPLES / "vllm-llama1b-bs16"
    write_report(extracted[HOOK], tmp_path / "r", record=folder / "run.json", baseline=folder / "baseline.json")
    text = (tmp_path / "r" / "report.md").read_text()
    assert "Serving: latency" not in text and "| Captured iteration |" in text


def _serving_entry(tmp: Path, extracted: dict[str, Path], size: int, rate: float, slower: float) -> RunEntry:
    """A serving run at ``rate`` requests/s from the bundled capture of batch ``size``; latency ``slower`` × the
    documented result's, throughput ``rate``."""
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
    assert table["ttft_p99_ms_untraced"].tolist() == [33.5, pytest.approx(100.5)]
    assert table["request_per_s_untraced"].tolist() == [2.0, 8.0] and table["mean_batch_requests"].notna().all()
    (found,) = [f for f in study_findings(table) if f.id == "latency_throughput"]
    assert found.title == "From request rate 2.0 to 8.0: requests/s 4.0×, TTFT p99 3.0×, TPOT p50 3.0×"
    assert "request rate 2.0: 2.00 requests/s, TTFT p99 33.5 ms" in found.evidence
    write_study(entries, tmp_path / "study")
    assert (tmp_path / "study" / "figures" / "serving.png").stat().st_size > 0
    text = (tmp_path / "study" / "report.md").read_text()
    assert "| TTFT p99 |" in text and "| srv-rate8 | ok |" in text


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
