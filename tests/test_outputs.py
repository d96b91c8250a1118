"""Outputs: --force replaces only llmprof's own output of the same kind, whole, and never what it did not write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DATA, DEMO

from llmprof.cli import main
from llmprof.common.errors import InputError
from llmprof.common.staging import MARKER, remove_stale_partials, staged_directory

SMALL = DATA / "nsys2025_cuda_graphs" / "nsight-2025.5.2.sqlite"


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*map(str, args), "--quiet"])
    return result.exit_code, result.output


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def extracted(tmp_path: Path) -> Path:
    code, output = _run("extract", SMALL, "-o", tmp_path / "extract")
    assert code == 0, output
    return tmp_path / "extract"


def test_force_refuses_a_folder_llmprof_did_not_write(tmp_path: Path, extracted: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "capture.sqlite").write_bytes(SMALL.read_bytes())
    before = _tree(project)
    code, output = _run("figures", extracted, "-o", project, "--force")
    assert code == 1 and output.count("\n") == 1 and "llmprof did not write" in output
    assert _tree(project) == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_force_refuses_a_file_llmprof_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "s_cuda_api_sum.csv"
    mine.write_text("my notes\n")
    reports = ("-r", "cuda_gpu_kern_sum,cuda_api_sum", "--format", "csv")
    code, output = _run("stats", SMALL, *reports, "-o", tmp_path / "s", "--force")
    assert code == 1 and "llmprof did not write" in output
    assert mine.read_text() == "my notes\n" and not (tmp_path / "s_cuda_gpu_kern_sum.csv").exists()


def test_stats_refuses_before_writing_any_file(tmp_path: Path) -> None:
    (tmp_path / "s_cuda_api_sum.csv").write_text("old\n")
    code, output = _run("stats", SMALL, "-r", "cuda_gpu_kern_sum,cuda_api_sum", "--format", "csv", "-o", tmp_path / "s")
    assert code == 1 and "already exists" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s_cuda_api_sum.csv"]


def test_force_replaces_its_own_output_and_nothing_else(tmp_path: Path, extracted: Path) -> None:
    code, output = _run("figures", extracted, "-o", tmp_path / "figures")
    assert code == 0, output
    marker = json.loads((tmp_path / "figures" / MARKER).read_text())
    assert marker["kind"] == "figures" and "timeline.png" in marker["files"]
    code, output = _run("figures", extracted, "-o", tmp_path / "figures", "--force")
    assert code == 0, output
    code, output = _run("figures", extracted, "-o", extracted, "--force")  # an extract folder is no figures folder
    assert code == 1 and "holds a extract output, not a figures output" in output
    (tmp_path / "figures" / "notes.txt").write_text("mine")
    code, output = _run("figures", extracted, "-o", tmp_path / "figures", "--force")
    assert code == 1 and "notes.txt" in output and (tmp_path / "figures" / "notes.txt").read_text() == "mine"


def test_the_existence_check_runs_again_when_the_output_is_committed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InputError, match="already exists"):
        with staged_directory(out, force=False, kind="extract") as stage:
            (stage / "a.txt").write_text("first writer")
            with staged_directory(out, force=False, kind="extract") as other:  # a second writer finishes first
                (other / "a.txt").write_text("second writer")
    assert (out / "a.txt").read_text() == "second writer"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("problem", ["parent is a file", "folder not writable"])
def test_an_output_that_cannot_be_written_is_one_error_line(tmp_path: Path, extracted: Path, problem: str) -> None:
    if problem == "parent is a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "figures"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (tmp_path / "locked").mkdir(mode=0o500)
        out = tmp_path / "locked" / "figures"
    code, output = _run("figures", extracted, "-o", out)
    assert code == 1 and output.count("\n") == 1 and "choose another output path" in output


def test_a_killed_run_leaves_a_partial_that_the_next_run_removes(tmp_path: Path) -> None:
    out = tmp_path / "extract"
    script = (
        "import sys, time\n"
        "from llmprof.common.staging import staged_directory\n"
        f"with staged_directory({str(out)!r}, force=False, kind='extract') as stage:\n"
        "    (stage / 'half.parquet').write_bytes(b'x')\n"
        "    print('staged', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "staged"
    partials = list(tmp_path.glob(".extract.partial-*"))
    assert len(partials) == 1 and remove_stale_partials(out) == []  # its writer still runs: kept
    child.send_signal(signal.SIGKILL)
    child.wait()
    time.sleep(0.1)
    assert not out.exists() and partials[0].exists()
    code, output = _run("extract", DEMO, "-o", out)
    assert code == 0, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extract"]
