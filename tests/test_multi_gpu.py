"""Several GPUs: per-device views, collectives matched across ranks, overlap and setup outliers.

The real two-GPU exports are checked against the SQLite itself (counts, k-th instances, durations) and the
interval arithmetic against a brute-force reference computed here; tiny hand-made extract folders pin the
edge cases (unequal counts, one rank, touching intervals, a setup outlier, processes sharing a GPU).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CAPTURES, DATA, DEMO

from llmprof.analysis import collectives as collective_module
from llmprof.analysis import devices as device_module
from llmprof.analysis import tables
from llmprof.analysis.categories import DEFAULT_PATTERNS, collective_kind, kernel_classifier
from llmprof.analysis.collectives import (
    SETUP_MIN_NS,
    SETUP_RATIO,
    collective_verdict,
    collectives_table,
    match_collectives,
    read_collectives,
    summarise_collectives,
    write_collectives,
)
from llmprof.analysis.devices import multi_gpu_metrics
from llmprof.analysis.extract import extract
from llmprof.common.outputs import write_table

NCCL = DATA / "nsys2026_two_gpus_nccl"
BEFORE, AFTER = NCCL / "mfu_2gpu_before.sqlite", NCCL / "mfu_2gpu_after.sqlite"
WEIGHT_LOAD = DATA / "nsys2026_two_gpus_weight_load" / "h100_2gpu_1s.sqlite"
TWO_GPUS = [BEFORE, AFTER, WEIGHT_LOAD]
Interval = tuple[int, int]


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """The real two-GPU exports, extracted once for this module."""
    base = tmp_path_factory.mktemp("multi_gpu")
    found = {}
    for sqlite in TWO_GPUS:
        extract(sqlite, base / sqlite.stem)
        found[sqlite] = base / sqlite.stem
    return found


@pytest.fixture(scope="module")
def views(stages: dict[Path, Path]) -> dict[Path, Any]:
    return {sqlite: multi_gpu_metrics(stage) for sqlite, stage in stages.items()}


def _rows(sqlite: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{sqlite}?mode=ro", uri=True) as db:
        return db.execute(sql).fetchall()


def _kernels(sqlite: Path) -> list[tuple[int, int, str, int, int]]:
    """(device, pid, short name, start, end) of every kernel, straight from the export."""
    return _rows(
        sqlite,
        "SELECT k.deviceId, (k.globalPid >> 24) & 16777215, s.value, k.start, k.end "
        "FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON s.id = k.shortName ORDER BY k.start, k.end",
    )


def _sequences(sqlite: Path) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Per rank, its NCCL kernels' (start, end) in start order: the k-th of each rank is instance k."""
    found: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for device, pid, short, start, end in _kernels(sqlite):
        if short.startswith("nccl"):
            found[(device, pid)].append((start, end))
    return dict(found)


