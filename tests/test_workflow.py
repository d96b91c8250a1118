"""The Snakemake workflow: lint, config validation, and the demo end to end in a temporary folder."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from llmprof.common import config as llmprof_config
from llmprof.common.errors import ConfigError


def _snakemake(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["snakemake", "-s", str(ROOT / "Snakefile"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_lint_is_clean(cli_env: dict[str, str]) -> None:
    result = _snakemake(["--lint", "--configfile", str(ROOT / "config" / "demo.yaml")], cli_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_demo_runs_end_to_end(cli_env: dict[str, str], tmp_path: Path) -> None:
    args = ["--cores", "1", "--configfile", str(ROOT / "config" / "demo.yaml"), "--directory", str(tmp_path)]
    result = _snakemake(args, cli_env)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "results" / "llama1b-bs16"
    assert (tmp_path / "results" / "llama1b-bs1" / "report" / "report.html").exists()
    assert (run / "report" / "report.html").exists() and (run / "figures" / "timeline.svg").exists()
    metrics = json.loads((run / "extract" / "metrics.json").read_text())
    assert metrics["kernels"]["count"] == 14018
    phases = {p["phase"]: p["steps"] for p in metrics["phases"]["phases"]}
    assert phases["decode"] > 30 * phases["prefill"] > 0
    report = (run / "report" / "report.md").read_text()
    assert "5,843 output tok/s" in report and "Profiler overhead" in report and "Prefill and decode" in report
    again = _snakemake([*args, "-n"], cli_env)
    assert "Nothing to be done" in again.stdout + again.stderr
    report = _snakemake([*args, "--report", str(tmp_path / "report.zip")], cli_env)
    assert report.returncode == 0 and (tmp_path / "report.zip").stat().st_size > 0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"runs": {"a": {"capture": "x.sqlite", "batch": 3}}}, "batch"),
        ({"runs": {"a": {"capture": "x.csv"}}}, "capture"),
        ({"runs": {"bad name": {"capture": "x.sqlite"}}}, "bad name"),
        ({"runs": {}}, "runs"),
        ({"runs": {"a": {"capture": "x.sqlite"}}, "categories": {"matmul": "gemm"}}, "matmul"),
        ({"runs": {"a": {"capture": "x.sqlite"}}, "nsys": {"exe": "nsys"}}, "exe"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(
    config: dict[str, object], message: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match=message):
        llmprof_config.validate(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _snakemake(["-n", "--configfile", str(path), "--directory", str(tmp_path)], cli_env)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_shipped_configs_validate() -> None:
    for name in ("config.yaml", "demo.yaml"):
        llmprof_config.load(ROOT / "config" / name)
