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
from llmprof.analysis.study import RunEntry
from llmprof.common.config import expand_sweeps, load
from llmprof.common.errors import InputError
from llmprof.common.outputs import refuse_existing
from llmprof.common.version import __version__
from llmprof.render.figures import draw_figures
from llmprof.render.report import write_report
from llmprof.render.study import write_study

MANIFEST = "MANIFEST.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run_records(config: dict[str, Any], run: str) -> tuple[str | None, str | None]:
    spec = config["runs"][run]
    if "model" in spec:
        return f"results/{run}/profile/run.json", f"results/{run}/baseline/run.json"
    return spec.get("run_record"), spec.get("baseline_record")


def _capture_sqlite(config: dict[str, Any], run: str, root: Path) -> Path:
    spec = config["runs"][run]
    exported = root / "results" / run / "export" / "profile.sqlite"
    if exported.exists() or "model" in spec or not spec["capture"].endswith(".sqlite"):
        return exported
    return root / str(spec["capture"])


def study_files(configfile: Path, root: Path) -> tuple[dict[str, Any], list[Path]]:
    """The study's config and every file that belongs in its archive (relative to ``root``)."""
    config = expand_sweeps(load(configfile), str(configfile))
    files = {configfile.resolve()}
    for run, spec in config["runs"].items():
        folder = root / "results" / run
        if not folder.is_dir():
            raise InputError(f"{folder}: missing; run the workflow for {configfile} first")
        files.update(p.resolve() for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        for extra in (spec.get("capture"), *_run_records(config, run)):
            if extra and (root / extra).is_file():
                files.add((root / extra).resolve())
    study = root / "results" / "study"
    if study.is_dir():
        files.update(p.resolve() for p in study.rglob("*") if p.is_file() and not p.name.startswith("."))
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
    def ok(self) -> bool:
        return not (self.bad_checksums or self.missing or self.unlisted or self.differs)


def _compare(rebuilt: Path, archived: Path, label: str, result: Verification) -> None:
    for path in sorted(p for p in rebuilt.rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = path.relative_to(rebuilt)
        original = archived / relative
        result.rebuilt += 1
        if not original.exists() or original.read_bytes() != path.read_bytes():
            result.differs.append(f"{label}/{relative}")


def verify(archive: str | Path, *, rebuild: bool = True) -> Verification:
    """Check every checksum of an archive, then rebuild its analysis stages and compare bytes."""
    archive = Path(archive)
    result = Verification()
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            contents = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise InputError(f"{archive}: not a readable llmprof archive ({exc})") from exc
    if MANIFEST not in contents:
        raise InputError(f"{archive}: no {MANIFEST}; not an llmprof archive")
    manifest = json.loads(contents.pop(MANIFEST))
    listed = {f["path"]: f for f in manifest["files"]}
    for path, entry in listed.items():
        if path not in contents:
            result.missing.append(path)
        elif _sha256(contents[path]) != entry["sha256"]:
            result.bad_checksums.append(path)
        result.checked += 1
    result.unlisted = sorted(set(contents) - set(listed))
    if not rebuild:
        return result
    with tempfile.TemporaryDirectory(prefix="llmprof-verify-") as scratch:
        root = Path(scratch) / "archive"
        for path, data in contents.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
        config = expand_sweeps(load(root / manifest["config"]))
        rebuilt_root = Path(scratch) / "rebuilt"
        entries = []
        for run in sorted(config["runs"]):
            archived = root / "results" / run
            if not (archived / "extract" / "metrics.json").exists():
                entries.append(RunEntry(run, rebuilt_root / run / "extract", logs=root / "logs" / run))
                continue
            out = rebuilt_root / run
            extract(_capture_sqlite(config, run, root), out / "extract", categories=config.get("categories") or None)
            _compare(out / "extract", archived / "extract", f"results/{run}/extract", result)
            draw_figures(out / "extract", out / "figures")
            _compare(out / "figures", archived / "figures", f"results/{run}/figures", result)
            record, baseline = (root / p if p and (root / p).exists() else None for p in _run_records(config, run))
            write_report(
                out / "extract", out / "report", run=run, figures_dir=out / "figures", record=record, baseline=baseline
            )
            _compare(out / "report", archived / "report", f"results/{run}/report", result)
            entries.append(
                RunEntry(run, out / "extract", record, baseline, sweep=config["runs"][run].get("sweep") or {})
            )
        if (root / "results" / "study").is_dir():
            write_study(entries, rebuilt_root / "study")
            _compare(rebuilt_root / "study", root / "results" / "study", "results/study", result)
    return result
