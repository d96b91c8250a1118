"""The Snakemake workflow: lint, the layout it plans, config validation, and the demo end to end."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, demo_args, snakemake

from llmprof.common import config as llmprof_config
from llmprof.common.errors import ConfigError
from llmprof.common.layout import RESULTS, STUDY, ModelPaths, RunPaths, nsys_report, run_records, sqlite_export
from llmprof.render.figures import FIGURES, STUDY_FIGURES

JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", re.MULTILINE)
PLANNED_FIELDS = ("input", "output", "log", "benchmark")
DEMO_RUNS = ("llama1b-bs1", "llama1b-bs16")


@dataclass(frozen=True)
class PlannedJob:
    """One job of a dry run: its rule, wildcards and the paths it reads and writes."""

    rule: str
    wildcards: dict[str, str]
    paths: dict[str, set[str]]

    @property
    def all_paths(self) -> set[str]:
        return set().union(*self.paths.values())


def planned_jobs(text: str) -> list[PlannedJob]:
    jobs = []
    for rule, body in JOB.findall(text):
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, re.MULTILINE))
        wildcards = dict(item.split("=", 1) for item in fields.get("wildcards", "").split(", ") if item)
        paths = {name: set(fields[name].split(", ")) for name in PLANNED_FIELDS if name in fields}
        jobs.append(PlannedJob(rule, wildcards, paths))
    return jobs


def properties(paths: object) -> set[str]:
    """Every path a layout object names through its properties."""
    names = [name for name, member in vars(type(paths)).items() if isinstance(member, property)]
    return {getattr(paths, name) for name in names}


def layout_names(config: dict[str, Any], job: PlannedJob, project: str) -> set[str]:
    """Every path the layout gives a study's runs, models and study, with this job's own log and benchmark
    (config paths taken from ``project``, the project root relative to the working folder)."""
    names = properties(STUDY) | {STUDY.log(job.rule), STUDY.benchmark(job.rule)}
    for run, spec in config["runs"].items():
        paths = RunPaths(run)
        names |= properties(paths) | {paths.log(job.rule), paths.benchmark(job.rule)}
        names |= {nsys_report(run, spec, project), sqlite_export(run, spec, project)}
        names |= set(run_records(run, spec, project).values())
    for model in config.get("models", {}):
        names |= properties(ModelPaths(model))
    return names


def mixed_study(folder: Path) -> Path:
    """A study with a run of each kind: profiled, an .nsys-rep capture to export, a .sqlite capture with a record."""
    (folder / "capture.nsys-rep").touch()
    sample = "resources/samples/vllm-llama1b-bs1"
    config = {
        "models": {"m": {"source": "synthetic", "architecture": "resources/architectures/tiny-llama.json"}},
        "runs": {
            "profiled": {"model": "m"},
            "rep": {"capture": str(folder / "capture.nsys-rep")},
            "sqlite": {"capture": f"{sample}/profile.sqlite", "run_record": f"{sample}/run.json"},
        },
    }
    configfile = folder / "mixed.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return configfile


def test_lint_is_clean(cli_env: dict[str, str]) -> None:
    result = snakemake(["--lint", "--configfile", str(ROOT / "config" / "demo.yaml")], cli_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


@pytest.mark.parametrize("study", ["demo", "mixed"])
def test_workflow_plans_exactly_the_layout(study: str, cli_env: dict[str, str], tmp_path: Path) -> None:
    """The rules cannot drift from llmprof.common.layout, which archive and verify read too: every path a dry run
    plans is a layout name, and each run's stages read and write where the layout says."""
    configfile = ROOT / "config" / "demo.yaml" if study == "demo" else mixed_study(tmp_path)
    result = snakemake(["-n", "--configfile", str(configfile)], cli_env, tmp_path / "work")
    project = os.path.relpath(ROOT, tmp_path / "work")  # config paths stay relative: a moved project keeps its jobs
    assert result.returncode == 0, result.stdout + result.stderr
    config = llmprof_config.expand_sweeps(llmprof_config.load(configfile))
    jobs = planned_jobs(result.stdout + result.stderr)
    assert {job.rule for job in jobs} >= {"extract_metrics", "render_report", "compare_runs", "all"}
    for job in jobs:
        names = layout_names(config, job, project)
        assert job.all_paths <= names, (job.rule, sorted(job.all_paths - names))
    outputs = set().union(*(job.paths.get("output", set()) for job in jobs))
    assert properties(STUDY) <= outputs
    by_run = {(job.rule, job.wildcards.get("run")): job for job in jobs}
    for run, spec in config["runs"].items():
        paths, records = RunPaths(run), run_records(run, spec, project)
        sqlite = sqlite_export(run, spec, project)
        made = {paths.extract, paths.figures, paths.report_html, paths.report_markdown, paths.findings}
        made |= {paths.provenance, nsys_report(run, spec, project), sqlite, *records.values()}
        assert {path for path in made if path.startswith(f"{RESULTS}/")} <= outputs, run  # the rest: from the config
        assert by_run["extract_metrics", run].paths["input"] == {sqlite, *records.values()}, run  # records: timing
        assert set(records.values()) <= by_run["render_report", run].paths["input"], run


