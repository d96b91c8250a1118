"""llmprof stats against what nsys stats 2025.3.1 printed for every real export."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import CAPTURES, Capture

from llmprof.analysis.stats import REPORTS, ReportSkipped, to_csv_text
from llmprof.cli import main
from llmprof.nsys.export import open_export

CASES = [(c, name) for c in CAPTURES for name in REPORTS]


def test_every_capture_has_every_oracle() -> None:
    for capture in CAPTURES:
        for name in REPORTS:
            assert capture.oracle(name).exists(), capture.oracle(name)


@pytest.mark.parametrize(("capture", "report"), CASES, ids=[f"{c.id}:{r}" for c, r in CASES])
def test_report_matches_nsys(capture: Capture, report: str) -> None:
    expected = capture.oracle(report).read_text()
    with open_export(capture.sqlite) as export:
        try:
            got = to_csv_text(REPORTS[report], REPORTS[report].run(export))
        except ReportSkipped:
            got = ""
    assert got == expected


def test_cli_writes_prefix_files_like_nsys(tmp_path: Path) -> None:
    capture = next(c for c in CAPTURES if c.id.startswith("nsys2022"))
    prefix = tmp_path / "out" / capture.sqlite.stem
    result = CliRunner().invoke(main, ["stats", str(capture.sqlite), "-r", "all", "--format", "csv", "-o", str(prefix)])
    assert result.exit_code == 0, result.output
    for name in REPORTS:
        written = Path(f"{prefix}_{name}.csv").read_text()
        assert written == capture.oracle(name).read_text(), name
    assert "SKIPPED" in result.output  # memory reports: no ENUM_CUDA_MEMCPY_OPER in this export


def test_cli_table_format_prints_every_row() -> None:
    capture = next(c for c in CAPTURES if c.id == "vllm_inproc_h100_3iter/vllm")
    result = CliRunner().invoke(main, ["stats", str(capture.sqlite), "-r", "cuda_api_sum"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("--------"))
    oracle = [row.split(",") for row in capture.oracle("cuda_api_sum").read_text().splitlines()[1:]]
    assert len(lines) - rule - 1 == len(oracle)
    for line, row in zip(lines[rule + 1 :], oracle):
        assert line.split()[0] == row[0] and line.split()[-1] == row[-1]


def test_unknown_report_is_an_error() -> None:
    capture = CAPTURES[0]
    result = CliRunner().invoke(main, ["stats", str(capture.sqlite), "-r", "cuda_gpu_kern_sum,bogus_sum"])
    assert result.exit_code == 1
    assert "bogus_sum" in result.output
