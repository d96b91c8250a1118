"""On a GPU node with vLLM and nsys: the serving workflow end to end, three request rates (tests/gpu/serve.yaml).

Skipped where there is no NVIDIA GPU, vLLM or nsys (CI has none of them). ``LLMPROF_SERVE_CONFIG`` names another
config of the same shape (tests/gpu/serve-builtin.yaml: the built-in load client).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("nvidia-smi") is None or shutil.which("nsys") is None or importlib.util.find_spec("vllm") is None,
    reason="needs an NVIDIA GPU, Nsight Systems and vLLM",
)
CONFIG = Path(os.environ.get("LLMPROF_SERVE_CONFIG", ROOT / "tests" / "gpu" / "serve.yaml"))
RUNS = ("serve-rate2", "serve-rate8", "serve-rate32")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]) -> Path:
    workdir = tmp_path_factory.mktemp("gpu-serve")
    command = ["snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "1", "--resources", "gpu=1"]
    command += ["--configfile", str(CONFIG), "--directory", str(workdir)]
    result = subprocess.run(command, env=cli_env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir / "results"


@pytest.mark.parametrize("run", RUNS)
def test_each_rate_is_captured_and_measured_traced_and_untraced(results: Path, run: str) -> None:
    traced = json.loads((results / run / "profile" / "run.json").read_text())
    untraced = json.loads((results / run / "baseline" / "run.json").read_text())
    for record in (traced, untraced):
        load = record["serving"]
        assert load["completed"] == 24 and load["failed"] == 0 and load["total_output_tokens"] == 24 * 16
        assert 0 < load["ttft"]["p50_ms"] <= load["ttft"]["p99_ms"] and load["tpot"]["p50_ms"] > 0
    metrics = json.loads((results / run / "extract" / "metrics.json").read_text())
    assert traced["nsys"]["kernels_captured"] == metrics["kernels"]["count"] > 0
    phases = {p["phase"]: p for p in metrics["phases"]["phases"]}
    assert metrics["phases"]["source"] == "vllm_step_ranges" and phases["decode"]["steps"] > 0
    report = (results / run / "report" / "report.md").read_text()
    assert "## Serving: latency and the GPU behind it" in report and "| TTFT |" in report


def test_the_study_sweeps_the_request_rate(results: Path) -> None:
    table = pq.read_table(results / "study" / "runs.parquet").to_pandas().sort_values("request_rate")
    assert table["status"].tolist() == ["ok"] * 3 and table["request_rate"].tolist() == [2.0, 8.0, 32.0]
    assert table["ttft_p99_ms_untraced"].notna().all() and table["busy_share_corrected"].notna().all()
    findings = {f["id"] for f in json.loads((results / "study" / "findings.json").read_text())}
    assert "latency_throughput" in findings
    assert (results / "study" / "figures" / "serving.png").stat().st_size > 0
