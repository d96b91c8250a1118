"""Iteration timing on the bundled captures: the raw busy share beside the one corrected by the untraced run."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES

from llmprof.analysis.findings import pct
from llmprof.analysis.timing import ASSUMPTION, GRAPHS_WHOLE, NO_TRACED, NO_UNTRACED, iteration_timing
from llmprof.common.records import Metrics, RunRecord, load_metrics, load_run_record
from llmprof.render.report import write_report


def _sample(size: int, extracted: dict[str, Path]) -> tuple[Metrics, RunRecord, RunRecord]:
    folder = SAMPLES / f"vllm-llama1b-bs{size}"
    metrics = load_metrics(extracted[f"samples/vllm-llama1b-bs{size}"])
    return metrics, load_run_record(folder / "run.json"), load_run_record(folder / "baseline.json")


@pytest.mark.parametrize(
    ("size", "busy_ms", "untraced_ms", "corrected", "raw"),
    [(1, 79.06, 76.6, 0.516, 0.304), (16, 87.26, 87.6, 0.498, 0.232)],
)
def test_corrected_busy_share_of_the_bundled_captures(
    extracted: dict[str, Path], size: int, busy_ms: float, untraced_ms: float, corrected: float, raw: float
) -> None:
    metrics, traced, untraced = _sample(size, extracted)
    timing = iteration_timing(metrics, traced, untraced)
    busy_ns = metrics["gpu_activity"]["busy_ns"]
    untraced_median_s = statistics.median(i["latency_s"] for i in untraced["iterations"])
    traced_median_s = statistics.median(i["latency_s"] for i in traced["iterations"])
    assert timing["iterations"] == len(traced["iterations"]) == 2
    assert timing["busy_ns_per_iteration"] == busy_ns / 2
    assert timing["busy_share_corrected"] == pytest.approx(busy_ns / 2 / (untraced_median_s * 1e9))
    assert timing["busy_share_raw"] == metrics["gpu_activity"]["busy_fraction"]
    assert timing["iteration_overhead"] == pytest.approx(traced_median_s / untraced_median_s - 1)
    assert (round(busy_ns / 1e6, 2), round(untraced_median_s * 1e3, 1)) == (busy_ms, untraced_ms)
    assert (round(timing["busy_share_corrected"] or 0, 3), round(timing["busy_share_raw"] or 0, 3)) == (corrected, raw)
    assert timing["untraced_latency"] == {
        "median_s": untraced_median_s,
        "min_s": min(i["latency_s"] for i in untraced["iterations"]),
        "max_s": max(i["latency_s"] for i in untraced["iterations"]),
    }
    assert (timing["basis"], timing["devices"], timing["assumption"]) == ("untraced", 1, ASSUMPTION)


def test_without_an_untraced_run_only_the_raw_share(extracted: dict[str, Path]) -> None:
    metrics, traced, _ = _sample(1, extracted)
    timing = iteration_timing(metrics, traced)
    assert (timing["busy_share_corrected"], timing["iteration_overhead"], timing["untraced_latency"]) == (None,) * 3
    assert (timing["basis"], timing["note"]) == ("traced window", NO_UNTRACED)
    assert timing["busy_share_raw"] == metrics["gpu_activity"]["busy_fraction"]
    bare = iteration_timing(metrics)
    assert (bare["iterations"], bare["basis"], bare["note"]) == (None, "traced window", NO_UNTRACED)
    assert iteration_timing(metrics, None, traced)["note"] == NO_TRACED
    assert metrics["timing"] == bare  # extraction without records writes the raw share only


def test_corrected_share_is_capped_and_averaged_over_devices(extracted: dict[str, Path]) -> None:
    metrics, traced, untraced = _sample(16, extracted)
    for iteration in untraced["iterations"]:
        iteration["latency_s"] = 0.001
    assert iteration_timing(metrics, traced, untraced)["busy_share_corrected"] == 1.0
    _, _, untraced = _sample(16, extracted)
    device = metrics["gpu_activity"]["devices"][0]
    metrics["gpu_activity"]["devices"] = [device, {**device, "device_id": 1, "busy_ns": 0}]
    timing = iteration_timing(metrics, traced, untraced)
    assert timing["devices"] == 2 and timing["busy_ns_per_iteration"] == device["busy_ns"] / 2 / 2


def test_graph_level_tracing_gives_no_busy_share(extracted: dict[str, Path]) -> None:
    metrics, traced, untraced = _sample(1, extracted)
    nsys = traced["nsys"]
    nsys["arguments"] = [a.replace("--cuda-graph-trace=node", "--cuda-graph-trace=graph") for a in nsys["arguments"]]
    timing = iteration_timing(metrics, traced, untraced)
    assert (timing["busy_share_raw"], timing["busy_share_corrected"]) == (None, None)
    assert (timing["cuda_graph_trace"], timing["basis"], timing["note"]) == ("graph", "none", GRAPHS_WHOLE)
    assert timing["iteration_overhead"] is not None  # latencies are still measured


def test_extract_writes_the_timing_from_the_records(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = SAMPLES / "vllm-llama1b-bs16"
    command = [sys.executable, "-m", "llmprof", "extract", str(folder / "profile.sqlite"), "-o", str(tmp_path / "x")]
    records = ["--record", str(folder / "run.json"), "--baseline", str(folder / "baseline.json")]
    subprocess.run([*command, *records, "--quiet"], check=True, env=cli_env)
    timing = json.loads((tmp_path / "x" / "metrics.json").read_text())["timing"]
    assert timing["basis"] == "untraced" and round(timing["busy_share_corrected"], 3) == 0.498


def test_report_shows_both_busy_shares_and_the_assumption(extracted: dict[str, Path], tmp_path: Path) -> None:
    folder = SAMPLES / "vllm-llama1b-bs1"
    extract_dir = extracted["samples/vllm-llama1b-bs1"]
    write_report(extract_dir, tmp_path / "r", record=folder / "run.json", baseline=folder / "baseline.json")
    markdown = (tmp_path / "r" / "report.md").read_text()
    timing = iteration_timing(
        load_metrics(extract_dir), *(load_run_record(folder / f) for f in ("run.json", "baseline.json"))
    )
    assert f"| GPU busy, untraced iteration (corrected) | {pct(timing['busy_share_corrected'] or 0)} |" in markdown
    assert "| GPU busy, untraced iteration (corrected) | 51.6% |" in markdown
    assert "| GPU busy, traced window (raw) | 30.4% |" in markdown
    assert (
        f"| Per-iteration overhead (traced / untraced median latency − 1) | {pct(timing['iteration_overhead'] or 0)} |"
        in markdown
    )
    assert f"**Busy share basis: untraced** ({timing['note']}). {ASSUMPTION}" in markdown
