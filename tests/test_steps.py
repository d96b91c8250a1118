"""Iterations without markers and launch-bound steps, on real exports.

The hook-mode samples carry vLLM's own range per engine step: hiding them and finding the steps
from the kernel sequence alone must give the same steps. The in-process capture marks only its
three generate calls (``iteration k``), of 64 steps each (one per output token). Public exports
whose kernels do not repeat must get no steps, not invented ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLES

from llmprof.analysis import findings as rules
from llmprof.analysis import steps as steps_module
from llmprof.analysis.findings import RULES, RunResults
from llmprof.analysis.iterations import MIN_STEADY_STEPS, STEPS, Waits, critical_paths, write_steps
from llmprof.analysis.steps import (
    MIN_MATCH,
    iteration_windows,
    kernel_sequence_windows,
    sequence_period,
    step_range_windows,
    step_windows,
    waits_on_gpu,
)
from llmprof.analysis.tables import CUDA_API
from llmprof.common.records import Metrics, load_metrics, load_run_record
from llmprof.render.document import to_markdown
from llmprof.render.report import build_report

DEMO = "vllm_inproc_h100_3iter/vllm"
HOOK = ("samples/vllm-llama1b-bs1", "samples/vllm-llama1b-bs16")
#: Exports whose kernel sequence does not repeat (or that hold too few kernels to tell).
NO_REPEAT = (
    "nsys2020_no_enum_tables/cupy",
    "nsys2020_no_enum_tables/numba-jit",
    "nsys2022_nested_nvtx_no_memcpy_enum/nsys_profile",
    "nsys2026_newest_schema/mock",
)
RULE = {rule.id: rule for rule in RULES}


def _projected_step_ranges(stage: Path) -> tuple[np.ndarray, np.ndarray]:
    """vLLM's step ranges as nsys projects them onto the GPU (start and end of the work they launched)."""
    frame = pq.read_table(stage / "nvtx_gpu.parquet").to_pandas()
    steps = frame[frame["name"].str.contains("execute_context_")].sort_values("proj_start_ns")
    return steps["proj_start_ns"].to_numpy("int64"), steps["proj_end_ns"].to_numpy("int64")


@pytest.mark.parametrize("capture", HOOK)
def test_steps_found_from_kernels_match_vllm_step_ranges(capture: str, extracted: dict[str, Path]) -> None:
    stage = extracted[capture]
    found, _ = kernel_sequence_windows(stage)  # the step ranges hidden: kernels only
    starts, ends = _projected_step_ranges(stage)
    detected = found[0]
    assert detected.method == "kernel_sequence"
    assert len(detected.start_ns) == len(starts) > 60
    assert np.all((detected.start_ns >= starts) & (detected.start_ns <= ends))  # each inside its own range
    ranged = step_range_windows(stage)[0]
    assert np.array_equal(ranged.start_ns, starts)
    assert ranged.phase[0] == "prefill" and ranged.phase.count("decode") >= 55
    # Steps end at the same kernel both ways, except where the next step's first kernels run ahead of the
    # kernel that opens steps (a prefill, a block-table write): the detected step then keeps them.
    same_end = detected.end_ns == ranged.end_ns
    assert same_end.mean() >= 0.85
    assert np.all(detected.end_ns[~same_end] > ranged.end_ns[~same_end])


def test_in_process_steps_fall_64_to_each_marked_iteration(extracted: dict[str, Path]) -> None:
    stage = extracted[DEMO]
    windows = step_windows(stage)
    assert windows.method == "kernel_sequence"
    detection = windows.devices[0].detection
    assert detection is not None and detection.period == 212 and detection.match is not None
    assert detection.match > 0.9 and windows.devices[0].confidence == "high"
    steps = pq.read_table(stage / "steps.parquet").to_pandas()
    assert steps["iteration"].value_counts().sort_index().to_dict() == {0: 64, 1: 64, 2: 64}
    first = steps.groupby("iteration").head(1)
    assert (first["graph_launches"] > 1).all() and not first["steady"].any()  # prefill: graph pieces, not steady


