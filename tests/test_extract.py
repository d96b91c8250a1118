"""Extraction on every real export: typed tables, counts that match the SQLite, metrics, determinism."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import CAPTURES, DEMO, by_id

from llmprof.analysis import tables
from llmprof.analysis.extract import extract
from llmprof.analysis.stats import REPORTS
from llmprof.common.errors import ConfigError

IDS = [c.id for c in CAPTURES]


def _count(sqlite: Path, sql: str) -> int:
    with sqlite3.connect(f"file:{sqlite}?mode=ro", uri=True) as db:
        try:
            return int(db.execute(sql).fetchone()[0])
        except sqlite3.OperationalError:  # table absent: nothing of that kind captured
            return 0


@pytest.mark.parametrize("capture_id", IDS)
def test_every_table_has_its_schema(extracted: dict[str, Path], capture_id: str) -> None:
    folder = extracted[capture_id]
    for name, schema in {**tables.EVENT_TABLES, "nvtx_gpu": tables.NVTX_GPU}.items():
        assert pq.read_schema(folder / f"{name}.parquet").remove_metadata().equals(schema), name
    for name, report in REPORTS.items():
        assert pq.read_schema(folder / f"{name}.parquet").remove_metadata().equals(report.schema), name


@pytest.mark.parametrize("capture_id", IDS)
def test_row_counts_match_the_export(extracted: dict[str, Path], capture_id: str) -> None:
    sqlite = by_id(capture_id).sqlite
    folder = extracted[capture_id]
    expected = {
        "kernels": "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL",
        "cuda_api": "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME",
        "memcpy": "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_MEMCPY",
        "memset": "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_MEMSET",
        "sync": "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_SYNCHRONIZATION",
        "nvtx": "SELECT count(*) FROM NVTX_EVENTS WHERE eventType IN (59, 60, 70, 71)",
        "osrt": "SELECT count(*) FROM OSRT_API WHERE eventClass = 27",
    }
    metrics = json.loads((folder / "metrics.json").read_text())
    for table, sql in expected.items():
        rows = pq.read_metadata(folder / f"{table}.parquet").num_rows
        assert rows == _count(sqlite, sql), table
        assert metrics["tables"][table] == rows


@pytest.mark.parametrize("capture_id", IDS)
def test_metrics_agree_with_the_summaries(extracted: dict[str, Path], capture_id: str) -> None:
    folder = extracted[capture_id]
    metrics = json.loads((folder / "metrics.json").read_text())
    kern_sum = pq.read_table(folder / "cuda_gpu_kern_sum.parquet").to_pandas()
    assert metrics["kernels"]["time_ns"] == int(kern_sum["total_ns"].sum())
    assert sum(c["time_ns"] for c in metrics["kernels"]["categories"]) == metrics["kernels"]["time_ns"]
    api_sum = pq.read_table(folder / "cuda_api_sum.parquet").to_pandas()
    assert metrics["cuda_api"]["time_ns"] == int(api_sum["total_ns"].sum())
    activity = metrics["gpu_activity"]
    if activity["captured"]:
        assert 0 < activity["busy_fraction"] <= 1
        for device in activity["devices"]:
            assert device["busy_ns"] <= metrics["capture_window"]["duration_ns"]
            gaps = [g["duration_ns"] for g in device["largest_gaps"]]
            assert gaps == sorted(gaps, reverse=True)


def test_demo_metrics(extracted: dict[str, Path]) -> None:
    metrics = json.loads((extracted["vllm_inproc_h100_3iter/vllm"] / "metrics.json").read_text())
    assert metrics["source"]["nsys_version"] == "2025.3.2.0"
    assert metrics["kernels"]["count"] == 40755
    shares = {c["category"]: c["share"] for c in metrics["kernels"]["categories"]}
    assert shares["gemm"] > 0.6 and shares["attention"] > 0.1
    assert metrics["kernels"]["top"][0]["name"].startswith("nvjet_sm90")
    ranges = {r["name"]: r for r in metrics["nvtx"]["ranges"]}
    assert set(ranges) == {":generate", ":iteration 0", ":iteration 1", ":iteration 2"}
    iterations = sum(ranges[f":iteration {i}"]["gpu_time_ns"] for i in range(3))
    # every kernel of the capture was launched inside `generate`, split across its iterations
    assert ranges[":generate"]["gpu_time_ns"] == iterations
    assert ranges[":generate"]["gpu_ops"] == metrics["kernels"]["count"] + metrics["tables"]["memcpy"]
    h2d = metrics["memcpy"]["directions"]["H2D"]
    assert h2d["count"] == 408 and round(h2d["bytes"] / 1e6, 3) == 0.807  # as nsys cuda_gpu_mem_size_sum prints


def test_capture_without_kernels_gives_empty_typed_tables(extracted: dict[str, Path]) -> None:
    folder = extracted["capture_without_kernels/report1"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["gpu_activity"]["captured"] is False
    assert metrics["tables"]["kernels"] == 0 and metrics["tables"]["cuda_api"] > 0
    assert "cuda_gpu_kern_sum" in metrics["skipped_summaries"]
    assert pq.read_table(folder / "kernels.parquet").schema.remove_metadata().equals(tables.KERNELS)


def test_old_export_without_enum_tables_gets_builtin_labels(extracted: dict[str, Path]) -> None:
    copies = pq.read_table(extracted["nsys2020_no_enum_tables/numba-jit"] / "memcpy.parquet").to_pandas()
    assert len(copies) > 0
    assert set(copies["direction"]) <= {"H2D", "D2H", "D2D"}
    assert "Unknown" not in set(copies["copy_kind"])


def test_ids_decoded_and_names_resolved(extracted: dict[str, Path]) -> None:
    folder = extracted["vllm_inproc_h100_3iter/vllm"]
    api = pq.read_table(folder / "cuda_api.parquet").to_pandas()
    processes = pq.read_table(folder / "processes.parquet").to_pandas()
    assert set(api["pid"]) == {1796}
    assert "python3" in set(processes.loc[processes["pid"] == 1796, "name"])
    assert "cudaGraphLaunch_v10000" in set(api["name"]) and "cudaLaunchKernel" in set(api["name"])
    assert api["name"].notna().all()
    kernels = pq.read_table(folder / "kernels.parquet").to_pandas()
    assert kernels["name"].notna().all() and (kernels["duration_ns"] > 0).all()


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_extract_is_deterministic(tmp_path: Path) -> None:
    extract(DEMO, tmp_path / "a")
    extract(DEMO, tmp_path / "b")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


def test_custom_categories_replace_defaults(tmp_path: Path) -> None:
    sqlite = by_id("h100_matmul_capture_range/matmul").sqlite
    metrics = extract(sqlite, tmp_path / "out", categories={"attention": "nvjet"})
    shares = {c["category"]: c["share"] for c in metrics["kernels"]["categories"]}  # type: ignore[index]
    assert shares["attention"] == 1.0 and shares["gemm"] == 0.0


def test_bad_category_pattern_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid regular expression"):
        extract(DEMO, tmp_path / "out", categories={"gemm": "("})
    with pytest.raises(ConfigError, match="unknown kernel categories"):
        extract(DEMO, tmp_path / "out", categories={"matmuls": "gemm"})
    assert not (tmp_path / "out").exists()


def test_standard_library_reader_gives_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ADBC driver, extraction reads through sqlite3 and writes byte-identical files."""
    import llmprof.nsys.export as sqlite_io

    extract(DEMO, tmp_path / "adbc")
    monkeypatch.setattr(sqlite_io, "adbc_dbapi", None)
    extract(DEMO, tmp_path / "sqlite3")
    assert _digests(tmp_path / "adbc") == _digests(tmp_path / "sqlite3")


def test_progress_is_logged_per_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        extract(by_id("h100_matmul_capture_range/matmul").sqlite, tmp_path / "out", progress=True)
    said = [r.getMessage() for r in caplog.records]
    kernels = next(line for line in said if line.startswith("kernels: "))
    assert re.fullmatch(r"kernels: rows ([\d,]+) / \1 \(100%\) done", kernels), said  # rows read of the total
    caplog.clear()
    with caplog.at_level("INFO"):
        extract(by_id("h100_matmul_capture_range/matmul").sqlite, tmp_path / "quiet", progress=False)
    assert not any(" rows " in r.getMessage() for r in caplog.records)
