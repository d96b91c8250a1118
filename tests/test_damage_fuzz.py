"""Random byte-level damage to a real export: extract and stats give a result or one error line, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from click.testing import CliRunner
from conftest import DATA
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmprof.cli import main

SOURCE = DATA / "h100_matmul_capture_range" / "matmul.sqlite"  # 340 kB, nsys 2025.3, kernels, NVTX, OS runtime
SIZE = SOURCE.stat().st_size
PAGE = 4096

#: A damage: overwrite bytes at offsets, zero whole pages, or cut the file short.
flips = st.lists(st.tuples(st.integers(0, SIZE - 1), st.integers(0, 255)), min_size=1, max_size=40)
pages = st.lists(st.integers(0, SIZE // PAGE - 1), min_size=1, max_size=4)
damages = st.one_of(
    st.tuples(st.just("flip"), flips),
    st.tuples(st.just("zero_pages"), pages),
    st.tuples(st.just("truncate"), st.integers(0, SIZE - 1)),
)


def _damaged_copy(folder: Path, damage: tuple[str, object]) -> Path:
    data = bytearray(SOURCE.read_bytes())
    kind, detail = damage
    if kind == "flip":
        for offset, value in detail:  # type: ignore[attr-defined]
            data[offset] = value
    elif kind == "zero_pages":
        for page in detail:  # type: ignore[attr-defined]
            data[page * PAGE : (page + 1) * PAGE] = bytes(PAGE)
    else:
        del data[int(detail) :]  # type: ignore[call-overload]
    path = folder / "damaged.sqlite"
    path.write_bytes(bytes(data))
    return path


def _one_error_line(output: str) -> bool:
    lines = output.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in output


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damage=damages)
@example(damage=("flip", [(32776, 0)]))  # a NULL start in CUPTI_ACTIVITY_KIND_RUNTIME: stats crashed on it once
def test_damaged_export_gives_a_result_or_one_error_line(damage: tuple[str, object]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        export = _damaged_copy(folder, damage)
        runner = CliRunner()
        extracted = runner.invoke(main, ["extract", str(export), "-o", str(folder / "out"), "--quiet"])
        assert extracted.exception is None or isinstance(extracted.exception, SystemExit), extracted.output
        if extracted.exit_code == 0:
            assert (folder / "out" / "metrics.json").is_file()
        else:
            assert extracted.exit_code == 1 and _one_error_line(extracted.output), extracted.output
            assert not (folder / "out").exists()
        assert sorted(p.name for p in folder.iterdir() if p.name != "out") == ["damaged.sqlite"]  # no partial left
        stats = runner.invoke(main, ["stats", str(export), "-r", "all", "--format", "csv", "--quiet"])
        assert stats.exception is None or isinstance(stats.exception, SystemExit), stats.output
        assert stats.exit_code == 0 or (stats.exit_code == 1 and _one_error_line(stats.output.split("SKIPPED")[0]))