def test_hook_mode_steps_fall_32_to_each_iteration_of_the_driver(extracted: dict[str, Path]) -> None:
    """The driver's ``iteration k`` ranges launch nothing (the engine is another process): their host spans
    group the engine's steps, one per output token (32)."""
    steps = pq.read_table(extracted["samples/vllm-llama1b-bs1"] / "steps.parquet").to_pandas()
    assert steps["iteration"].value_counts().sort_index().to_dict() == {0: 32, 1: 32}
    assert steps["method"].unique().tolist() == ["vllm_step_ranges"]
    assert steps.groupby("iteration")["phase"].first().tolist() == ["prefill", "prefill"]


@pytest.mark.parametrize("capture", NO_REPEAT)
def test_no_steps_invented_where_kernels_do_not_repeat(capture: str, extracted: dict[str, Path]) -> None:
    stage = extracted[capture]
    assert iteration_windows(stage) == {}
    m = load_metrics(stage)
    assert m["steps"]["method"] == "none" and m["steps"]["steps"] == 0
    assert all(d["reason"] for d in m["steps"]["devices"])
    assert pq.read_table(stage / "steps.parquet").schema.equals(STEPS)
    found = RULE["few_steady_steps"].apply(RunResults(m))
    assert [f.title for f in found] == ["No repeating iteration found: no per-iteration numbers"]


def test_iteration_windows_per_device(extracted: dict[str, Path]) -> None:
    windows = iteration_windows(extracted["nsys2026_two_gpus_nccl/mfu_2gpu_before"])
    assert sorted(windows) == [0, 1]
    for start, end in windows.values():
        assert len(start) == len(end) == 17
        assert np.all(start < end) and np.all(end[:-1] <= start[1:])  # in time order, not overlapping


def test_sequence_period() -> None:
    step = np.array([5, 1, 2, 3, 1, 2, 3, 4])  # a step of 8 kernels that repeats a 3-kernel motif inside
    assert sequence_period(np.tile(step, 10)) == (8, 1.0)
    assert sequence_period(np.arange(30)) == (1, 0.0)
    assert sequence_period(np.array([1, 2])) is None
    rng = np.random.default_rng(0)
    period = sequence_period(rng.integers(0, 20, 3000))
    assert period is not None and period[1] < MIN_MATCH


def test_critical_path_and_margin() -> None:
    path, margin = critical_paths(
        np.array([300, 100, 0, 10]), np.array([100, 200, 0, 10]), np.array([0, 50, 0, 0]), np.array([0, 0, 0, 40])
    )
    assert path.tolist() == ["host", "gpu", "host", "copy"]
    assert margin.tolist() == pytest.approx([2 / 3, 0.5, 0.0, 0.75])


def test_time_waiting_on_the_gpu_is_not_host_work() -> None:
    waits = Waits(np.array([7]), np.array([7, 7, 8]), np.array([10, 50, 10]), np.array([20, 60, 90]))
    blocked = waits.blocked(np.array([0, 0, 0]), np.array([0, 15, 0]), np.array([30, 55, 100]))
    assert blocked.tolist() == [10, 0, 20]  # whole waits inside the gap only; thread 8's wait is another's


def test_which_calls_wait_on_the_gpu() -> None:
    kinds = np.array(["sync", "sync", "sync", "memcpy", "memcpy", "launch"], dtype=object)
    names = np.array(
        [
            "cudaEventSynchronize",
            "cudaEventQuery",
            "cudaStreamWaitEvent",
            "cudaMemcpy",
            "cudaMemcpyAsync",
            "cudaLaunchKernel",
        ],
        dtype=object,
    )
    assert waits_on_gpu(kinds, names).tolist() == [True, False, False, True, False, False]


