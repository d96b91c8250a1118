"""What the stage commands accept: .nsys-rep reports (through nsys), --timeunit as nsys stats has it, and a study
manifest file (YAML or JSON)."""

from __future__ import annotations

import csv
import io
import os
import stat
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from conftest import by_id

from llmprof.analysis.stats import REPORTS
from llmprof.cli import main

CAPTURE = by_id("vllm_inproc_h100_3iter/vllm")
FACTORS = {"us": 10**3, "ms": 10**6, "s": 10**9}


def _invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*map(str, args), "--quiet"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("unit", ["us", "ms", "s"])
@pytest.mark.parametrize("report", list(REPORTS))
def test_timeunit_scales_the_ns_oracle(report: str, unit: str, tmp_path: Path) -> None:
    """Each time column is the ns value nsys printed, divided exactly; its header names the unit as nsys does."""
    code, output = _invoke("stats", CAPTURE.sqlite, "-r", report, "--format", "csv", "--timeunit", unit)
    assert code == 0, output
    got, expected = _rows(output), _rows(CAPTURE.oracle(report).read_text())
    assert len(got) == len(expected) > 1
    times = [i for i, header in enumerate(expected[0]) if header.endswith("(ns)")]
    assert got[0] == [h.replace("(ns)", f"({unit})") for h in expected[0]]
    assert times or report == "cuda_gpu_mem_size_sum"  # the one report with no time column
    for row, oracle in zip(got[1:], expected[1:]):
        for i, (value, ns) in enumerate(zip(row, oracle)):
            assert (Decimal(value) * FACTORS[unit] == Decimal(ns)) if i in times else value == ns, (i, value, ns)


def test_timeunit_takes_nsys_spellings_and_ns_is_the_oracle() -> None:
    code, output = _invoke("stats", CAPTURE.sqlite, "-r", "cuda_api_sum", "--format", "csv", "--timeunit", "nsec")
    assert code == 0 and output == CAPTURE.oracle("cuda_api_sum").read_text()
    code, output = _invoke("stats", CAPTURE.sqlite, "-r", "cuda_api_sum", "--timeunit", "msec")
    assert code == 0 and "Total Time (ms)" in output and "(ns)" not in output


def _fake_nsys(folder: Path, export: Path) -> None:
    """An ``nsys`` on PATH whose ``export`` writes ``export`` to its -o target, as the real one writes the SQLite."""
    script = folder / "nsys"
    script.write_text(
        f'#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ "$1" = "-o" ]; then out="$2"; fi; shift; done\ncp "{export}" "$out"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("command", ["stats", "extract"])
def test_an_nsys_rep_without_nsys_is_one_error_line(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "profile.nsys-rep"
    report.write_bytes(b"not readable without nsys")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, output = _invoke(command, report, "-o", tmp_path / "out")
    assert code == 1 and output.count("\n") == 1 and output.startswith("Error: "), output
    assert "profile.nsys-rep" in output and "needs Nsight Systems" in output
    assert not (tmp_path / "out").exists()


def test_an_nsys_rep_is_exported_with_nsys_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    _fake_nsys(tmp_path / "bin", CAPTURE.sqlite)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    report = tmp_path / "vllm.nsys-rep"
    report.write_bytes(b"a report")
    code, output = _invoke("stats", report, "-r", "cuda_gpu_kern_sum", "--format", "csv")
    assert code == 0 and output == CAPTURE.oracle("cuda_gpu_kern_sum").read_text()
    code, output = _invoke("extract", report, "-o", tmp_path / "extract")
    assert code == 0, output
    assert pd.read_parquet(tmp_path / "extract" / "kernels.parquet").shape[0] == 40755
    assert list(tmp_path.glob("*.sqlite")) == []  # the export lived in a temporary folder


def test_study_reads_a_manifest_file(extracted: dict[str, Path], tmp_path: Path) -> None:
    runs = ["vllm_inproc_h100_3iter/vllm", "samples/vllm-llama1b-bs16"]
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump([{"run": f"run{i}", "extract": str(extracted[r])} for i, r in enumerate(runs)]))
    code, output = _invoke("study", "--manifest", manifest, "-o", tmp_path / "study")
    assert code == 0, output
    assert pd.read_parquet(tmp_path / "study" / "runs.parquet")["run"].tolist() == ["run0", "run1"]
    code, output = _invoke("study", "--manifest", tmp_path / "absent.yaml", "-o", tmp_path / "again")
    assert code == 1 and "absent.yaml: study manifest cannot be read" in output and output.count("\n") == 1
