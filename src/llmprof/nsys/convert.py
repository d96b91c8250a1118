"""Export stage: an ``.nsys-rep`` report in, an SQLite export out (through ``nsys export``)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmprof.common.errors import InputError, LlmprofError
from llmprof.common.outputs import refuse_existing, staged_file
from llmprof.nsys.export import open_export


class ToolError(LlmprofError):
    """An external tool (nsys) is missing or failed."""


def nsys_executable(nsys: str) -> str:
    """The path of the nsys CLI named ``nsys`` (a name on PATH or a path); ToolError when there is none."""
    executable = shutil.which(nsys)
    if executable is None:
        raise ToolError(f"{nsys}: Nsight Systems CLI not found; install it or set nsys.executable in the config")
    return executable


def export_sqlite(report: str | Path, out: str | Path, *, nsys: str = "nsys", force: bool = False) -> Path:
    """Convert a report with ``nsys export --type sqlite``; the result appears only if it is a whole export.

    Args:
        report: the ``.nsys-rep`` (or ``.qdrep``) file.
        out: the ``.sqlite`` file to write.
        nsys: the nsys executable (name on PATH or path).
        force: replace ``out`` if it exists.
    """
    report, out = Path(report), Path(out)
    if not report.is_file():
        raise InputError(f"{report}: no such report file")
    refuse_existing(out, force, "export")
    executable = nsys_executable(nsys)
    with staged_file(out, force, "export") as partial:
        command = [executable, "export", "--type", "sqlite", "--force-overwrite=true", "-o", str(partial), str(report)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not partial.exists():
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ToolError(f"{report}: nsys export failed (exit {result.returncode}): {' | '.join(tail)}")
        open_export(partial).close()
    return out


#: Suffixes of the reports nsys writes (``.qdrep`` before 2021.4), which only nsys itself can read.
REPORT_SUFFIXES = (".nsys-rep", ".qdrep")


@contextmanager
def readable_export(path: str | Path, *, nsys: str = "nsys") -> Iterator[Path]:
    """An SQLite export of ``path``: the file itself, or for an ``.nsys-rep`` report its export made with nsys
    into a temporary folder (removed afterwards).

    Raises:
        ToolError: ``path`` is a report and nsys is not on PATH.
    """
    path = Path(path)
    if path.suffix not in REPORT_SUFFIXES:
        yield path
        return
    if shutil.which(nsys) is None:
        raise ToolError(
            f"{path}: reading an {path.suffix} report needs Nsight Systems ({nsys} not found on PATH); "
            "install it, or give the SQLite export (nsys export --type sqlite)"
        )
    with tempfile.TemporaryDirectory(prefix="llmprof-export-") as folder:
        yield export_sqlite(path, Path(folder) / f"{path.stem}.sqlite", nsys=nsys)