def merged(intervals: list[Interval]) -> list[Interval]:
    """The union of intervals as sorted disjoint intervals (touching ones joined)."""
    out: list[list[int]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def length(intervals: list[Interval]) -> int:
    return sum(e - s for s, e in merged(intervals))


def intersection(a: list[Interval], b: list[Interval]) -> int:
    """Length of the intersection of two unions, by walking both merged lists."""
    total, i, j = 0, 0, 0
    left, right = merged(a), merged(b)
    while i < len(left) and j < len(right):
        total += max(0, min(left[i][1], right[j][1]) - max(left[i][0], right[j][0]))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return total


# --- the real two-GPU exports ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sqlite", TWO_GPUS, ids=lambda p: p.stem)
def test_kernels_per_device_and_process_match_the_export(views: dict[Path, Any], sqlite: Path) -> None:
    expected: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for device, pid, _, start, end in _kernels(sqlite):
        expected[device][pid].append(end - start)
    devices = views[sqlite]["devices"]
    assert [d["device_id"] for d in devices] == sorted(expected) == [0, 1]
    for device in devices:
        per_pid = expected[device["device_id"]]
        assert device["kernels"] == sum(len(v) for v in per_pid.values())
        assert device["kernel_time_ns"] == sum(sum(v) for v in per_pid.values())
        assert [(p["pid"], p["kernels"]) for p in device["processes"]] == [
            (p, len(v)) for p, v in sorted(per_pid.items())
        ]
        assert (
            sum(c["time_ns"] for c in device["categories"]) == device["kernel_time_ns"] - device["setup_kernel_time_ns"]
        )
        assert all(p["process_name"] == "python3" for p in device["processes"])


def test_kernel_counts_differ_per_device_before(views: dict[Path, Any]) -> None:
    """The before capture has 1,993 kernels on GPU 0 and 2,017 on GPU 1: per-device counts are not halves."""
    assert [d["kernels"] for d in views[BEFORE]["devices"]] == [1993, 2017]


@pytest.mark.parametrize("sqlite", TWO_GPUS, ids=lambda p: p.stem)
def test_busy_per_device_is_the_union_of_its_gpu_operations(
    stages: dict[Path, Path], views: dict[Path, Any], sqlite: Path
) -> None:
    stage = stages[sqlite]
    activity = json.loads((stage / "metrics.json").read_text())["gpu_activity"]["devices"]
    intervals: dict[int, list[Interval]] = defaultdict(list)
    for table in ("kernels", "memcpy", "memset"):
        for row in pq.read_table(stage / f"{table}.parquet", columns=["device_id", "start_ns", "end_ns"]).to_pylist():
            intervals[row["device_id"]].append((row["start_ns"], row["end_ns"]))
    for device, active in zip(views[sqlite]["devices"], activity):
        assert device["busy_ns"] == length(intervals[device["device_id"]]) == active["busy_ns"]
        assert device["processes"][0]["busy_ns"] == device["busy_ns"]  # one process per GPU here
        assert 0 < device["busy_fraction"] <= 1


@pytest.mark.parametrize("sqlite", [BEFORE, AFTER], ids=lambda p: p.stem)
def test_collectives_are_matched_instance_by_instance(stages: dict[Path, Path], sqlite: Path) -> None:
    sequences = _sequences(sqlite)
    assert len(sequences) == 2 and len({len(s) for s in sequences.values()}) == 1  # equal counts on both ranks
    table = pq.read_table(stages[sqlite] / "collectives.parquet").to_pylist()
    assert {r["kind"] for r in table} == {"nccl:SendRecv"}
    assert len(table) == sum(len(s) for s in sequences.values())
    per_instance: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in table:
        per_instance[row["instance"]].append(row)
    assert sorted(per_instance) == list(range(len(next(iter(sequences.values())))))
    for k, rows in per_instance.items():
        assert sorted((r["device_id"], r["pid"]) for r in rows) == sorted(sequences)
        for row in rows:
            assert (row["start_ns"], row["end_ns"]) == sequences[(row["device_id"], row["pid"])][k]
            assert row["ordinal"] == k
        fastest = min(r["duration_ns"] for r in rows)
        assert all(r["transfer_ns"] == fastest and r["wait_ns"] == r["duration_ns"] - fastest for r in rows)
        last = [r for r in rows if r["last_to_arrive"]]
        assert len(last) == 1 and last[0]["start_ns"] == max(r["start_ns"] for r in rows)


@pytest.mark.parametrize("sqlite", [BEFORE, AFTER], ids=lambda p: p.stem)
def test_transfer_wait_and_straggler_from_the_export(views: dict[Path, Any], sqlite: Path) -> None:
    """Recomputed from the SQLite: transfer is the fastest rank's duration per instance, wait the rest of each
    rank's, charged to the rank that started last."""
    sequences = _sequences(sqlite)
    ranks = sorted(sequences)
    transfer, wait = 0, defaultdict(int)
    caused: dict[tuple[int, int], int] = defaultdict(int)
    for instance in zip(*(sequences[r] for r in ranks)):
        durations = [end - start for start, end in instance]
        fastest = min(durations)
        last = ranks[max(range(len(ranks)), key=lambda i: (instance[i][0], -i))]
        transfer += fastest
        for r, d in zip(ranks, durations):
            wait[r] += d - fastest
            if r != last:
                caused[last] += d - fastest
    kind = views[sqlite]["collectives"]["kinds"][0]
    assert kind["matched_instances"] == len(sequences[ranks[0]]) == (33 if sqlite == BEFORE else 31)
    assert kind["instance_transfer_ns"] == transfer
    assert kind["transfer_ns"] == transfer * len(ranks)
    assert kind["wait_ns"] == sum(wait.values())
    assert kind["time_ns"] == kind["transfer_ns"] + kind["wait_ns"]
    for part in kind["ranks"]:
        key = (part["rank"]["device_id"], part["rank"]["pid"])
        assert (part["instances"], part["wait_ns"], part["caused_wait_ns"]) == (
            len(sequences[key]),
            wait[key],
            caused[key],
        )
    straggler = max(ranks, key=lambda r: caused[r])
    verdict = views[sqlite]["verdict"]
    assert verdict["verdict"] == "skew"  # waiting, not transfer, is most of the collective time
    assert verdict["straggler"] == {"device_id": straggler[0], "pid": straggler[1]} == kind["straggler"]
    assert verdict["waiting"]["device_id"] != straggler[0]
    assert verdict["pair_wait_ns"] == caused[straggler]
    assert verdict["transfer_share"] == pytest.approx(2 * transfer / (2 * transfer + sum(wait.values())))


def test_before_and_after_swap_the_straggler(views: dict[Path, Any]) -> None:
    """Before, GPU 0 waits for GPU 1; after, GPU 1 waits for GPU 0 (each checked against the export above)."""

    def who_waits_for_whom(view: Any) -> tuple[int, int]:
        return view["verdict"]["waiting"]["device_id"], view["verdict"]["straggler"]["device_id"]

    assert who_waits_for_whom(views[BEFORE]) == (0, 1)
    assert who_waits_for_whom(views[AFTER]) == (1, 0)


def test_capture_without_collectives(views: dict[Path, Any], stages: dict[Path, Path]) -> None:
    view = views[WEIGHT_LOAD]
    assert view["collectives"]["kinds"] == [] and view["verdict"]["verdict"] == "none"
    assert pq.read_metadata(stages[WEIGHT_LOAD] / "collectives.parquet").num_rows == 0
    assert all(d["collective_ns"] == 0 and d["overlap_fraction"] is None for d in view["devices"])


@pytest.mark.parametrize("sqlite", [BEFORE, AFTER], ids=lambda p: p.stem)
def test_overlap_against_brute_force(stages: dict[Path, Path], views: dict[Path, Any], sqlite: Path) -> None:
    collective: dict[int, list[Interval]] = defaultdict(list)
    compute: dict[int, list[Interval]] = defaultdict(list)
    for device, _, short, start, end in _kernels(sqlite):
        (collective if short.startswith("nccl") else compute)[device].append((start, end))
    for device in views[sqlite]["devices"]:
        d = device["device_id"]
        assert device["collective_ns"] == length(collective[d]) == device["collective_kernel_time_ns"]
        assert device["overlapped_ns"] == intersection(collective[d], compute[d])


def test_overlap_with_concurrent_kernels_against_brute_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the vLLM capture, whose kernels overlap their neighbours (programmatic dependent launch), with the fused
    SiLU kernel counted as communication; also swept in many small windows, which must not change a nanosecond."""
    patterns = {
        "communication": r"^triton_poi_fused_mul_silu",
        **{k: v for k, v in DEFAULT_PATTERNS.items() if k != "communication"},
    }
    extract(DEMO, tmp_path / "out", categories=patterns)
    rows = pq.read_table(tmp_path / "out" / "kernels.parquet", columns=["category", "start_ns", "end_ns"]).to_pylist()
    collective = [(r["start_ns"], r["end_ns"]) for r in rows if r["category"] == "communication"]
    compute = [(r["start_ns"], r["end_ns"]) for r in rows if r["category"] != "communication"]
    expected = intersection(collective, compute)
    assert expected > 0
    device = multi_gpu_metrics(tmp_path / "out")["devices"][0]
    assert (device["collective_ns"], device["overlapped_ns"]) == (length(collective), expected)
    monkeypatch.setattr(device_module, "COVERAGE_BUDGET", 64)
    windowed = multi_gpu_metrics(tmp_path / "out")["devices"][0]
    assert (windowed["busy_ns"], windowed["collective_ns"], windowed["overlapped_ns"]) == (
        device["busy_ns"],
        device["collective_ns"],
        expected,
    )


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda c: c.id)
def test_every_extract_has_a_typed_collectives_table(extracted: dict[str, Path], capture: Any) -> None:
    folder = extracted[capture.id]
    assert pq.read_schema(folder / "collectives.parquet").remove_metadata().equals(tables.COLLECTIVES)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["tables"]["collectives"] == pq.read_metadata(folder / "collectives.parquet").num_rows


def test_same_extract_gives_the_same_bytes(stages: dict[Path, Path], tmp_path: Path) -> None:
    stage = stages[BEFORE]
    first = json.dumps(multi_gpu_metrics(stage), sort_keys=True, allow_nan=False)
    assert json.dumps(multi_gpu_metrics(stage), sort_keys=True, allow_nan=False) == first
    digest = hashlib.sha256((stage / "collectives.parquet").read_bytes()).hexdigest()
    write_collectives(stage)  # written again over the extracted one
    assert hashlib.sha256((stage / "collectives.parquet").read_bytes()).hexdigest() == digest


# --- hand-made extract folders -----------------------------------------------------------------------------------

US = 1_000


def kernel(device: int, start: int, end: int, short: str = "nccl:AllReduce", pid: int | None = None) -> dict[str, Any]:
    """A kernel row; short names "nccl:X" become ``ncclDevKernel_X_Sum_f32_RING_LL``."""
    if short.startswith("nccl:"):
        short = f"ncclDevKernel_{short[5:]}_Sum_f32_RING_LL"
    category = kernel_classifier()(short)
    return {
        "device_id": device,
        "pid": 100 + device if pid is None else pid,
        "start_ns": start,
        "end_ns": end,
        "duration_ns": end - start,
        "name": short,
        "short_name": short,
        "category": category,
    }


def make_stage(folder: Path, kernels: list[dict[str, Any]], copies: list[dict[str, Any]] = ()) -> Path:  # type: ignore[assignment]
    """An extract folder holding only these kernels (and copies): every other table empty, with its schema."""
    folder.mkdir(parents=True)
    for name, schema in tables.EVENT_TABLES.items():
        rows = {"kernels": kernels, "memcpy": list(copies)}.get(name, [])
        columns = {field.name: [row.get(field.name) for row in rows] for field in schema}
        write_table(folder / f"{name}.parquet", pa.table(columns, schema=schema))
    return folder


def summary_of(kernels: list[dict[str, Any]], tmp_path: Path) -> Any:
    return summarise_collectives(
        match_collectives(read_collectives(make_stage(tmp_path / "s", kernels) / "kernels.parquet"))
    )


def test_transfer_is_the_fastest_rank_and_the_last_to_start_is_waited_for(tmp_path: Path) -> None:
    kernels = [  # two instances: GPU 1 starts late in the first, GPU 0 in the second
        kernel(0, 0, 300 * US),
        kernel(1, 200 * US, 300 * US),
        kernel(0, 1000 * US, 1100 * US),
        kernel(1, 950 * US, 1100 * US),
    ]
    summary = summary_of(kernels, tmp_path)
    kind = summary["kinds"][0]
    assert kind["kind"] == "nccl:AllReduce" and kind["matched_instances"] == 2
    assert kind["instance_transfer_ns"] == 100 * US + 100 * US and kind["transfer_ns"] == 400 * US
    assert kind["wait_ns"] == 200 * US + 50 * US
    waits = {(w["waiting"]["device_id"], w["straggler"]["device_id"]): w["wait_ns"] for w in kind["waits"]}
    assert waits == {(0, 1): 200 * US, (1, 0): 50 * US}
    assert kind["straggler"] == {"device_id": 1, "pid": 101}
    assert kind["median_skew_ns"] == (200 * US + 50 * US) / 2 and kind["median_end_spread_ns"] == 0
    verdict = collective_verdict(summary)
    assert verdict["verdict"] == "transfer"  # 400 of 650 us is transfer
    assert verdict["waiting"] is None and verdict["straggler"] is None


def test_waiting_that_dominates_names_who_waits_for_whom(tmp_path: Path) -> None:
    kernels = [kernel(0, i * 10_000 * US, i * 10_000 * US + 900 * US) for i in range(5)]
    kernels += [kernel(1, i * 10_000 * US + 800 * US, i * 10_000 * US + 900 * US) for i in range(5)]
    verdict = collective_verdict(summary_of(kernels, tmp_path))
    assert verdict["verdict"] == "skew" and verdict["kind"] == "nccl:AllReduce"
    assert verdict["waiting"] == {"device_id": 0, "pid": 100} and verdict["straggler"] == {"device_id": 1, "pid": 101}
    assert (verdict["pair_wait_ns"], verdict["pair_instances"]) == (5 * 800 * US, 5)
    assert verdict["waiting_collective_ns"] == 5 * 900 * US
    assert verdict["transfer_share"] == pytest.approx(2 * 100 / (2 * 100 + 800))


def test_unequal_counts_align_by_end_and_report_the_rest(tmp_path: Path) -> None:
    """GPU 1 holds one extra instance at the start (the capture began inside it on GPU 0) and GPU 0 one at the end."""
    starts = [i * 1000 * US for i in range(4)]
    kernels = [kernel(0, s + 50 * US, s + 100 * US) for s in starts[1:]] + [kernel(0, 5000 * US, 5100 * US)]
    kernels += [kernel(1, s, s + 100 * US) for s in starts]
    kind = summary_of(kernels, tmp_path)["kinds"][0]
    assert kind["matched_instances"] == 3
    parts = {p["rank"]["device_id"]: p for p in kind["ranks"]}
    assert (parts[0]["instances"], parts[0]["unmatched_leading"], parts[0]["unmatched_trailing"]) == (4, 0, 1)
    assert (parts[1]["instances"], parts[1]["unmatched_leading"], parts[1]["unmatched_trailing"]) == (4, 1, 0)
    assert kind["median_end_spread_ns"] == 0  # the k-th of each rank alone would pair ends 1 ms apart
    assert kind["unmatched_ns"] == 100 * US + 100 * US
    assert kind["time_ns"] == kind["transfer_ns"] + kind["wait_ns"] + kind["unmatched_ns"] + kind["setup_ns"]
    table = collectives_table(match_collectives(read_collectives(tmp_path / "s" / "kernels.parquet"))).to_pylist()
    unmatched = [r for r in table if r["instance"] is None]
    assert [(r["device_id"], r["ordinal"]) for r in unmatched] == [(0, 3), (1, 0)]  # sorted last, rank order
    assert all(r["transfer_ns"] is None and r["wait_ns"] is None for r in unmatched)


def test_one_rank_matches_nothing(tmp_path: Path) -> None:
    summary = summary_of([kernel(0, i * 1000 * US, i * 1000 * US + 100 * US) for i in range(3)], tmp_path)
    kind = summary["kinds"][0]
    assert kind["matched_instances"] == 0 and kind["unmatched_ns"] == kind["time_ns"] == 300 * US
    assert kind["straggler"] is None and kind["transfer_share"] is None
    assert collective_verdict(summary)["verdict"] == "none"


def test_kinds_are_matched_separately(tmp_path: Path) -> None:
    """AllGather and AllReduce interleave differently per rank: each kind is its own sequence."""
    kernels = [kernel(0, 0, 100 * US, "nccl:AllGather"), kernel(0, 200 * US, 300 * US)]
    kernels += [kernel(1, 0, 100 * US), kernel(1, 200 * US, 300 * US, "nccl:AllGather")]
    kinds = {k["kind"]: k for k in summary_of(kernels, tmp_path)["kinds"]}
    assert set(kinds) == {"nccl:AllGather", "nccl:AllReduce"}
    assert all(k["matched_instances"] == 1 and k["median_end_spread_ns"] == 200 * US for k in kinds.values())


def test_collective_kinds_by_name_and_category() -> None:
    assert collective_kind("ncclKernel_AllGather_RING_LL_Sum_int8_t", None, "communication") == "nccl:AllGather"
    assert collective_kind("ncclDevKernel_SendRecv", None, "other") == "nccl:SendRecv"
    assert collective_kind("cross_device_reduce_2stage", None, "other") == "vllm:cross_device_reduce"
    assert collective_kind("cross_device_reduce_1stage", None, None) == "vllm:cross_device_reduce"
    assert collective_kind("custom_ar_kernel", None, "communication") == "custom_ar_kernel"
    assert collective_kind("reduce_kernel", None, "elementwise/fused") is None


def test_setup_outlier_is_named_and_kept_out_of_steady_state(tmp_path: Path) -> None:
    """One 2.06 s AllGather among 100 us ones: a startup barrier, not traffic; 5 ms (50x) and 9 ms are not setup."""
    kernels = []

    def both(start_us: int, end_us: int, late_start_us: int | None = None) -> list[dict[str, Any]]:
        """One AllGather instance on both GPUs (GPU 1 starting at ``late_start_us`` if given)."""
        late = start_us if late_start_us is None else late_start_us
        return [
            kernel(0, start_us * US, end_us * US, "nccl:AllGather"),
            kernel(1, late * US, end_us * US, "nccl:AllGather"),
        ]

    kernels = both(0, 2_060_000, late_start_us=2_000_000) + both(3_000_000, 3_005_000)
    for i in range(20):
        kernels += both(10_000_000 + i * 20_000, 10_000_000 + i * 20_000 + 100)
    kernels += [kernel(0, (2_100_000 + i * 10) * US, (2_100_090 + i * 10) * US, "gemm_tiny") for i in range(5)]
    kernels += [kernel(0, 4_000_000 * US, 4_009_000 * US, "gemm_tiny")]  # 100x the median, under 10 ms
    summary = summary_of(kernels, tmp_path)
    kind = summary["kinds"][0]
    assert kind["matched_instances"] == 21 and kind["setup_instances"] == 1
    assert kind["setup_ns"] == 2_060_000 * US + 60_000 * US
    assert kind["wait_ns"] == 0 and kind["transfer_share"] == 1.0  # the barrier's 2 s of waiting kept out
    [setup] = summary["setup"]
    assert (setup["instance"], setup["duration_ns"], setup["kind_median_ns"]) == (0, 2_060_000 * US, 100 * US)
    assert setup["duration_ns"] >= SETUP_RATIO * setup["kind_median_ns"] and setup["duration_ns"] >= SETUP_MIN_NS
    view = multi_gpu_metrics(tmp_path / "s")
    # per kernel name, both ranks' parts of the barrier are setup (60 ms is 600x the median, and over 10 ms)
    barriers = [2_060_000 * US, 60_000 * US]
    assert [(k["device_id"], k["duration_ns"]) for k in view["setup_kernels"]] == list(enumerate(barriers))
    for device, barrier in zip(view["devices"], barriers):
        assert device["setup_kernel_time_ns"] == barrier
        steady = {c["category"]: c["time_ns"] for c in device["categories"]}
        assert steady["communication"] == 20 * 100 * US + 5_000 * US  # the barrier left out, the 5 ms one kept
        assert device["collective_ns"] == steady["communication"]  # the sweep leaves the setup instance out too
    top = {k["label"]: (k["time_ns"], k["count"]) for k in view["devices"][0]["top_kernels"]}
    assert top["ncclDevKernel_AllGather_Sum_f32_RING_LL"] == (20 * 100 * US + 5_000 * US, 21)
    assert top["gemm_tiny"] == (5 * 90 * US + 9_000 * US, 6)


def test_touching_and_nested_intervals(tmp_path: Path) -> None:
    """Overlap counts compute kernels on the same device only; touching intervals share no time."""
    kernels = [
        kernel(0, 0, 100, "nccl:AllReduce"),
        kernel(0, 100, 200, "gemm_touching"),  # touches: no overlap
        kernel(0, 300, 400, "nccl:AllReduce"),
        kernel(0, 350, 360, "gemm_nested"),  # nested: 10
        kernel(0, 355, 370, "gemm_nested"),  # overlaps the previous one: union 350..370 = 20
        kernel(0, 390, 500, "gemm_across"),  # 390..400: 10
        kernel(1, 0, 400, "gemm_other_device"),
        kernel(1, 0, 100, "nccl:AllReduce"),
        kernel(1, 300, 400, "nccl:AllReduce"),
    ]
    copies = [{"device_id": 0, "pid": 100, "start_ns": 0, "end_ns": 50, "duration_ns": 50, "size_bytes": 1}]
    view = multi_gpu_metrics(make_stage(tmp_path / "s", kernels, copies))
    zero, one = view["devices"]
    assert (zero["collective_ns"], zero["overlapped_ns"], zero["overlap_fraction"]) == (200, 30, 30 / 200)
    assert zero["busy_ns"] == 200 + 200 and zero["collective_kernel_time_ns"] == 200
    assert (one["collective_ns"], one["overlapped_ns"], one["overlap_fraction"]) == (200, 200, 1.0)


def test_processes_sharing_a_gpu(tmp_path: Path) -> None:
    kernels = [
        kernel(0, 0, 100, "gemm_a", pid=7),
        kernel(0, 50, 150, "gemm_b", pid=8),
        kernel(0, 400, 500, "attention_b", pid=8),
    ]
    device = multi_gpu_metrics(make_stage(tmp_path / "s", kernels))["devices"][0]
    assert device["busy_ns"] == 250 and device["kernels"] == 3
    processes = {p["pid"]: p for p in device["processes"]}
    assert (processes[7]["busy_ns"], processes[7]["kernels"]) == (100, 1)
    assert (processes[8]["busy_ns"], processes[8]["kernels"]) == (200, 2)
    shares = {c["category"]: c["share"] for c in processes[8]["categories"]}
    assert shares["gemm"] == 0.5 and shares["attention"] == 0.5
    assert [k["label"] for k in processes[8]["top_kernels"]] == ["attention_b", "gemm_b"]  # ties: name order


def test_empty_extract(tmp_path: Path) -> None:
    view = multi_gpu_metrics(make_stage(tmp_path / "s", []))
    assert view["devices"] == [] and view["verdict"]["verdict"] == "none" and view["setup_kernels"] == []
    assert collective_module.collectives(tmp_path / "s")["kinds"] == []
