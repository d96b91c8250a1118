"""Archive and verify: one file a reviewer can check and replay.

``llmprof archive`` packs a study's config, captures, run records, Parquet,
figures, reports and provenance, with the sha256 of every file in
``MANIFEST.json``, into a deterministic ``.tar.gz``. ``llmprof verify`` checks
every checksum, then rebuilds the analysis stages (extract, figures, report,
study) from the archived captures in a temporary folder and names every
artifact whose rebuilt bytes differ from the archived ones.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmprof.analysis.extract import extract
from llmprof.analysis.study import RunEntry, write_study
from llmprof.common.config import expand_sweeps, load
from llmprof.common.errors import InputError
from llmprof.common.layout import STUDY, RunPaths, nsys_report, run_records, sqlite_export
from llmprof.common.outputs import refuse_existing
from llmprof.common.version import __version__
from llmprof.render.figures import draw_figures
from llmprof.render.report import write_report

MANIFEST = "MANIFEST.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files_under(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}


def study_files(configfile: Path, root: Path) -> tuple[dict[str, Any], list[Path]]:
    """The study's config and every file that belongs in its archive (relative to ``root``).

    That is each run's results folder, the capture and run records it started from, and the study folder.
    """
    config = expand_sweeps(load(configfile), str(configfile))
    files = {configfile.resolve()}
    for run, spec in config["runs"].items():
        folder = root / RunPaths(run).folder
        if not folder.is_dir():
            raise InputError(f"{folder}: missing; run the workflow for {configfile} first")
        files |= _files_under(folder)
        inputs = (
            nsys_report(run, spec),
            sqlite_export(run, spec),
            *run_records(run, spec).values(),
        )
        files.update((root / path).resolve() for path in inputs if (root / path).is_file())
    if (root / STUDY.folder).is_dir():
        files |= _files_under(root / STUDY.folder)
    outside = [p for p in files if not p.is_relative_to(root.resolve())]
    if outside:
        raise InputError(
            f"{outside[0]}: outside the project folder {root}; copy captures into the project to archive them"
        )
    return config, sorted(files)


def pack(configfile: str | Path, out: str | Path, *, root: str | Path = ".", force: bool = False) -> dict[str, Any]:
    """Pack a study into a deterministic ``.tar.gz`` with ``MANIFEST.json`` (sha256 of every file)."""
    root, out, configfile = Path(root).resolve(), Path(out), Path(configfile)
    refuse_existing(out, force)
    config, files = study_files(configfile, root)
    members = {str(p.relative_to(root)): p.read_bytes() for p in files}
    manifest = {
        "llmprof": __version__,
        "config": str(configfile.resolve().relative_to(root)),
        "runs": sorted(config["runs"]),
        "files": [
            {"path": path, "bytes": len(data), "sha256": _sha256(data)} for path, data in sorted(members.items())
        ],
    }
    members[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(members):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(members[path]), 0, 0o644
            tar.addfile(info, io.BytesIO(members[path]))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    with partial.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as packed:
        packed.write(buffer.getvalue())
    partial.replace(out)
    return manifest


@dataclass
class Verification:
    """What ``verify`` found: checksum problems and artifacts whose rebuild differs."""

    checked: int = 0
    rebuilt: int = 0
    bad_checksums: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    differs: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """One line per problem, naming the file."""
        return [
            *(f"checksum mismatch: {p}" for p in self.bad_checksums),
            *(f"missing from the archive: {p}" for p in self.missing),
            *(f"not in the manifest: {p}" for p in self.unlisted),
            *(f"rebuilt bytes differ: {p}" for p in self.differs),
        ]

    @property
    def ok(self) -> bool:
        return not self.problems


def _read_archive(archive: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every other file of an archive, by path."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            contents = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise InputError(f"{archive}: not a readable llmprof archive ({exc})") from exc
    if MANIFEST not in contents:
        raise InputError(f"{archive}: no {MANIFEST}; not an llmprof archive")
    manifest: dict[str, Any] = json.loads(contents.pop(MANIFEST))
    return manifest, contents


def _check_checksums(manifest: dict[str, Any], contents: dict[str, bytes]) -> Verification:
    result = Verification()
    listed = {f["path"]: f for f in manifest["files"]}
    for path, entry in listed.items():
        if path not in contents:
            result.missing.append(path)
        elif _sha256(contents[path]) != entry["sha256"]:
            result.bad_checksums.append(path)
        result.checked += 1
    result.unlisted = sorted(set(contents) - set(listed))
    return result


def _compare(rebuilt: Path, archived: Path, folder: str, result: Verification) -> None:
    """Name every file of ``folder`` rebuilt under ``rebuilt`` whose bytes differ from its copy under ``archived``."""
    for path in sorted(p for p in (rebuilt / folder).rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = path.relative_to(rebuilt).as_posix()
        original = archived / relative
        result.rebuilt += 1
        if not original.exists() or original.read_bytes() != path.read_bytes():
            result.differs.append(relative)


def _rebuild_run(run: str, config: dict[str, Any], root: Path, rebuilt: Path, result: Verification) -> RunEntry:
    """Rebuild one run's extract, figures and report from its archived capture and compare them with the archive.

    A run that failed in the workflow (no metrics in its extract) is not rebuilt; the study lists it as failed.
    """
    paths, spec = RunPaths(run), config["runs"][run]
    if not (root / paths.extract / "metrics.json").exists():
        return RunEntry(run, rebuilt / paths.extract, logs=root / paths.logs)
    extract(root / sqlite_export(run, spec), rebuilt / paths.extract, categories=config.get("categories") or None)
    draw_figures(rebuilt / paths.extract, rebuilt / paths.figures)
    records = {name: root / path for name, path in run_records(run, spec).items() if (root / path).exists()}
    record, baseline = records.get("record"), records.get("baseline")
    write_report(
        rebuilt / paths.extract,
        rebuilt / paths.report,
        run=run,
        figures_dir=rebuilt / paths.figures,
        record=record,
        baseline=baseline,
    )
    for folder in (paths.extract, paths.figures, paths.report):
        _compare(rebuilt, root, folder, result)
    return RunEntry(run, rebuilt / paths.extract, record, baseline, sweep=spec.get("sweep") or {})


def _rebuild(manifest: dict[str, Any], contents: dict[str, bytes], scratch: Path, result: Verification) -> None:
    """Unpack the archive into ``scratch``, rebuild its analysis stages beside it in the same layout, compare."""
    root, rebuilt = scratch / "archive", scratch / "rebuilt"
    for path, data in contents.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    config = expand_sweeps(load(root / manifest["config"]))
    entries = [_rebuild_run(run, config, root, rebuilt, result) for run in sorted(config["runs"])]
    if (root / STUDY.folder).is_dir():
        write_study(entries, rebuilt / STUDY.folder)
        _compare(rebuilt, root, STUDY.folder, result)


def verify(archive: str | Path, *, rebuild: bool = True) -> Verification:
    """Check every checksum of an archive, then rebuild its analysis stages and compare bytes."""
    manifest, contents = _read_archive(Path(archive))
    result = _check_checksums(manifest, contents)
    if rebuild:
        with tempfile.TemporaryDirectory(prefix="llmprof-verify-") as scratch:
            _rebuild(manifest, contents, Path(scratch), result)
    return result
