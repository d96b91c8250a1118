"""Busy time split per GPU, idle time explained, the profiler's own work, and the numbers behind every finding."""

from __future__ import annotations

import copy
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import CAPTURES

from llmprof.analysis import busy, idle
from llmprof.analysis import findings as rules
from llmprof.analysis.findings import RULES, RunResults
from llmprof.analysis.idle import CLASSES, IDLE_GAPS
from llmprof.analysis.metrics import capture_window
from llmprof.common.records import Metrics, load_metrics
from llmprof.render.document import to_markdown
from llmprof.render.report import build_report

TWO_GPUS = "nsys2026_two_gpus_weight_load/h100_2gpu_1s"  # 51 GB of weights copied to two GPUs, few kernels
VLLM = "vllm_inproc_h100_3iter/vllm"  # three vLLM generate calls, NVTX ranges `iteration 0..2`


def _fired(rule_id: str, m: Metrics) -> list[rules.Finding]:
    return next(r for r in RULES if r.id == rule_id).apply(RunResults(m))


@pytest.fixture
def two_gpus(extracted: dict[str, Path]) -> Metrics:
    return load_metrics(extracted[TWO_GPUS])


@pytest.fixture
def vllm(extracted: dict[str, Path]) -> Metrics:
    return load_metrics(extracted[VLLM])


def test_copies_do_not_count_as_compute(two_gpus: Metrics) -> None:
    devices = two_gpus["busy"]["devices"]
    assert [d["device_id"] for d in devices] == [0, 1]
    for d, activity in zip(devices, two_gpus["gpu_activity"]["devices"]):
        assert d["union_ns"] == activity["busy_ns"]  # the same sweep gives both
        assert d["kernel_fraction"] < 0.03 and d["copy_fraction"] > 0.96  # SMs idle, copy engines busy
        assert d["copy_bytes"]["H2D"] == 25_475_253_792
        assert d["copy_directions_ns"]["H2D"] == pytest.approx(920.8e6, rel=1e-3)
    found = _fired("copies_fill_gpu", two_gpus)
    assert [f.title for f in found] == [
        "GPU 0: SMs idle 97.7% of the window; copies filled 97.0% of it",
        "GPU 1: SMs idle 97.7% of the window; copies filled 97.0% of it",
    ]
    assert "the copy engines (the link), not the host, are the critical path" in found[0].evidence
    assert "H2D 25.5 GB in 920.87 ms at 27.7 GB/s" in found[0].evidence


def test_copies_fill_gpu_threshold(two_gpus: Metrics, vllm: Metrics) -> None:
    assert not _fired("copies_fill_gpu", vllm)
    window = two_gpus["busy"]["window_ns"]
    for d in two_gpus["busy"]["devices"]:
        d["copy_only_ns"] = int(window * (rules.COPY_ONLY_SHARE - 0.001))
    assert not _fired("copies_fill_gpu", two_gpus)
    two_gpus["busy"]["devices"][1]["copy_only_ns"] = int(window * (rules.COPY_ONLY_SHARE + 0.001))
    assert [f.numbers["device_id"] for f in _fired("copies_fill_gpu", two_gpus)] == [1]


def test_headline_counts_gpus_from_their_activity(two_gpus: Metrics) -> None:
    markdown = to_markdown(build_report("two", two_gpus, [], []))
    assert "| GPUs | 2 with GPU activity (names not recorded) |" in markdown
    assert "| GPU compute busy (a kernel running), of the window | GPU 0 2.3%, GPU 1 2.3% |" in markdown


def test_busy_per_iteration_adds_up(vllm: Metrics) -> None:
    (device,) = vllm["busy"]["devices"]
    assert vllm["busy"]["iterations_source"] == "nvtx_iteration_ranges"
    assert [i["index"] for i in device["iterations"]] == [0, 1, 2]
    inside = sum(i["kernel_ns"] for i in device["iterations"])
    assert inside == device["kernel_ns"]  # every kernel ran inside an iteration range