def test_a_tensor_parallel_run_asks_for_its_gpus(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The two-GPU config plans its GPU jobs with one GPU per tensor-parallel rank (gres for SLURM too)."""
    configfile = ROOT / "tests" / "gpu" / "tp2.yaml"
    result = snakemake(["-n", "-p", "--configfile", str(configfile)], cli_env, tmp_path / "work")
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    for rule in ("profile_run", "baseline_run"):
        block = said[said.index(f"rule {rule}:") :].split("\n\n")[0]
        assert "gpu=2, gres=gpu:2" in block, block
    assert '"tensor_parallel_size": 2' in said


def test_documented_layout_is_the_layout() -> None:
    """The output table of config/README.md names layout paths, or folders that hold them, only."""
    run = RunPaths("{run}")
    names = properties(run) | properties(STUDY) | {run.log("stage"), run.benchmark("stage")}
    documented = re.findall(r"^\| `(results/[^`]*)`", (ROOT / "config" / "README.md").read_text(), re.MULTILINE)
    assert documented
    for path in (folder.rstrip("/") for folder in documented):
        assert path in names or any(name.startswith(f"{path}/") for name in names), path


def test_demo_runs_end_to_end(demo_study: Path, cli_env: dict[str, str]) -> None:
    run = demo_study / "results" / "llama1b-bs16"
    assert (demo_study / "results" / "llama1b-bs1" / "report" / "report.html").exists()
    assert (run / "report" / "report.html").exists() and (run / "figures" / "timeline.svg").exists()
    metrics = json.loads((run / "extract" / "metrics.json").read_text())
    assert metrics["kernels"]["count"] == 14018
    phases = {p["phase"]: p["steps"] for p in metrics["phases"]["phases"]}
    assert phases["decode"] > 30 * phases["prefill"] > 0
    report = (run / "report" / "report.md").read_text()
    assert "5,843 output tok/s" in report and "Profiler overhead" in report and "Prefill and decode" in report
    again = snakemake([*demo_args(demo_study), "-n"], cli_env, demo_study, project=demo_study)
    assert "Nothing to be done" in again.stdout + again.stderr


def report_entries(archive: Path) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The results a Snakemake report zip lists (path → name, caption, labels, data_uri) and its members."""
    with zipfile.ZipFile(archive) as bundle:
        members = set(bundle.namelist())
        page = next(name for name in members if name.count("/") == 1 and name.endswith("/report.html"))
        text = bundle.read(page).decode()
    listed = re.search(r"var results = (\{.*?\});\n", text, re.DOTALL)
    assert listed is not None, "no results in the report"
    return json.loads(listed.group(1)), {name.split("/", 1)[1] for name in members}


def _words(caption: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", caption)).split())


def test_the_report_zip_shows_every_figure_with_its_caption(
    demo_study: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Every figure of every run and of the study is in the bundle, each with a caption saying what it shows."""
    zipped = [*demo_args(demo_study), "--report", str(tmp_path / "report.zip")]
    result = snakemake(zipped, cli_env, demo_study, project=demo_study)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    entries, members = report_entries(tmp_path / "report.zip")
    expected = {
        f"{RunPaths(run).figures}/{name}.png": caption for run in DEMO_RUNS for name, (*_, caption) in FIGURES.items()
    }
    expected |= {f"{STUDY.figures}/{name}.png": caption for name, (*_, caption) in STUDY_FIGURES.items()}
    expected |= {RunPaths(run).report_html: "Report of run" for run in DEMO_RUNS} | {
        STUDY.report_html: "Study of 2 runs"
    }
    assert set(entries) == set(expected)
    for path, caption in expected.items():
        words = _words(entries[path]["caption"])
        assert words.startswith(caption), (path, words)  # its own caption, not one shared by every figure
        assert entries[path]["data_uri"] in members, path


def test_a_copied_project_reruns_nothing(demo_study: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    """Snakemake records the names of inputs: names relative to the project keep a moved project's jobs finished."""
    moved = tmp_path / "moved elsewhere"
    shutil.copytree(demo_study, moved, symlinks=True, copy_function=shutil.copy2)
    for path in (p for p in demo_study.rglob("*") if p.is_file()):
        assert (moved / path.relative_to(demo_study)).stat().st_mtime_ns == path.stat().st_mtime_ns, path
    again = snakemake([*demo_args(moved), "-n"], cli_env, moved, project=moved)
    said = again.stdout + again.stderr
    assert again.returncode == 0 and "Nothing to be done" in said, said[-2000:]
    assert str(demo_study) not in (moved / STUDY.manifest).read_text()  # the study's manifest names no old path


def test_the_study_runs_again_when_forced(demo_study: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    """Forcing the study again replaces its folder; nothing another rule wrote lives inside it."""
    copy = tmp_path / "forced"
    shutil.copytree(demo_study, copy, symlinks=True, copy_function=shutil.copy2)
    again = snakemake([*demo_args(copy), "--forcerun", "compare_runs"], cli_env, copy, project=copy)
    assert again.returncode == 0, (again.stdout + again.stderr)[-2000:]
    assert (copy / STUDY.provenance).is_file() and (copy / STUDY.report_html).is_file()


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
    result = snakemake(["-n", "--configfile", str(path)], cli_env, tmp_path)
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert message in said and f"{path}:" in said
    assert len(said.splitlines()) < 15, said  # the problem, not the whole schema


def test_a_bad_category_pattern_fails_the_dry_run(tmp_path: Path, cli_env: dict[str, str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("runs:\n  a: {capture: x.sqlite}\ncategories:\n  gemm: 'gemm(['\n")
    result = snakemake(["-n", "--configfile", str(path)], cli_env, tmp_path)
    said = result.stdout + result.stderr
    assert result.returncode != 0 and f"{path}:4: categories/gemm: invalid regular expression" in said


def test_shipped_configs_validate() -> None:
    for name in ("config.yaml", "demo.yaml"):
        llmprof_config.load(ROOT / "config" / name)
