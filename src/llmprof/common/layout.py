"""The project's folder layout: where every stage reads and writes, relative to the project root.

The Snakemake rules and ``llmprof archive``/``verify`` both take their paths from
here, so the files a workflow writes and the files an archive packs and replays
cannot drift apart. Paths are POSIX strings; a name may be a Snakemake wildcard
such as ``"{run}"``, so ``RunPaths("{run}").extract`` is a rule's output pattern.

A run either is profiled by the workflow (its config entry names a model) or
names an existing capture (``.nsys-rep`` or ``.sqlite``) and, optionally, its
run records. Config paths are relative to the project root; the functions that
return them join them to ``project`` (the root as Snakemake or the archive sees it,
best given relative to the working folder, so that names survive a moved project).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RESULTS = "results"
LOGS = "logs"
MODELS = "resources/models"


@dataclass(frozen=True)
class RunPaths:
    """One run's files and folders, stage by stage."""

    run: str

    @property
    def folder(self) -> str:
        return f"{RESULTS}/{self.run}"

    @property
    def profile_report(self) -> str:
        """The .nsys-rep the profile stage writes (next to its run record, spec and log)."""
        return f"{self.folder}/profile/profile.nsys-rep"

    @property
    def profile_record(self) -> str:
        """The traced run's record, written by the profile stage."""
        return f"{self.folder}/profile/run.json"

    @property
    def baseline_record(self) -> str:
        """The untraced run's record, written by the baseline stage."""
        return f"{self.folder}/baseline/run.json"

    @property
    def exported_sqlite(self) -> str:
        return f"{self.folder}/export/profile.sqlite"

    @property
    def extract(self) -> str:
        return f"{self.folder}/extract"

    @property
    def figures(self) -> str:
        return f"{self.folder}/figures"

    @property
    def report(self) -> str:
        """The report folder: report.html, report.md and findings.json."""
        return f"{self.folder}/report"

    @property
    def report_html(self) -> str:
        return f"{self.report}/report.html"

    @property
    def report_markdown(self) -> str:
        return f"{self.report}/report.md"

    @property
    def findings(self) -> str:
        return f"{self.report}/findings.json"

    @property
    def provenance(self) -> str:
        return f"{self.folder}/provenance.json"

    @property
    def logs(self) -> str:
        """The run's log folder (kept out of results/, so archives leave it out)."""
        return f"{LOGS}/{self.run}"

    def log(self, stage: str) -> str:
        return f"{self.logs}/{stage}.log"

    def benchmark(self, stage: str) -> str:
        return f"{self.folder}/benchmarks/{stage}.tsv"


@dataclass(frozen=True)
class StudyPaths:
    """The study's files: the comparison of every run, and its provenance."""

    folder: str = f"{RESULTS}/study"
    logs: str = f"{LOGS}/study"

    @property
    def report_html(self) -> str:
        return f"{self.folder}/report.html"

    @property
    def report_markdown(self) -> str:
        return f"{self.folder}/report.md"

    @property
    def figures(self) -> str:
        return f"{self.folder}/figures"

    @property
    def runs_table(self) -> str:
        return f"{self.folder}/runs.parquet"

    @property
    def findings(self) -> str:
        return f"{self.folder}/findings.json"

    @property
    def provenance(self) -> str:
        """Beside the study folder, not in it: the study stage replaces its folder whole when it runs again."""
        return f"{self.folder}-provenance.json"

    @property
    def manifest(self) -> str:
        """The runs ``llmprof study --manifest`` compares (beside the logs: the study stage replaces its folder)."""
        return f"{self.logs}/manifest.json"

    def log(self, stage: str) -> str:
        return f"{self.logs}/{stage}.log"

    def benchmark(self, stage: str) -> str:
        return f"{self.logs}/{stage}.benchmark.tsv"


STUDY = StudyPaths()


@dataclass(frozen=True)
class ModelPaths:
    """One fetched model: shared by every run that names it, so outside any run's folder."""

    model: str

    @property
    def folder(self) -> str:
        return f"{MODELS}/{self.model}"

    @property
    def log(self) -> str:
        return f"{LOGS}/models/{self.model}.log"

    @property
    def benchmark(self) -> str:
        return f"{LOGS}/models/{self.model}.benchmark.tsv"


def project_file(project: str, path: str) -> str:
    """A config path (relative to the project root ``project``) as the workflow names it: normalised, so the
    project given relative to the working folder (``.`` when they are one) keeps every name relative and a copied or
    moved project still names the same files."""
    return os.path.normpath(os.path.join(project, path))


def is_profiled(spec: Mapping[str, Any]) -> bool:
    """A run whose config entry names a model is profiled by the workflow; any other names a capture."""
    return "model" in spec


def nsys_report(run: str, spec: Mapping[str, Any], project: str = "") -> str:
    """The run's capture: the profile stage's .nsys-rep, or the configured capture."""
    if is_profiled(spec):
        return RunPaths(run).profile_report
    return project_file(project, spec["capture"])


def sqlite_export(run: str, spec: Mapping[str, Any], project: str = "") -> str:
    """The SQLite export the analysis reads: a configured .sqlite capture itself, or the export stage's output."""
    if not is_profiled(spec) and spec["capture"].endswith(".sqlite"):
        return project_file(project, spec["capture"])
    return RunPaths(run).exported_sqlite


def run_records(run: str, spec: Mapping[str, Any], project: str = "") -> dict[str, str]:
    """The traced (``record``) and untraced (``baseline``) run records of a run, where it has them."""
    if is_profiled(spec):
        return {"record": RunPaths(run).profile_record, "baseline": RunPaths(run).baseline_record}
    keys = {"record": "run_record", "baseline": "baseline_record"}
    return {name: project_file(project, spec[key]) for name, key in keys.items() if key in spec}


def study_manifest(runs: Mapping[str, Mapping[str, Any]], project: str = "") -> list[dict[str, Any]]:
    """The study stage's manifest of the config's ``runs``, in name order: each run's extract folder, logs, sweep
    and the run records it has."""
    return [
        {
            "run": run,
            "extract": RunPaths(run).extract,
            "logs": RunPaths(run).logs,
            "sweep": spec.get("sweep"),
            **run_records(run, spec, project),
        }
        for run, spec in sorted(runs.items())
    ]
