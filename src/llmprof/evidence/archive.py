"""Archive and verify: one file a reviewer can check and replay.

``llmprof archive`` packs a study's config, captures, run records, Parquet,
figures, reports and provenance, with the sha256 of every file in
``MANIFEST.json``, into a deterministic ``.tar.gz``. Nothing under a hidden name
is packed: not llmprof's output markers, and not the ``.NAME.partial-…`` files
and folders a killed run leaves behind.

``llmprof verify`` checks every checksum, then rebuilds the analysis stages
(extract, figures, report, study) from the archived captures in a temporary
folder and names every artifact whose rebuilt bytes differ from the archived ones.

An archive comes from someone else, so ``verify`` reads every member's header and
the manifest before it writes anything, and refuses the whole archive (one error,
exit status 1, nothing unpacked) when

- it is not a gzip-compressed tar, or ``MANIFEST.json`` is missing, not JSON or not
  of the shape ``archive`` writes;
- a member is not a regular file or a plain folder (links, devices, FIFOs, sparse files);
- a member's name is not a plain relative path: absolute, with ``..``, ``.`` or empty
  parts, a backslash or a control character;
- two members share a name (also after Unicode normalisation), or one is a file and a folder;
- a file is not listed in the manifest, or a listed file is not in the archive;
- it passes a size limit: :data:`MAX_MEMBERS`, :data:`MAX_MEMBER_BYTES` or
  :data:`MAX_TOTAL_BYTES` by its headers, or, counted as the stream is decompressed
  (so headers cannot hide a bomb), :data:`MAX_TOTAL_BYTES` + :data:`MAX_METADATA_BYTES`
  in all or :data:`MAX_HEADER_BYTES` in one header;
- its config names a capture or run record outside the archive.

Only then are the listed files unpacked, into the temporary folder, through tarfile's
``data`` filter as a second line of defence (on a Python without it, through checks of
its own: nothing outside the folder, nothing through a link, nothing over a file).
What ``verify`` reports rather than refuses, listed with exit status 1, is what a
reviewer is there to find: a file whose bytes do not match the manifest, and an
artifact whose rebuilt bytes differ.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import unicodedata
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmprof.analysis.extract import extract
from llmprof.analysis.study import RunEntry
from llmprof.common.config import expand_sweeps, load
from llmprof.common.errors import InputError, brief
from llmprof.common.layout import STUDY, RunPaths, nsys_report, run_records, sqlite_export
from llmprof.common.progress import Progress
from llmprof.common.staging import refuse_existing, staged_file
from llmprof.common.version import __version__
from llmprof.render.figures import draw_figures
from llmprof.render.report import write_report
from llmprof.render.study import write_study

MANIFEST = "MANIFEST.json"

#: Limits on what ``verify`` reads from an archive: generous for a study, and module constants so tests can lower them.
MAX_MEMBERS = 100_000
MAX_MEMBER_BYTES = 4 * 2**30
MAX_TOTAL_BYTES = 8 * 2**30
MAX_MANIFEST_BYTES = 64 * 2**20
#: What the decompressed stream may hold beyond the files' bytes: tar headers, extended headers, padding.
MAX_METADATA_BYTES = 256 * 2**20
#: The most one read of the stream may ask for: only an extended header's data is read whole.
MAX_HEADER_BYTES = 2**20
_CHUNK = 64 * 2**10
_SENDER = "ask its sender for the archive `llmprof archive` wrote"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hidden(path: Path, folder: Path) -> bool:
    """Whether any part of ``path`` below ``folder`` is hidden: a marker, or a partial output or inside one."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _files_under(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder)}


