"""Progress of long stages: a bar with totals on a terminal, plain periodic lines with totals in logs."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import by_id

from llmprof.cli import main
from llmprof.common import progress
from llmprof.common.progress import Progress


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_logs_get_a_line_per_interval_with_totals(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="llmprof.progress"):
        with Progress("kernels", 10_000_000, bar=False, interval_s=10, clock=clock) as counter:
            counter.advance(600_000)
            clock.now = 9.9  # within the interval: silent
            counter.advance(600_000)
            clock.now = 10.0
            counter.advance(0)
            clock.now = 25.0
            counter.advance(8_800_000)
    assert [r.getMessage() for r in caplog.records] == [
        "kernels: rows 1,200,000 / 10,000,000 (12%)",
        "kernels: rows 10,000,000 / 10,000,000 (100%)",
        "kernels: rows 10,000,000 / 10,000,000 (100%) done",
    ]


def test_a_terminal_gets_a_bar_and_no_lines(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "_bars", {"enabled": True})  # as the CLI sets it on a terminal
    terminal = io.StringIO()
    with caplog.at_level(logging.INFO, logger="llmprof.progress"):
        with Progress("kernels", 10_000_000, stream=terminal, interval_s=0) as counter:
            counter.advance(1_200_000)
            counter.advance(8_800_000)
    drawn = terminal.getvalue()
    assert "kernels" in drawn and "10000000/10000000" in drawn and "100%" in drawn
    assert caplog.records == []


def test_a_failure_does_not_say_done(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="llmprof.progress"), pytest.raises(OSError):
        with Progress("checksums", 3, "files", bar=False) as counter:
            counter.advance()
            raise OSError("disk")
    assert not any("done" in r.getMessage() for r in caplog.records)


def test_silent_when_disabled(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="llmprof.progress"):
        with Progress("kernels", 5, enabled=False, bar=True, interval_s=0) as counter:
            counter.advance(5)
    assert counter.bar is None and caplog.records == []


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["extract", "-o", "{tmp}/out"], "kernels: rows 20 / 20 (100%) done"),
        (["stats", "-r", "all", "--format", "csv", "-o", "{tmp}/stats"], "stats: reports 8 / 8 (100%) done"),
    ],
)
def test_the_cli_logs_totals_when_stderr_is_not_a_terminal(command: list[str], expected: str, tmp_path: Path) -> None:
    capture = by_id("h100_matmul_capture_range/matmul").sqlite
    args = [command[0], str(capture), *(a.replace("{tmp}", str(tmp_path)) for a in command[1:])]
    result = CliRunner().invoke(main, [*args, "--log", str(tmp_path / "stage.log")])
    assert result.exit_code == 0, result.output
    assert f"INFO llmprof.progress: {expected}" in (tmp_path / "stage.log").read_text()
    assert "\r" not in result.output  # no bar in a log
