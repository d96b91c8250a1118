"""Findings of several GPUs: skew told from bandwidth, setup outliers, NVTX that only libraries emitted."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from test_findings import fired, silent

from llmprof.analysis import findings as rules
from llmprof.common.records import Metrics, load_metrics

NCCL = "nsys2026_two_gpus_nccl/mfu_2gpu_before"


@pytest.fixture
def two_gpus(extracted: dict[str, Path]) -> Metrics:
    return load_metrics(extracted[NCCL])


def test_a_rank_waiting_for_another_is_skew_not_bandwidth(two_gpus: Metrics) -> None:
    verdict = two_gpus["multi_gpu"]["verdict"]
    assert verdict["verdict"] == "skew" and verdict["waiting"] is not None and verdict["straggler"] is not None
    found = fired("collective_balance", two_gpus)
    waiting, straggler = verdict["waiting"]["device_id"], verdict["straggler"]["device_id"]
    share = verdict["pair_wait_ns"] / verdict["waiting_collective_ns"]
    assert found.severity == "warning" and found.title.startswith(f"GPU {waiting} (pid ")
    assert f"waits for GPU {straggler} (pid" in found.title
    assert f"{100 * share:.1f}% of its collective time" in found.title
    assert f"{verdict['pair_wait_ns'] / 1e6:.2f} ms" in found.evidence and "not bandwidth" in found.evidence
    assert "Communication-bound" not in found.next_step


def test_skew_below_its_threshold_is_silent(two_gpus: Metrics) -> None:
    verdict = two_gpus["multi_gpu"]["verdict"]
    verdict["pair_wait_ns"] = int(verdict["waiting_collective_ns"] * (rules.SKEW_WAIT_SHARE - 0.01))
    assert silent("collective_balance", two_gpus)
    verdict["pair_wait_ns"] = int(verdict["waiting_collective_ns"] * (rules.SKEW_WAIT_SHARE + 0.01))
    assert not silent("collective_balance", two_gpus)


def test_transfer_dominating_may_be_called_communication_bound(two_gpus: Metrics) -> None:
    verdict = two_gpus["multi_gpu"]["verdict"]
    verdict.update(verdict="transfer", transfer_share=0.8, transfer_ns=8_000_000, wait_ns=2_000_000)
    found = fired("collective_balance", two_gpus)
    assert found.severity == "info" and "transfer 80.0% of collective time" in found.title
    assert "Communication-bound" in found.next_step


def test_one_gpu_has_no_collective_finding(extracted: dict[str, Path]) -> None:
    assert silent("collective_balance", load_metrics(extracted["vllm_inproc_h100_3iter/vllm"]))


def test_setup_outliers_are_named(two_gpus: Metrics) -> None:
    assert silent("setup_outliers", two_gpus)
    barrier = {
        "kind": "nccl:AllGather",
        "instance": 0,
        "start_ns": 0,
        "duration_ns": 2_060_000_000,
        "kind_median_ns": 40_000.0,
        "ranks": [{"device_id": 0, "pid": 1}, {"device_id": 1, "pid": 2}],
    }
    two_gpus["multi_gpu"]["collectives"]["setup"] = [barrier]  # type: ignore[list-item]
    found = fired("setup_outliers", two_gpus)
    assert "1 one-off instance" in found.title and "nccl:AllGather 2060.00 ms (median 0.04 ms)" in found.evidence


def test_nvtx_from_libraries_only(two_gpus: Metrics) -> None:
    assert silent("library_nvtx_only", two_gpus)  # PyTorch op ranges in the default domain
    library = copy.deepcopy(two_gpus)
    for r in library["nvtx"]["ranges"]:
        r["name"] = "NCCL:" + r["name"].split(":", 1)[1]
    found = fired("library_nvtx_only", library)
    assert "(NCCL)" in found.title and f"{library['nvtx']['range_count']:,} ranges" in found.evidence
    library["nvtx"]["ranges"][0]["name"] = ":generate"
    assert silent("library_nvtx_only", library)


def test_the_report_shows_gpus_side_by_side(extracted: dict[str, Path], tmp_path: Path) -> None:
    from llmprof.render.report import write_report

    write_report(extracted[NCCL], tmp_path / "report", run="two gpus")
    markdown = (tmp_path / "report" / "report.md").read_text()
    metrics = load_metrics(extracted[NCCL])
    assert "## GPUs side by side" in markdown
    for device in metrics["multi_gpu"]["devices"]:
        assert f"| GPU {device['device_id']} | " in markdown and f"| {device['kernels']:,} |" in markdown
    kind = metrics["multi_gpu"]["collectives"]["kinds"][0]
    assert f"| {kind['kind']} | {kind['matched_instances']:,} | {kind['transfer_ns'] / 1e6:,.2f} ms |" in markdown


def test_the_gpus_figure_splits_each_window(extracted: dict[str, Path], tmp_path: Path) -> None:
    from llmprof.render.figures import _gpu_time_parts, draw_figures

    metrics = load_metrics(extracted[NCCL])
    parts = _gpu_time_parts(metrics).pivot(index="gpu", columns="part", values="ms")
    window_ms = metrics["multi_gpu"]["window_ns"] / 1e6
    for device in metrics["multi_gpu"]["devices"]:
        row = parts.loc[f"GPU {device['device_id']}"]
        assert row.sum() == pytest.approx(window_ms)
        assert row["idle"] == pytest.approx((metrics["multi_gpu"]["window_ns"] - device["busy_ns"]) / 1e6)
        waits = [
            r["wait_ns"]
            for k in metrics["multi_gpu"]["collectives"]["kinds"]
            for r in k["ranks"]
            if r["rank"]["device_id"] == device["device_id"]
        ]
        assert row["collective: waiting"] == pytest.approx(sum(waits) / 1e6)
    draw_figures(extracted[NCCL], tmp_path / "figures")
    svg = (tmp_path / "figures" / "gpus.svg").read_text()
    assert "GPU 0" in svg and "collective: waiting" in svg
    lanes = (tmp_path / "figures" / "timeline.svg").read_text()
    assert lanes.count('id="axes_') == len(metrics["multi_gpu"]["devices"])  # one timeline lane per GPU