def study_files(configfile: Path, root: Path) -> tuple[dict[str, Any], list[Path]]:
    """The study's config and every file that belongs in its archive (relative to ``root``).

    That is each run's results folder, the capture and run records it started from, the study folder and
    the study's provenance.
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
    if (root / STUDY.provenance).is_file():
        files.add((root / STUDY.provenance).resolve())
    outside = [p for p in files if not p.is_relative_to(root.resolve())]
    if outside:
        raise InputError(
            f"{outside[0]}: outside the project folder {root}; copy captures into the project to archive them"
        )
    return config, sorted(files)


def pack(configfile: str | Path, out: str | Path, *, root: str | Path = ".", force: bool = False) -> dict[str, Any]:
    """Pack a study into a deterministic ``.tar.gz`` with ``MANIFEST.json`` (sha256 of every file)."""
    root, out, configfile = Path(root).resolve(), Path(out), Path(configfile)
    refuse_existing(out, force, "archive")
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
    with staged_file(out, force, "archive") as partial:
        with partial.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as packed:
            packed.write(buffer.getvalue())
    return manifest


@dataclass
class Verification:
    """What ``verify`` found: files whose bytes do not match the manifest, and artifacts whose rebuild differs."""

    checked: int = 0
    rebuilt: int = 0
    bad_checksums: list[str] = field(default_factory=list)
    differs: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """One line per problem, naming the file."""
        return [
            *(f"checksum mismatch: {p}" for p in self.bad_checksums),
            *(f"rebuilt bytes differ: {p}" for p in self.differs),
        ]

    @property
    def ok(self) -> bool:
        return not self.problems


def _refusal(archive: Path, problems: list[tuple[str, str]], kind: str) -> InputError:
    """One error for every problem of one kind: the first named, and how many there are."""
    name, why = problems[0]
    more = f" ({len(problems)} {kind} in all)" if len(problems) > 1 else ""
    return InputError(f"{archive}: member {name!r} {why}{more}; nothing was unpacked: {_SENDER}")


def _too_large(archive: Path, where: str, what: str, limit: str) -> InputError:
    """The error for an archive past one of the size limits, named as the module constant to raise."""
    return InputError(
        f"{archive}: {where}: {what}, over llmprof.evidence.archive.{limit}; nothing was unpacked: "
        f"{_SENDER}, or raise that limit if you trust it"
    )


class _BoundedStream:
    """An archive's decompressed tar stream that refuses to read or skip past its limit.

    tarfile reads and skips as far as the headers say, and the headers are the
    sender's, so the limit is kept here, where bytes are decompressed.
    """

    def __init__(self, packed: gzip.GzipFile, archive: Path) -> None:
        self._packed, self._archive = packed, archive
        self.limit = MAX_TOTAL_BYTES + MAX_METADATA_BYTES
        self.member: str | None = None  # the last member whose header was read: where errors happened

    def where(self) -> str:
        """Where in the archive the stream is, for an error line."""
        return "before the first member" if self.member is None else f"after member {self.member!r}"

    def _allow(self, end: int) -> None:
        if end > self.limit:
            what = f"more than {self.limit} bytes once decompressed"
            raise _too_large(self._archive, self.where(), what, "MAX_TOTAL_BYTES")

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_HEADER_BYTES:
            what = f"a header of {size} bytes (limit {MAX_HEADER_BYTES})" if size >= 0 else "a read to the end"
            raise _too_large(self._archive, self.where(), what, "MAX_HEADER_BYTES")
        self._allow(self.tell() + size)
        return self._packed.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence not in (io.SEEK_SET, io.SEEK_CUR):
            raise io.UnsupportedOperation("seek from the end of a compressed stream")
        target = offset if whence == io.SEEK_SET else self.tell() + offset
        self._allow(target)
        return self._packed.seek(target)

    def tell(self) -> int:
        return self._packed.tell()

    def write(self, data: bytes) -> int:
        raise io.UnsupportedOperation("the archive is read only")

    def close(self) -> None:
        """Closed with the files it reads from, by :func:`_scanned`."""


def _kind_problem(info: tarfile.TarInfo) -> str | None:
    """Why a member may not be unpacked, by its type (None for a regular file or a plain folder)."""
    if info.issym():
        return f"is a symbolic link (to {info.linkname!r})"
    if info.islnk():
        return f"is a hard link (to {info.linkname!r})"
    if info.ischr() or info.isblk():
        return "is a device"
    if info.isfifo():
        return "is a FIFO"
    if info.issparse():
        return "is a sparse file"
    if not (info.isreg() or info.isdir()):
        return f"is of tar type {info.type!r}, not a regular file"
    return None


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain, normalised relative path inside the folder unpacked into (None when it is)."""
    if not name:
        return "has an empty name"
    if "\\" in name:
        return "has a backslash in its name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "has a control character in its name"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "climbs out of the folder unpacked into ('..' in its name)"
    if "" in parts or "." in parts:
        return "has a name that is not normalised (an empty or '.' part)"
    return None


