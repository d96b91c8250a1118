"""Bad input gives one clear error line naming the file, exit status 1, and no partial output."""

from __future__ import annotations

import importlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DEMO

from llmprof.analysis.extract import extract
from llmprof.cli import main
from llmprof.common.errors import InputError


def _truncated(tmp: Path) -> Path:
    path = tmp / "truncated.sqlite"
    data = DEMO.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _corrupt(tmp: Path) -> Path:
    """A whole-length file whose pages past the schema are overwritten with garbage."""
    path = tmp / "corrupt.sqlite"
    data = bytearray(DEMO.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for offset in range(page * 2, len(data), page * 3):
        data[offset : offset + page] = b"\xa5" * page
    path.write_bytes(bytes(data))
    return path


def _not_nsys(tmp: Path) -> Path:
    path = tmp / "plain.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x INTEGER)")
    return path


def _text(tmp: Path) -> Path:
    path = tmp / "notes.sqlite"
    path.write_text("this is not a database\n" * 20)
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.sqlite"
    path.touch()
    return path


def _missing(tmp: Path) -> Path:
    return tmp / "missing.sqlite"


CASES = {
    "missing": (_missing, "no such file"),
    "zero_bytes": (_empty, "empty"),
    "truncated": (_truncated, "truncated"),
    "corrupt": (_corrupt, "corrupt"),
    "not_nsys": (_not_nsys, "not an Nsight Systems export"),
    "not_sqlite": (_text, "not an SQLite file"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["extract", "stats"])
def test_bad_sqlite(tmp_path: Path, case: str, command: str) -> None:
    make, message = CASES[case]
    sqlite = make(tmp_path)
    out = tmp_path / "out"
    args = [command, str(sqlite), "-o", str(out)]
    if command == "stats":
        args += ["-r", "all", "--format", "csv"]
    result = CliRunner().invoke(main, [*args, "--quiet"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert sqlite.name in lines[0] and message in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not list(tmp_path.glob("*partial*")) and not list(tmp_path.glob("out_*"))


def test_failure_midway_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error after some tables were written removes them all (the folder appears whole or not at all)."""
    stage = importlib.import_module("llmprof.analysis.extract")

    def boom(*args: object, **kwargs: object) -> dict[str, object]:
        raise InputError("simulated failure while computing metrics")

    monkeypatch.setattr(stage, "compute_metrics", boom)
    with pytest.raises(InputError):
        extract(DEMO, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = CliRunner().invoke(main, ["extract", str(DEMO), "-o", str(out), "--quiet"])
    assert result.exit_code == 1 and "--force" in result.output
    assert (out / "keep.txt").exists()


def test_missing_column_names_table_and_column(tmp_path: Path) -> None:
    """An export whose kernel table lost a required column fails naming both."""
    broken = tmp_path / "old.sqlite"
    shutil.copy(DEMO, broken)
    with sqlite3.connect(broken) as db:
        db.execute("ALTER TABLE CUPTI_ACTIVITY_KIND_KERNEL DROP COLUMN correlationId")
    result = CliRunner().invoke(main, ["extract", str(broken), "-o", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1
    assert "CUPTI_ACTIVITY_KIND_KERNEL" in result.output and "correlationId" in result.output
    assert not (tmp_path / "out").exists()
