"""Exports with damaged rows: a NULL time is a one-line error; a NULL or dangling name id names nothing."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DATA

from llmprof.cli import main

SOURCE = DATA / "nsys2025_cuda_graphs" / "nsight-2025.5.2.sqlite"
KERNEL, RUNTIME = "CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_RUNTIME"


def _damaged(tmp_path: Path, table: str, assignment: str) -> Path:
    """A copy of a real export with ``assignment`` applied to the first row of ``table`` (NOT NULL lifted)."""
    path = tmp_path / "damaged.sqlite"
    shutil.copy(SOURCE, path)
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE loose AS SELECT * FROM {table}")
        db.execute(f"DROP TABLE {table}")
        db.execute(f"ALTER TABLE loose RENAME TO {table}")
        db.execute(f"UPDATE {table} SET {assignment} WHERE rowid = (SELECT min(rowid) FROM {table})")
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--quiet"])
    return result.exit_code, result.output


def test_a_kernel_without_an_end_is_one_error_line_and_no_output(tmp_path: Path) -> None:
    export = _damaged(tmp_path, KERNEL, '"end" = NULL')
    code, output = _run("extract", str(export), "-o", str(tmp_path / "out"))
    assert code == 1 and output.count("\n") == 1
    assert "CUPTI_ACTIVITY_KIND_KERNEL" in output and "end_ns" in output and "export the capture again" in output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize(
    ("table", "assignment"),
    [(RUNTIME, "nameId = NULL"), (KERNEL, "shortName = 999999, demangledName = 999998")],
    ids=["null-name-id", "dangling-name-id"],
)
def test_a_name_that_does_not_resolve_names_nothing(tmp_path: Path, table: str, assignment: str) -> None:
    export = _damaged(tmp_path, table, assignment)
    code, output = _run("extract", str(export), "-o", str(tmp_path / "out"))
    assert code == 0, output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["kernels"]["count"] == 3 and metrics["cuda_api"]["count"] == 33
    for stage, args in (("figures", []), ("report", ["--figures", str(tmp_path / "figures")])):
        code, output = _run(stage, str(tmp_path / "out"), "-o", str(tmp_path / stage), *args)
        assert code == 0, output
    code, output = _run("stats", str(export), "-r", "all", "--format", "csv")
    assert code == 0 and "Traceback" not in output
    if table == KERNEL:
        top = {k["name"]: k["category"] for k in metrics["kernels"]["top"]}
        assert top[None] == "other"
        assert "| ? | other | 1 |" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize(
    ("table", "report"),
    [(RUNTIME, "cuda_api_sum"), (KERNEL, "cuda_gpu_kern_sum"), ("CUPTI_ACTIVITY_KIND_MEMCPY", "cuda_gpu_mem_time_sum")],
)
def test_stats_on_a_row_without_its_start_is_one_error_line(tmp_path: Path, table: str, report: str) -> None:
    """A NULL start would drop out of nsys's SQL sums unseen; llmprof says the export is damaged instead."""
    export = _damaged(tmp_path, table, "start = NULL")
    code, output = _run("stats", str(export), "-r", report, "--format", "csv")
    assert code == 1 and output.count("\n") == 1
    assert f"rows of {table} without their start, end or size; the export is damaged" in output