def _member_name(info: tarfile.TarInfo) -> str:
    return info.name.rstrip("/") if info.isdir() else info.name


@dataclass
class _Members:
    """An archive's members, from their headers alone: the files, the folders, the manifest's bytes."""

    files: list[tarfile.TarInfo] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    unsafe: list[tuple[str, str]] = field(default_factory=list)
    manifest: list[bytes] = field(default_factory=list)
    total: int = 0


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    """A small member's bytes, read in chunks (the stream refuses one read of a whole large file)."""
    source = tar.extractfile(info)
    assert source is not None  # a regular file
    chunks = []
    while chunk := source.read(_CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _add_member(tar: tarfile.TarFile, info: tarfile.TarInfo, members: _Members, archive: Path) -> None:
    """Record one member, refusing at once what would make reading on too costly."""
    name = _member_name(info)
    where = f"member {name!r}"
    if info.isreg():
        if info.size > MAX_MEMBER_BYTES:
            raise _too_large(archive, where, f"{info.size} bytes (limit {MAX_MEMBER_BYTES})", "MAX_MEMBER_BYTES")
        members.total += info.size
        if members.total > MAX_TOTAL_BYTES:
            what = f"brings the files to {members.total} bytes (limit {MAX_TOTAL_BYTES})"
            raise _too_large(archive, where, what, "MAX_TOTAL_BYTES")
    problem = _kind_problem(info) or _name_problem(name)
    if problem is not None:
        members.unsafe.append((name, problem))
    elif info.isdir():
        members.folders.append(name)
    else:
        members.files.append(info)
        if name == MANIFEST:
            if info.size > MAX_MANIFEST_BYTES:
                what = f"{info.size} bytes (limit {MAX_MANIFEST_BYTES})"
                raise _too_large(archive, where, what, "MAX_MANIFEST_BYTES")
            members.manifest.append(_read_member(tar, info))


def _scan(tar: tarfile.TarFile, stream: _BoundedStream, archive: Path) -> _Members:
    """Every member's header (and the manifest), read without unpacking anything."""
    members, count = _Members(), 0
    while (info := tar.next()) is not None:
        stream.member, count = info.name, count + 1
        if count > MAX_MEMBERS:
            raise _too_large(
                archive, f"member {info.name!r}", f"{count} members or more (limit {MAX_MEMBERS})", "MAX_MEMBERS"
            )
        _add_member(tar, info, members, archive)
    return members


def _clashes(members: _Members) -> list[tuple[str, str]]:
    """Members that would land on one another: the same name (after Unicode normalisation), or a file and a folder."""
    seen: dict[str, str] = {}
    clashes = []
    for info in members.files:
        key = unicodedata.normalize("NFC", info.name)
        if key not in seen:
            seen[key] = info.name
        elif seen[key] == info.name:
            clashes.append((info.name, "is in the archive more than once"))
        else:
            why = f"differs from member {ascii(seen[key])} only by Unicode normalisation (it is {ascii(info.name)})"
            clashes.append((info.name, why))
    names = [unicodedata.normalize("NFC", info.name) for info in members.files]
    folders = {unicodedata.normalize("NFC", f) for f in members.folders}
    folders |= {"/".join(name.split("/")[:end]) for name in names for end in range(1, name.count("/") + 1)}
    clashes += [(info.name, "is both a file and a folder") for info, key in zip(members.files, names) if key in folders]
    return clashes


def _manifest_problem(manifest: Any) -> str | None:
    """Why a parsed manifest is not of the shape ``archive`` writes (None when it is)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return "is not a JSON object with a list of files"
    if not isinstance(manifest.get("runs"), list) or not all(isinstance(r, str) for r in manifest["runs"]):
        return "has no list of run names"
    paths: set[str] = set()
    for entry in manifest["files"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            return "lists an entry without a path"
        path, size, digest = entry["path"], entry.get("bytes"), entry.get("sha256")
        if _name_problem(path) is not None or path == MANIFEST:
            return f"lists {path!r}, which cannot be a file of the archive"
        if path in paths:
            return f"lists {path!r} twice"
        if type(size) is not int or size < 0 or not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            return f"gives {path!r} no byte count or no sha256"
        paths.add(path)
    if manifest.get("config") not in paths:
        return "names no config among its files"
    return None


def _parse_manifest(members: _Members, archive: Path) -> dict[str, Any]:
    """The manifest, checked to be of the shape ``archive`` writes."""
    if not members.manifest:
        raise InputError(f"{archive}: no member {MANIFEST!r}; nothing was unpacked: {_SENDER}")
    try:
        manifest = json.loads(members.manifest[0])
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(
            f"{archive}: member {MANIFEST!r} is not valid JSON ({brief(exc)}); nothing was unpacked: {_SENDER}"
        ) from exc
    problem = _manifest_problem(manifest)
    if problem is not None:
        raise InputError(f"{archive}: member {MANIFEST!r} {problem}; nothing was unpacked: {_SENDER}")
    result: dict[str, Any] = manifest
    return result


def _check_members(members: _Members, archive: Path) -> dict[str, Any]:
    """Refuse an archive that is not safe to unpack or is not what its manifest lists; the manifest."""
    if members.unsafe:
        raise _refusal(archive, members.unsafe, "unsafe members")
    clashes = _clashes(members)
    if clashes:
        raise _refusal(archive, clashes, "clashing members")
    manifest = _parse_manifest(members, archive)
    listed = {entry["path"] for entry in manifest["files"]}
    present = {info.name for info in members.files}
    unlisted = [(name, f"is not listed in {MANIFEST}") for name in sorted(present - listed - {MANIFEST})]
    if unlisted:
        raise _refusal(archive, unlisted, "unlisted members")
    missing = [(name, f"is listed in {MANIFEST} but not in the archive") for name in sorted(listed - present)]
    if missing:
        raise _refusal(archive, missing, "missing members")
    return manifest


@contextmanager
def _scanned(archive: Path) -> Iterator[tuple[tarfile.TarFile, _Members]]:
    """The archive opened through a :class:`_BoundedStream` and its members read from their headers.

    An archive that cannot be read as a gzip-compressed tar is one error line.
    """
    with ExitStack() as stack:
        stream = None
        try:
            raw = stack.enter_context(archive.open("rb"))
            stream = _BoundedStream(stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")), archive)
            tar = stack.enter_context(tarfile.open(fileobj=stream, mode="r:", errorlevel=2))
            members = _scan(tar, stream, archive)
        except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
            where = "" if stream is None or stream.member is None else f" {stream.where()}"
            raise InputError(
                f"{archive}: not a readable gzip-compressed tar archive{where} ({brief(exc)}); "
                "check that it is the .tar.gz `llmprof archive` wrote"
            ) from exc
        yield tar, members


def _unpack_checked(tar: tarfile.TarFile, files: list[tarfile.TarInfo], folder: Path) -> None:
    """Unpack regular files as tarfile's data filter would, for a Python without it.

    Never outside ``folder`` (checked before any folder is made), never through a link, never over a file.
    """
    top = folder.resolve()
    for info in files:
        target = Path(os.path.normpath(top / info.name))
        if not info.isreg() or _name_problem(info.name) is not None or not target.is_relative_to(top):
            raise tarfile.ExtractError(f"{info.name!r} would be unpacked outside the verify folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(top):
            raise tarfile.ExtractError(f"{info.name!r} would be unpacked through a link out of the verify folder")
        source = tar.extractfile(info)
        assert source is not None  # a regular file
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
            while chunk := source.read(_CHUNK):
                out.write(chunk)
        if target.stat().st_size != info.size:
            raise tarfile.ReadError(f"{info.name!r}: unexpected end of data")


def _unpack(tar: tarfile.TarFile, files: list[tarfile.TarInfo], folder: Path, archive: Path) -> None:
    """Unpack checked files into ``folder`` through tarfile's data filter (a second line of defence)."""
    folder.mkdir()
    try:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(folder, members=files, filter="data")
        else:  # Pythons before 3.10.12 and 3.11.4
            _unpack_checked(tar, files, folder)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise InputError(
            f"{archive}: cannot unpack ({brief(exc)}); nothing was written outside the verify folder: {_SENDER}"
        ) from exc


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_checksums(manifest: dict[str, Any], root: Path) -> Verification:
    """Name every unpacked file whose size or sha256 is not what the manifest lists."""
    result = Verification()
    with Progress("checksums", sum(entry["bytes"] for entry in manifest["files"]), "bytes") as counter:
        for entry in manifest["files"]:
            path = root / entry["path"]
            if path.stat().st_size != entry["bytes"] or _sha256_file(path) != entry["sha256"]:
                result.bad_checksums.append(entry["path"])
            result.checked += 1
            counter.advance(entry["bytes"])
    return result


def _compare(rebuilt: Path, archived: Path, folder: str, result: Verification) -> None:
    """Name every file of ``folder`` rebuilt under ``rebuilt`` whose bytes differ from its copy under ``archived``."""
    for path in sorted(p for p in (rebuilt / folder).rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = path.relative_to(rebuilt).as_posix()
        original = archived / relative
        result.rebuilt += 1
        if not original.exists() or original.read_bytes() != path.read_bytes():
            result.differs.append(relative)


def _archived(root: Path, path: str) -> Path:
    """``root / path``, refused when the archived config points outside the archive (the rebuild reads it only)."""
    inside = root / path
    if not inside.resolve().is_relative_to(root.resolve()):
        raise InputError(f"the archived config names {path!r}, outside the archive; {_SENDER}")
    return inside


def _rebuild_run(run: str, config: dict[str, Any], root: Path, rebuilt: Path, result: Verification) -> RunEntry:
    """Rebuild one run's extract, figures and report from its archived capture and compare them with the archive.

    A run that failed in the workflow (no metrics in its extract) is not rebuilt; the study lists it as failed.
    """
    paths, spec = RunPaths(run), config["runs"][run]
    if not (root / paths.extract / "metrics.json").exists():
        return RunEntry(run, rebuilt / paths.extract, logs=root / paths.logs)
    capture = _archived(root, sqlite_export(run, spec))
    archived = {name: _archived(root, path) for name, path in run_records(run, spec).items()}
    records = {name: path for name, path in archived.items() if path.exists()}
    record, baseline = records.get("record"), records.get("baseline")
    categories = config.get("categories") or None
    extract(capture, rebuilt / paths.extract, categories=categories, record=record, baseline=baseline, progress=True)
    draw_figures(rebuilt / paths.extract, rebuilt / paths.figures)
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


def _rebuild(manifest: dict[str, Any], root: Path, rebuilt: Path, result: Verification) -> None:
    """Rebuild the analysis of the archive unpacked in ``root`` under ``rebuilt``, in the same layout; compare."""
    config = expand_sweeps(load(root / manifest["config"]))
    entries = []
    with Progress("rebuild", len(config["runs"]), "runs") as counter:
        for run in sorted(config["runs"]):
            entries.append(_rebuild_run(run, config, root, rebuilt, result))
            counter.advance()
    if (root / STUDY.folder).is_dir():
        write_study(entries, rebuilt / STUDY.folder)
        _compare(rebuilt, root, STUDY.folder, result)


def verify(archive: str | Path, *, rebuild: bool = True) -> Verification:
    """Check every member of an archive before unpacking it into a temporary folder, then every checksum, then
    rebuild its analysis stages and compare bytes.

    Raises:
        InputError: the archive is unreadable or unsafe to unpack (see the module's docstring); nothing was unpacked.
    """
    archive = Path(archive)
    with tempfile.TemporaryDirectory(prefix="llmprof-verify-") as scratch, _scanned(archive) as (tar, members):
        manifest = _check_members(members, archive)
        root = Path(scratch) / "archive"
        _unpack(tar, [info for info in members.files if info.name != MANIFEST], root, archive)
        result = _check_checksums(manifest, root)
        if rebuild:
            _rebuild(manifest, root, Path(scratch) / "rebuilt", result)
    return result
