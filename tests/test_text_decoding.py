"""Text in an export that is not UTF-8 is shown with replacement characters, never called corruption."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import DATA

from llmprof.analysis.extract import extract
from llmprof.cli import main

SOURCE = DATA / "nsys2025_cuda_graphs" / "nsight-2025.5.2.sqlite"


@pytest.fixture
def latin1_export(tmp_path: Path) -> Path:
    """A real small export whose metadata holds Latin-1, a GPU name with binary bytes, an API name mis-encoded."""
    path = tmp_path / "latin1.sqlite"
    shutil.copy(SOURCE, path)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_USER', CAST(X'4A6FE9' AS TEXT))")  # "Jo" + Latin-1 é
        db.execute("UPDATE TARGET_INFO_GPU SET name = CAST(X'4E564944494120FF00FE' AS TEXT)")
        db.execute(
            "UPDATE StringIds SET value = CAST(X'637564614576656E74446573F4726F79' AS TEXT) "
            "WHERE value LIKE 'cudaEventDestroy%'"
        )
    return path


@pytest.mark.parametrize("reader", ["adbc", "sqlite3"])
def test_extract_reads_undecodable_text(
    latin1_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    if reader == "sqlite3":
        import llmprof.nsys.export as export_module

        monkeypatch.setattr(export_module, "adbc_dbapi", None)
    metrics = extract(latin1_export, tmp_path / "out")
    assert metrics["gpus"][0]["name"] == "NVIDIA \ufffd\x00\ufffd"  # type: ignore[index]
    names = pq.read_table(tmp_path / "out" / "cuda_api_sum.parquet").column("name").to_pylist()
    assert "cudaEventDes\ufffdroy" in names and "cudaEventDestroy" not in names
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["kernels"]["count"] == 3


def test_stats_prints_undecodable_names(latin1_export: Path) -> None:
    result = CliRunner().invoke(main, ["stats", str(latin1_export), "-r", "cuda_api_sum", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "cudaEventDes\ufffdroy" in result.output and "corrupt" not in result.output


@pytest.mark.parametrize("name", [b"a b#c?d%20.sqlite", b"caf\xe9 export.sqlite"], ids=["uri-characters", "not-utf-8"])
def test_file_names_open_the_file_they_name(tmp_path: Path, name: bytes) -> None:
    path = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), name)))
    shutil.copy(SOURCE, path)
    result = CliRunner().invoke(main, ["stats", str(path), "-r", "cuda_gpu_kern_sum", "--format", "csv"])
    assert result.exit_code == 0 and "add_one" in result.output, result.output
    assert extract(path, tmp_path / "out")["kernels"]["count"] == 3  # type: ignore[index]
    assert sorted(os.listdir(os.fsencode(tmp_path))) == sorted([name, b"out"])  # nothing else opened or made


def test_a_missing_file_with_a_name_that_is_not_utf8_is_one_printable_line(tmp_path: Path) -> None:
    path = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.sqlite")))
    result = CliRunner().invoke(main, ["stats", str(path), "--quiet"])
    assert result.exit_code == 1 and "caf\\xe9.sqlite: no such file" in result.output