def test_demo_steps_launch_outside_graphs(extracted: dict[str, Path]) -> None:
    steps = load_metrics(extracted[DEMO])["steps"]
    per = steps["per_step"]
    assert (per["kernels"], per["graph_kernels"], per["launch_calls"], per["graph_launches"]) == (212, 193, 20, 1)
    assert per["nongraph_kernels"] == 19
    assert steps["steady_steps"] == 177 and steps["critical_path"] == "host"
    assert per["host_ns"] > 1.5 * per["gpu_ns"] and per["host_ns"] > per["host_between_ns"] > per["host_launch_ns"]
    assert per["nongraph_host_ns"] > 10 * per["nongraph_kernel_ns"]  # launching them costs far more than running
    names = [c["name"] for c in steps["nongraph_launches"]]
    assert {"_post_update_kernel", "_prepare_pos_seq_lens_kernel", "_gumbel_sample_kernel"} <= set(names[:5])
    assert sum(c["per_step"] for c in steps["nongraph_launches"]) == 12  # the top 10 names: 12 of the 19 launches
    latency = steps["latency"]
    assert latency is not None and 2.5e6 < latency["median_ns"] < 3.5e6


@pytest.fixture
def m(extracted: dict[str, Path]) -> Metrics:
    return load_metrics(extracted[DEMO])


def test_launch_bound_steps(m: Metrics) -> None:
    (found,) = RULE["launch_bound_steps"].apply(RunResults(m))
    assert found.title.startswith("Steps launch-bound: host ")
    assert found.title.endswith("; 19 kernels per step launched outside CUDA graphs")
    assert "_post_update_kernel ×1.0/step" in found.evidence and "µs host per launch" in found.evidence
    assert found.numbers["nongraph_kernels_per_step"] == 19 and found.confidence == "medium"
    assert found.thresholds == {"critical_margin": rules.LAUNCH_BOUND_MARGIN}
    m["steps"]["critical_margin"] = rules.LAUNCH_BOUND_MARGIN
    assert RULE["launch_bound_steps"].apply(RunResults(m))
    m["steps"]["critical_margin"] = rules.LAUNCH_BOUND_MARGIN - 0.001
    assert not RULE["launch_bound_steps"].apply(RunResults(m))


@pytest.mark.parametrize(
    "capture",
    [
        "nsys2026_two_gpus_nccl/mfu_2gpu_before",
        "nsys2024_cloverleaf_a100/perlmutter-cloverleaf-cuda",
        "nsys2026_two_gpus_nccl/mfu_2gpu_after",
    ],
)
def test_launch_bound_steps_silent_where_the_gpu_bounds_steps(capture: str, extracted: dict[str, Path]) -> None:
    m = load_metrics(extracted[capture])
    assert m["steps"]["critical_path"] == "gpu" and m["steps"]["host_known_steps"] >= 4
    assert not RULE["launch_bound_steps"].apply(RunResults(m))


def test_launch_bound_steps_silent_where_copies_fill_the_step(extracted: dict[str, Path]) -> None:
    """Weight loading: each 29 ms step copies 1.5 GB; the launch calls, blocked behind the copies, last about as
    long. Host and copies are neck and neck, so the steps are not called launch-bound."""
    steps = load_metrics(extracted["nsys2026_two_gpus_weight_load/h100_2gpu_1s"])["steps"]
    per = steps["per_step"]
    assert per["copy_ns"] > 30 * per["gpu_ns"] and abs(per["host_ns"] - per["copy_ns"]) < 0.05 * per["host_ns"]
    assert steps["critical_margin"] is not None and steps["critical_margin"] < rules.LAUNCH_BOUND_MARGIN
    assert not RULE["launch_bound_steps"].apply(
        RunResults(load_metrics(extracted["nsys2026_two_gpus_weight_load/h100_2gpu_1s"]))
    )