def test_idle_time_is_explained_by_class(vllm: Metrics, extracted: dict[str, Path]) -> None:
    (device,) = vllm["idle"]["devices"]
    assert device["explained_share"] is not None and device["explained_share"] >= 0.9
    assert device["dominant"] == "host"
    assert sum(device["classes"].values()) == device["gap_ns"]  # every nanosecond of every gap has one class
    assert device["gap_ns"] + device["short_gap_ns"] == device["sm_idle_ns"]
    assert device["classes"]["profiler"] == vllm["profiler"]["gpu_idle_ns"] > 0
    per_iteration = [sum(i["classes"].values()) for i in device["iterations"]]
    assert sum(per_iteration) <= device["gap_ns"]
    table = pq.read_table(extracted[VLLM] / "idle_gaps.parquet")
    assert table.schema == IDLE_GAPS and table.num_rows == device["gaps"]
    rows = table.to_pandas()
    assert (rows[[f"{c}_ns" for c in CLASSES]].sum(axis=1) == rows["duration_ns"]).all()
    assert (rows["duration_ns"] >= vllm["idle"]["gap_min_ns"]).all()
    assert rows["next_call"].notna().mean() > 0.99  # the launching call is found for nearly every gap


def test_idle_cause_threshold(vllm: Metrics, two_gpus: Metrics) -> None:
    (found,) = _fired("idle_cause", vllm)
    assert found.title == (
        "GPU 0 idle time mostly the host between launches (Python, scheduling): 63.0% of 402.70 ms idle"
    )
    assert not _fired("idle_cause", two_gpus)  # idle 0.7% of the window: copies fill it
    m = copy.deepcopy(vllm)
    (device,) = m["idle"]["devices"]
    device["classes"]["host"] = int(device["idle_ns"] * (rules.IDLE_CAUSE_SHARE - 0.001))
    assert not _fired("idle_cause", m)
    device["classes"]["host"] = int(device["idle_ns"] * (rules.IDLE_CAUSE_SHARE + 0.001))
    assert _fired("idle_cause", m)


def test_profiler_work(vllm: Metrics, two_gpus: Metrics, extracted: dict[str, Path]) -> None:
    work = vllm["profiler"]
    assert (work["count"], work["time_ns"]) == (19, 213_487_281)
    flush = next(w for w in work["largest"] if w["name"] == "CUDA profiling data flush on cudaProfilerStop")
    assert (flush["duration_ns"], flush["in_window"], flush["tid"]) == (29_536_472, False, 1796)
    (found,) = _fired("profiler_work", vllm)
    assert found.title == "Profiler's own work: 37.04 ms of the capture window (5.7%)"
    assert not two_gpus["profiler"]["recorded"] and not _fired("profiler_work", two_gpus)
    m = copy.deepcopy(vllm)
    m["profiler"]["in_window_ns"] = int(m["capture_window"]["duration_ns"] * (rules.PROFILER_WINDOW_SHARE - 0.001))
    assert not _fired("profiler_work", m)
    old = load_metrics(extracted["nsys2020_no_enum_tables/cupy"])["profiler"]  # no overheadType column in 2020
    assert old["recorded"] and old["count"] == 34


@pytest.mark.parametrize("capture", [c.id for c in CAPTURES])
def test_every_finding_carries_its_numbers_and_its_rule_thresholds(extracted: dict[str, Path], capture: str) -> None:
    found = rules.findings(load_metrics(extracted[capture]))
    thresholds = {r.id: r.thresholds for r in RULES}
    for finding in found:
        record = finding.to_dict()
        assert record["numbers"], (capture, finding.id)
        assert record["thresholds"] == dict(sorted(thresholds[finding.id].items()))
        assert record["confidence"] in ("high", "medium", "low")


def test_small_budgets_give_the_same_split_and_classes(
    extracted: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the budgets, the sweep and the idle classes go a time window at a time: the results do not change."""
    stage = extracted[VLLM]
    window = capture_window(stage)
    whole = busy.gpu_time(stage, window)
    first = idle.explain_idle(stage, whole, tmp_path / "whole.parquet")
    monkeypatch.setattr(busy, "SWEEP_BUDGET", 5_000)  # 81,510 kernel events: about 17 windows
    monkeypatch.setattr(idle, "NEAR_BUDGET", 1_000)  # the calls and copies near gaps: 8 windows
    windowed = busy.gpu_time(stage, window)
    assert windowed.busy == whole.busy and windowed.activity == whole.activity
    assert idle.explain_idle(stage, windowed, tmp_path / "windowed.parquet") == first
    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "windowed.parquet").read_bytes()
