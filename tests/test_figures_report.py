"""Figures and reports: deterministic files, findings supported by the numbers, honest empty cases."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmprof.analysis.findings import findings
from llmprof.cli import main
from llmprof.render.figures import FIGURES, FORMATS, draw_figures
from llmprof.render.report import write_report


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.name[0] != "."}


def test_figures_are_complete_and_deterministic(extracted: dict[str, Path], tmp_path: Path) -> None:
    folder = extracted["vllm_inproc_h100_3iter/vllm"]
    draw_figures(folder, tmp_path / "a")
    draw_figures(folder, tmp_path / "b")
    assert sorted(_digests(tmp_path / "a")) == sorted(f"{n}.{f}" for n in FIGURES for f in FORMATS)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


@pytest.mark.parametrize("capture_id", ["capture_without_kernels/report1", "nsys2020_no_enum_tables/cupy"])
def test_figures_draw_for_sparse_captures(extracted: dict[str, Path], tmp_path: Path, capture_id: str) -> None:
    written = draw_figures(extracted[capture_id], tmp_path / "figs")
    assert all(p.stat().st_size > 0 for p in written)


def test_demo_report(extracted: dict[str, Path], tmp_path: Path) -> None:
    folder = extracted["vllm_inproc_h100_3iter/vllm"]
    draw_figures(folder, tmp_path / "figures")
    result = CliRunner().invoke(
        main,
        [
            "report",
            str(folder),
            "-o",
            str(tmp_path / "report"),
            "--figures",
            str(tmp_path / "figures"),
            "--run",
            "demo",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "report" / "report.md").read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    found = {f["id"]: f for f in json.loads((tmp_path / "report" / "findings.json").read_text())}
    assert {"gpu_idle", "dominant_kernel_family"} <= set(found)
    assert "nvtx_absent" not in found and "no_gpu_work" not in found
    assert found["dominant_kernel_family"]["title"].startswith("GEMM kernels 72.7% of GPU time")
    for text in (markdown, html):
        assert "nvjet_sm90_tst_128x8_64x12_2x1_v_bz_TNT" in text
        assert ":iteration 2" in text
        assert "../figures/timeline.png" in text
    assert html.startswith("<!DOCTYPE html>")


def test_report_of_a_capture_without_gpu_work(extracted: dict[str, Path], tmp_path: Path) -> None:
    write_report(extracted["capture_without_kernels/report1"], tmp_path / "report", run="wsl")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "No GPU work captured" in markdown and "NVTX ranges absent" in markdown
    assert "--capture-range=cudaProfilerApi" in markdown


def test_rules_follow_their_thresholds(extracted: dict[str, Path]) -> None:
    base = json.loads((extracted["vllm_inproc_h100_3iter/vllm"] / "metrics.json").read_text())
    ids = {f.id for f in findings(base)}
    assert "host_blocked_in_sync" not in ids and "setup_in_capture" not in ids

    blocked = json.loads(json.dumps(base))
    blocked["cuda_api"]["sync_share"] = 0.46
    assert any(f.id == "host_blocked_in_sync" and "46.0%" in f.title for f in findings(blocked))

    setup = json.loads(json.dumps(base))
    setup["memcpy"]["directions"]["H2D"]["bytes"] = 6_400_000_000
    assert any(f.id == "setup_in_capture" and "6.4 GB" in f.title for f in findings(setup))

    busy = json.loads(json.dumps(base))
    busy["gpu_activity"]["idle_fraction"] = 0.05
    assert "gpu_idle" not in {f.id for f in findings(busy)}


def test_report_needs_an_extract(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(tmp_path), "-o", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 1 and "metrics.json" in result.output and "llmprof extract" in result.output
