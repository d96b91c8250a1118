"""On a GPU node with vLLM and nsys: the workflow profiles both capture modes, steady state only.

Skipped where there is no NVIDIA GPU, vLLM or nsys (CI has none of them).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("nvidia-smi") is None or shutil.which("nsys") is None or importlib.util.find_spec("vllm") is None,
    reason="needs an NVIDIA GPU, Nsight Systems and vLLM",
)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]) -> Path:
    workdir = tmp_path_factory.mktemp("gpu-study")
    targets = [f"results/{run}/extract" for run in ("hook", "inproc")]
    result = subprocess.run(
        [
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "--cores",
            "1",
            "--resources",
            "gpu=1",
            "--configfile",
            str(ROOT / "tests" / "gpu" / "config.yaml"),
            "--directory",
            str(workdir),
            *targets,
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir / "results"


def _metrics(study: Path, run: str) -> dict:  # type: ignore[type-arg]
    return json.loads((study / run / "extract" / "metrics.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("run", ["hook", "inproc"])
def test_capture_holds_generate_kernels_only(study: Path, run: str) -> None:
    metrics = _metrics(study, run)
    shares = {c["category"]: c["time_ns"] for c in metrics["kernels"]["categories"]}
    assert shares["gemm"] > 0 and shares["attention"] > 0
    ranges = {r["name"]: r for r in metrics["nvtx"]["ranges"]}
    for outside in (":warmup", ":model_load"):
        assert ranges.get(outside, {"gpu_ops": 0})["gpu_ops"] == 0, outside
    record = json.loads((study / run / "profile" / "run.json").read_text())
    assert record["nsys"]["kernels_captured"] == metrics["kernels"]["count"]
    assert len(record["iterations"]) == 2 and record["output_tokens"] == 2 * 4 * 16


def test_in_process_ranges_project_onto_the_gpu(study: Path) -> None:
    ranges = {r["name"]: r for r in _metrics(study, "inproc")["nvtx"]["ranges"]}
    assert ranges[":generate"]["gpu_ops"] > 0
    assert ranges[":generate"]["gpu_ops"] == ranges[":iteration 0"]["gpu_ops"] + ranges[":iteration 1"]["gpu_ops"]


def test_hook_mode_steps_split_prefill_and_decode(study: Path) -> None:
    phases = {p["phase"]: p for p in _metrics(study, "hook")["phases"]["phases"]}
    assert phases["prefill"]["steps"] >= 2 and phases["decode"]["steps"] >= 2 * 14
    assert phases["decode"]["gpu_time_ns"] > 0 and phases["prefill"]["gpu_time_ns"] > 0
