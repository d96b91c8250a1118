"""Outputs that appear whole or not at all, and a ``--force`` that replaces only what llmprof wrote.

Every output is written beside its target under a ``.NAME.partial-…`` name and moved
into place when complete. Each carries a marker of what made it: inside a folder,
``.llmprof-output`` (the kind of output and every file written); beside a file, a
hidden ``.NAME.llmprof-output``. ``--force`` replaces an existing output only when
its marker names the same kind and the folder holds nothing else, so it never removes
a capture, the current folder or a file someone added. The existence check runs again
at the moment of replacing, so two writers of one output cannot silently replace each
other, and a folder is swapped in one atomic exchange where the filesystem allows.
Partial outputs of a run that was killed are removed by the next run on the same host.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmprof.common.errors import InputError
from llmprof.common.version import __version__

MARKER = ".llmprof-output"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


class OutputError(InputError):
    """An output cannot be written where asked (it exists, is not llmprof's, or the folder is not writable)."""


def file_marker(path: Path) -> Path:
    """Where the marker of a single-file output is: a hidden file beside it."""
    return path.with_name(f".{path.name}{MARKER}")


def _read_marker(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("made_by") == "llmprof" else None


def _marker_text(kind: str, files: list[str] | None = None) -> str:
    record: dict[str, object] = {"made_by": "llmprof", "kind": kind, "llmprof": __version__}
    if files is not None:
        record["files"] = files
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _not_ours(out: Path, kind: str) -> str | None:
    """Why ``out`` may not be replaced by an output of ``kind`` (None when it may)."""
    if out.is_dir() and not out.is_symlink():
        marker = _read_marker(out / MARKER)
        if marker is None:
            return "is a folder llmprof did not write"
        if marker.get("kind") != kind:
            return f"holds a {marker.get('kind')} output, not a {kind} output"
        files = marker.get("files")
        listed = {str(f) for f in files} if isinstance(files, list) else set()
        foreign = [f for f in _files_under(out) if f not in listed and f != MARKER]
        if foreign:
            return f"holds {len(foreign)} file(s) llmprof did not write there (such as {foreign[0]})"
        return None
    marker = _read_marker(file_marker(out))
    if marker is None or marker.get("kind") != kind:
        return "is a file llmprof did not write as a " + kind + " output"
    return None


def check_replaceable(out: Path, force: bool, kind: str) -> None:
    """Raise OutputError unless ``out`` is absent (or an empty folder), or present and ``force`` may replace it."""
    if not os.path.lexists(out) or (out.is_dir() and not out.is_symlink() and not any(out.iterdir())):
        return
    if not force:
        raise OutputError(f"{out}: already exists; pass --force to replace it")
    reason = _not_ours(out, kind)
    if reason is not None:
        raise OutputError(f"{out}: {reason}; --force replaces only llmprof's own {kind} output: choose another path")


def refuse_existing(path: Path, force: bool, kind: str = "output") -> None:
    """Stop before writing ``path`` unless it is absent, or ``force`` is given and it is llmprof's own."""
    check_replaceable(Path(path), force, kind)


def _prepare_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise OutputError(f"{out}: its parent {out.parent} is not a folder; choose another output path") from exc
    except PermissionError as exc:
        raise OutputError(f"{out}: cannot create {out.parent} (permission denied); choose another output path") from exc
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: the folder {out.parent} is not writable; choose another output path")


def _owner(partial_name: str, target: str) -> tuple[str, int] | None:
    """(host, pid) of the run that made a partial output of ``target``, from its name."""
    fields = partial_name[len(f".{target}.partial-") :].split("-")
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove partial outputs of ``out`` left by killed runs on this host; the paths removed."""
    removed = []
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        owner = _owner(partial.name, out.name)
        if owner is None or owner[0] != _HOST or _alive(owner[1]):
            continue
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
        removed.append(partial)
    return removed


def _usual_mode(full: int) -> int:
    """The mode a file or folder made the usual way gets (``full`` less the umask); temp files are private."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


def _partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-{_HOST}-{os.getpid()}-"


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(_LIBC, "renameat2", None) if _LIBC is not None else None
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.ENOTSUP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - no C library to load
    _LIBC = None


def _replace_folder(stage: Path, out: Path) -> None:
    """Put ``stage`` in place of ``out``: an atomic exchange where possible, else two renames."""
    if not os.path.lexists(out):
        os.rename(stage, out)
        return
    if _exchange(stage, out):
        shutil.rmtree(stage)  # now holds the old output
        return
    old = Path(tempfile.mkdtemp(prefix=_partial_prefix(out), dir=out.parent))
    os.rename(out, old / "old")
    os.rename(stage, out)
    shutil.rmtree(old)


@contextmanager
def staged_directory(out: Path, force: bool, kind: str = "output") -> Iterator[Path]:
    """Yield a scratch folder beside ``out`` that becomes ``out`` (with its marker) only if the block succeeds.

    A failure leaves neither a partial ``out`` nor the scratch folder behind; an existing
    ``out`` is replaced only as :func:`check_replaceable` allows, checked before and again at the end.
    """
    out = Path(out)
    check_replaceable(out, force, kind)
    _prepare_parent(out)
    remove_stale_partials(out)
    stage = Path(tempfile.mkdtemp(prefix=_partial_prefix(out), dir=out.parent))
    stage.chmod(_usual_mode(0o777))
    try:
        yield stage
        (stage / MARKER).write_text(_marker_text(kind, _files_under(stage)))
        check_replaceable(out, force, kind)  # again: another writer may have finished meanwhile
        _replace_folder(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def write_text_files(texts: dict[Path, str], force: bool, kind: str) -> list[Path]:
    """Write several files, each whole or not at all, after checking that every one of them may be written."""
    for path in texts:
        check_replaceable(path, force, kind)
    for path, text in texts.items():
        with staged_file(path, force, kind) as partial:
            partial.write_text(text)
    return list(texts)


@contextmanager
def staged_file(out: Path, force: bool, kind: str) -> Iterator[Path]:
    """Yield a scratch path beside ``out`` that replaces ``out`` (marked as ``kind``) only if the block succeeds."""
    out = Path(out)
    check_replaceable(out, force, kind)
    _prepare_parent(out)
    remove_stale_partials(out)
    handle, name = tempfile.mkstemp(prefix=_partial_prefix(out), dir=out.parent)
    os.close(handle)
    partial = Path(name)
    partial.chmod(_usual_mode(0o666))
    try:
        yield partial
        check_replaceable(out, force, kind)
        file_marker(out).write_text(_marker_text(kind))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