def test_few_steady_steps(m: Metrics, extracted: dict[str, Path]) -> None:
    assert not RULE["few_steady_steps"].apply(RunResults(m))
    m["steps"]["steady_steps"] = MIN_STEADY_STEPS
    assert not RULE["few_steady_steps"].apply(RunResults(m))
    m["steps"]["steady_steps"] = MIN_STEADY_STEPS - 1
    (found,) = RULE["few_steady_steps"].apply(RunResults(m))
    assert found.title == "Only 2 steady iteration(s) captured" and found.numbers["steady_steps"] == 2
    graphs = load_metrics(extracted["nsys2025_cuda_graphs/nsight-2025.5.2"])  # 3 kernels: 2 steady steps
    (found,) = RULE["few_steady_steps"].apply(RunResults(graphs))
    assert found.severity == "warning" and found.numbers == {"steady_steps": 2, "steps": 3}


def test_a_sample_from_the_middle_finds_the_same_steps(
    extracted: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large captures are sampled in their middle: the steps found must not depend on it. Mid-capture, the GPU
    idles before the CUDA graph about as long as between steps (the graph launch call is slow), so the step's
    opening kernel is the one the host launches first after waiting for the previous step's results."""
    stage = extracted[DEMO]
    whole, _ = kernel_sequence_windows(stage)
    monkeypatch.setattr(steps_module, "SAMPLE", 2048)
    sampled, detections = kernel_sequence_windows(stage)
    opening = whole[0].detection
    assert opening is not None and opening.signature is not None
    assert opening.signature.startswith("void <unnamed>::elementwise_kernel_with_index<int, at::native::arange")
    assert detections[0].kernels == 2048 and detections[0].signature == opening.signature
    assert np.array_equal(sampled[0].start_ns, whole[0].start_ns) and len(sampled[0].start_ns) == 192


def test_without_cuda_calls_steps_are_found_and_the_host_side_is_unknown(
    extracted: dict[str, Path], tmp_path: Path
) -> None:
    stage = tmp_path / "extract"
    shutil.copytree(extracted[DEMO], stage)
    pq.write_table(CUDA_API.empty_table(), stage / "cuda_api.parquet")
    rows, steps = write_steps(stage)
    assert rows == 192 and steps["steady_steps"] == 177  # the kernels alone: the gap before each step opens it
    assert steps["host_known_steps"] == 0 and steps["critical_path"] is None and "host_ns" not in steps["per_step"]
    m = load_metrics(extracted[DEMO])
    m["steps"] = steps
    assert not RULE["launch_bound_steps"].apply(RunResults(m))
    text = to_markdown(build_report("demo", m, [], []))
    assert "| Host: launch calls + between | not known: kernels without their launch call |" in text


def test_launch_bound_steps_confirmed_by_the_untraced_run(extracted: dict[str, Path]) -> None:
    """bs16, hook mode: untraced, a step (iteration median over its 33 steps) still lasts about twice its GPU work,
    so the host leads without the tracer too; were the untraced step as short as its GPU work, it may not."""
    m = load_metrics(extracted["samples/vllm-llama1b-bs16"])
    folder = SAMPLES / "vllm-llama1b-bs16"
    traced, untraced = load_run_record(folder / "run.json"), load_run_record(folder / "baseline.json")
    (found,) = RULE["launch_bound_steps"].apply(RunResults(m, traced, untraced))
    assert m["steps"]["steps_per_iteration"] == 33
    assert found.confidence == "high" and "the GPU still waits on the host" in found.evidence
    assert found.numbers["untraced_step_ns"] > 2 * found.numbers["gpu_work_ns_per_step"]
    gpu_work = found.numbers["gpu_work_ns_per_step"]
    for iteration in untraced["iterations"]:
        iteration["latency_s"] = float(gpu_work) * 33 / 1e9  # untraced steps exactly as long as their GPU work
    (found,) = RULE["launch_bound_steps"].apply(RunResults(m, traced, untraced))
    assert found.confidence == "low" and "the host may only lead under the tracer" in found.evidence
