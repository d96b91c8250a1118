"""Provenance: what made a run's or a study's artifacts, and the sha256 of each of them.

``provenance.json`` is where timestamps, host names and absolute facts about the
environment live, so that every other artifact can stay byte-identical across
re-runs on the same inputs.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmprof.capture.model import file_record
from llmprof.common.config import config_digest
from llmprof.common.outputs import write_json
from llmprof.common.records import (
    ContainerRecord,
    FileRecord,
    GitState,
    ProvenanceRecord,
    RunRecord,
    RunStack,
    load_run_record,
)
from llmprof.common.version import __version__, package_version

PACKAGES = ("pandas", "pyarrow", "numpy", "matplotlib", "seaborn", "snakemake", "vllm", "torch", "nvtx")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "llmprof": __version__}
    return versions | {name: package_version(name) for name in PACKAGES}


def git_state(root: Path) -> GitState:
    """Commit and dirty flag of the checkout at ``root`` (None outside git)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def container() -> ContainerRecord:
    """The container the job runs in, as apptainer/singularity announce it (digest when the image path has one)."""
    image = os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
    name = os.environ.get("APPTAINER_NAME") or os.environ.get("SINGULARITY_NAME")
    digest = None
    if image and "sha256:" in image:
        digest = "sha256:" + image.split("sha256:", 1)[1][:64]
    return {"image": image, "name": name, "digest": digest}


def artifact_records(paths: list[Path], root: Path) -> list[FileRecord]:
    """Path (relative to ``root``), size and sha256 of every file under the given files and folders."""
    files: set[Path] = set()
    for path in paths:
        if path.is_dir():
            files.update(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.add(path)
    records: list[FileRecord] = []
    for path in sorted(files):
        if path.is_relative_to(root):
            records.append(file_record(path, root))
        else:  # outside the project (an absolute capture path): recorded as is
            records.append({**file_record(path, path.parent), "path": str(path)})
    return records


def _stack_from_record(record: RunRecord | None) -> RunStack:
    if record is None:
        return {}
    return {
        "gpu": record.get("gpu"),
        "versions": record.get("versions"),
        "nsys": nsys["version"] if (nsys := record.get("nsys")) else None,
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
    }


def write_provenance(
    name: str,
    config: dict[str, Any],
    artifacts: list[Path],
    out: str | Path,
    *,
    root: str | Path = ".",
    record: str | Path | None = None,
) -> ProvenanceRecord:
    """Write ``provenance.json`` for a run or a study.

    Args:
        name: the run's name, or ``study``.
        config: the config entry the artifacts were made from (its digest is recorded).
        artifacts: files and folders to hash.
        out: the provenance file.
        root: the project root: artifact paths are recorded relative to it, and its git state.
        record: the profiled run's run.json (GPU, driver, CUDA, nsys and vLLM versions).
    """
    root = Path(root).resolve()
    record_data = load_run_record(Path(record)) if record is not None and Path(record).exists() else None
    provenance: ProvenanceRecord = {
        "name": name,
        "config_digest": config_digest(config),
        "config": config,
        "packages": package_versions(),
        "git": git_state(root),
        "container": container(),
        "host": platform.node(),
        "platform": platform.platform(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": _stack_from_record(record_data),
        "artifacts": artifact_records([Path(a).resolve() for a in artifacts], root),
    }
    write_json(Path(out), provenance)
    return provenance
