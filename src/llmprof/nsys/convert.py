"""Export stage: an ``.nsys-rep`` report in, an SQLite export out (through ``nsys export``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from llmprof.common.errors import InputError, LlmprofError
from llmprof.common.outputs import refuse_existing
from llmprof.nsys.export import open_export


class ToolError(LlmprofError):
    """An external tool (nsys) is missing or failed."""


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
    refuse_existing(out, force)
    executable = shutil.which(nsys)
    if executable is None:
        raise ToolError(f"{nsys}: Nsight Systems CLI not found; install it or set nsys.executable in the config")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    command = [executable, "export", "--type", "sqlite", "--force-overwrite=true", "-o", str(partial), str(report)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not partial.exists():
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ToolError(f"{report}: nsys export failed (exit {result.returncode}): {' | '.join(tail)}")
        open_export(partial).close()
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out
