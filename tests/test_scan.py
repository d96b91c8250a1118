"""The streaming pieces behind the summaries, against plain reference computations.

The oracle tests compare whole reports with nsys; these reach the paths real exports rarely
take: values that do not pack (negative, huge), values spilled to disk, calls that share a
correlation id, NVTX ranges that cross, several GPUs, and batches cut anywhere.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from llmprof.analysis import busy as busy_module
from llmprof.analysis import grouped as grouped_module
from llmprof.analysis import launches
from llmprof.analysis.grouped import GroupedValues
from llmprof.analysis.launches import CallIndex, LaunchScan
from llmprof.analysis.projection import PROJECTED_COLUMNS, RangeProjection
from llmprof.analysis.stats import run_reports
from llmprof.common.errors import SchemaError
from llmprof.common.records import CaptureWindow
from llmprof.nsys.export import open_export


def _batches(frame: pd.DataFrame, cuts: list[int]) -> list[pa.Table]:
    bounds = [0, *sorted(cuts), len(frame)]
    return [pa.Table.from_pandas(frame.iloc[a:b], preserve_index=False) for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize(("spill", "budget"), [(False, None), (True, None), (True, 300)])
@pytest.mark.parametrize("low", [0, -5_000, 1 << 41])
def test_grouped_values_equal_a_plain_group_by(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spill: bool, budget: int | None, low: int
) -> None:
    """``budget``: spilled values sorted a key range at a time (several ranges here)."""
    if budget is not None:
        monkeypatch.setattr(grouped_module, "SORT_BUDGET", budget)
    rng = np.random.default_rng(7)
    rows = 5_000
    frame = pd.DataFrame(
        {
            "name": rng.integers(0, 40, rows),
            "style": rng.choice(["PushPop", "StartEnd"], rows),
            "value": rng.integers(low, low + 10_000, rows),
        }
    )
    grouped = GroupedValues(("name", "style"), ("value",), tmp_path / "spill" if spill else None)
    for batch in _batches(frame, list(rng.integers(0, rows, 6))):
        grouped.add_batch(batch)
    result = grouped.frame()
    expected = frame.groupby(["name", "style"])["value"].agg(["count", "sum", "mean", "median", "min", "max", "std"])
    expected = expected.reset_index()
    assert result[["name", "style"]].values.tolist() == expected[["name", "style"]].values.tolist()
    assert result["value_n"].tolist() == expected["count"].tolist()
    assert result["value_total"].tolist() == expected["sum"].tolist()
    assert result["value_lo"].tolist() == expected["min"].tolist()
    assert result["value_hi"].tolist() == expected["max"].tolist()
    np.testing.assert_allclose(result["value_mean"], expected["mean"], rtol=1e-12)
    np.testing.assert_allclose(result["value_median"], expected["median"], rtol=1e-12)
    # two-pass in float64: values near 2**41 keep about 7 significant digits of their deviation
    np.testing.assert_allclose(result["value_stddev"], expected["std"].fillna(0.0), rtol=1e-6)
    if spill:
        assert not list((tmp_path / "spill").iterdir()), "spilled values are removed once sorted"


def test_null_values_and_keys_are_kept_apart() -> None:
    grouped = GroupedValues(("kind",), ("value",))
    grouped.add_batch(pa.table({"kind": pa.array([None, 1, 1, None], pa.int64()), "value": [5, None, 7, 9]}))
    result = grouped.frame()
    assert result["kind"].tolist() == [None, 1]  # NULL first, as SQLite orders it
    assert result["value_n"].tolist() == [2, 1]
    assert result["value_median"].tolist() == [7.0, 7.0]


CAPTURE = Path(__file__).parent / "data" / "vllm_inproc_h100_3iter"


def _calls(frame: pd.DataFrame, spill: Path) -> CallIndex:
    """The calls of ``frame`` indexed as a scan indexes them (API names looked up in a real export)."""
    with open_export(CAPTURE / "vllm.sqlite") as export:
        scan = LaunchScan(export, None, spill)
        scan.add_calls(pa.Table.from_pandas(frame, preserve_index=False))
    scan.add_operations(
        pa.table(
            {
                "global_pid": pa.array([], pa.int64()),
                "correlation_id": pa.array([], pa.int64()),
                "start_ns": pa.array([], pa.int64()),
                "end_ns": pa.array([], pa.int64()),
            }
        ),
        False,
    )
    assert scan.index is not None
    return scan.index


def test_operations_match_every_call_that_shares_their_key_as_a_join_does(tmp_path: Path) -> None:
    pid = 7 << 24
    calls = pd.DataFrame(
        {
            "global_tid": [pid + 1, pid + 1, pid + 2, (9 << 24) + 1],
            "start_ns": [0, 10, 20, 30],
            "end_ns": [5, 15, 25, 35],
            "correlation_id": [1, 2, 2, 1],  # correlation 2 twice in process 7
            "name": [1, 1, 1, 1],
        }
    )
    ops = pd.DataFrame({"global_pid": [pid, pid, 9 << 24, pid, 5 << 24], "correlation_id": [2, 1, 1, 3, 1]})
    index = _calls(calls, tmp_path)
    rows, positions = index.match(pa.Table.from_pandas(ops, preserve_index=False))
    got = sorted((int(r), int(index.start[p])) for r, p in zip(rows, positions))
    merged = ops.reset_index().merge(
        calls.assign(global_pid=calls["global_tid"] & ~0xFFFFFF), on=["global_pid", "correlation_id"]
    )
    assert got == sorted(zip(merged["index"], merged["start_ns"]))
    assert not index.unique


def _reference_projection(ranges: pd.DataFrame, calls: pd.DataFrame, ops: pd.DataFrame) -> pd.DataFrame:
    """The definition, range by range: calls inside the range on its thread, and their operations."""
    rows = []
    for r in ranges.itertuples():
        inside = calls[
            (calls.global_tid == r.global_tid)
            & (calls.start_ns >= r.start_ns)
            & (calls.start_ns <= r.end_ns)
            & (calls.end_ns <= r.end_ns)
        ]
        mine = ops[ops.call.isin(inside.index)]
        if len(mine):
            rows.append(
                (
                    r.Index,
                    mine.start.min(),
                    mine.end.max(),
                    mine.call.nunique(),
                    len(mine),
                    (mine.end - mine.start).sum(),
                )
            )
    return pd.DataFrame(rows, columns=["range", "proj_start_ns", "proj_end_ns", "cuda_calls", "gpu_ops", "gpu_time_ns"])


@pytest.mark.parametrize("seed", range(6))
def test_projection_equals_the_range_by_range_definition(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    threads = [(3 << 24) + 1, (3 << 24) + 2]
    spans = []
    for thread in threads:  # nested push/pop ranges on one thread; the other also gets crossing ranges
        for _ in range(12):
            start = int(rng.integers(0, 900))
            spans.append((thread, start, start + int(rng.integers(1, 300))))
    nested = [(threads[0], 0, 1000), (threads[0], 100, 500), (threads[0], 120, 200), (threads[0], 100, 500)]
    ranges = pd.DataFrame(
        [(f"r{i}", "PushPop", s, e, t) for i, (t, s, e) in enumerate(nested + spans[12:])],
        columns=["name", "style", "start_ns", "end_ns", "global_tid"],
    )
    call_count = 400
    call_start = rng.integers(0, 1000, call_count)
    calls = pd.DataFrame(
        {
            "global_tid": rng.choice(threads, call_count),
            "start_ns": call_start,
            "end_ns": call_start + rng.integers(0, 40, call_count),
            "correlation_id": np.arange(call_count),
            "name": 1,
        }
    )
    op_count = 900
    op_call = rng.integers(0, call_count + 50, op_count)  # some operations match no call
    op_start = rng.integers(0, 5000, op_count)
    ops = pd.DataFrame(
        {
            "global_pid": 3 << 24,
            "correlation_id": op_call,
            "start_ns": op_start,
            "end_ns": op_start + rng.integers(0, 100, op_count),
        }
    )
    index = _calls(calls, tmp_path)
    projection = RangeProjection(ranges)
    for batch in _batches(ops, [300, 301, 700]):
        rows, positions = index.match(batch)
        starts = batch.column("start_ns").to_numpy()[rows]
        ends = batch.column("end_ns").to_numpy()[rows]
        projection.add(index.launched(positions, starts, ends))
    got = projection.frame()
    assert list(got.columns) == PROJECTED_COLUMNS
    matched = ops[ops.correlation_id < call_count].rename(columns={"start_ns": "start", "end_ns": "end"})
    expected = _reference_projection(ranges, calls, matched.assign(call=matched.correlation_id))
    assert len(got) == len(expected)
    for column in ("proj_start_ns", "proj_end_ns", "cuda_calls", "gpu_ops", "gpu_time_ns"):
        assert got[column].tolist() == expected[column].tolist(), column


def _reference_union(starts: np.ndarray, ends: np.ndarray) -> tuple[int, list[tuple[int, int]]]:
    order = np.argsort(starts, kind="stable")
    busy, covered, gaps = 0, None, []
    for s, e in zip(starts[order], ends[order]):
        if covered is not None and s > covered:
            gaps.append((int(s - covered), int(covered)))
        busy += max(0, int(e) - max(int(s), covered if covered is not None else int(s)))
        covered = max(covered, int(e)) if covered is not None else int(e)
    return busy, sorted(sorted(gaps, key=lambda g: -g[0])[:5], key=lambda g: (-g[0], g[1]))


@pytest.mark.parametrize("budget", [40, 1 << 23])
@pytest.mark.parametrize("seed", range(3))
def test_busy_time_and_gaps_equal_a_running_union(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, budget: int
) -> None:
    """Two GPUs, operations spread over the three tables; a small budget sorts many time windows."""
    monkeypatch.setattr(busy_module, "SWEEP_BUDGET", budget)
    rng = np.random.default_rng(seed)
    frames = []
    for table in busy_module.GPU_TABLES:
        count = 1_000
        start = rng.integers(0, 100_000, count)
        frame = pd.DataFrame(
            {"device_id": rng.integers(0, 2, count), "start_ns": start, "end_ns": start + rng.integers(0, 60, count)}
        )
        frame.to_parquet(tmp_path / f"{table}.parquet", index=False)
        frames.append(frame)
    every = pd.concat(frames)
    low, high = int(every.start_ns.min()), int(every.end_ns.max())
    window: CaptureWindow = {"basis": "cuda", "start_ns": low, "end_ns": high, "duration_ns": high - low}
    result = busy_module.gpu_time(tmp_path, window, busy_module.Iterations.none()).activity
    assert [d["device_id"] for d in result["devices"]] == [0, 1]
    for device in result["devices"]:
        mine = every[every.device_id == device["device_id"]]
        busy, gaps = _reference_union(mine.start_ns.to_numpy(), mine.end_ns.to_numpy())
        assert device["operations"] == len(mine)
        assert device["busy_ns"] == busy
        assert [(g["duration_ns"], g["start_ns"]) for g in device["largest_gaps"]] == gaps


@pytest.mark.parametrize("budget", [1_000, 5_000_000])
def test_partitioned_join_prints_what_nsys_printed(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """More calls than the budget: operations wait on disk by partition and are joined one partition at a time."""
    monkeypatch.setattr(launches, "CALL_BUDGET", budget)  # 13,444 calls: 14 partitions, or one
    for output in run_reports(CAPTURE / "vllm.sqlite", "cuda_kern_exec_sum,nvtx_gpu_proj_sum", "csv"):
        expected = CAPTURE / "nsys-stats" / f"vllm_{output.report.name}.csv"
        assert output.text == expected.read_text(), output.report.name


def test_parallel_readers_return_every_row_once_and_pass_on_errors() -> None:
    capture = CAPTURE / "vllm.sqlite"
    select = 'rowid AS id, "end" - start AS value'
    with open_export(capture) as export:
        alone = pa.Table.from_batches(list(export.arrow_batches(f"SELECT {select} FROM CUPTI_ACTIVITY_KIND_KERNEL")))
        batches = list(export.parallel_batches("CUPTI_ACTIVITY_KIND_KERNEL", select, readers=3, min_rows=0))
        together = pa.Table.from_batches(batches).sort_by("id")
        assert together.equals(alone.sort_by("id"))
        with pytest.raises(SchemaError, match="no_such_column"):
            list(export.parallel_batches("CUPTI_ACTIVITY_KIND_KERNEL", "no_such_column", readers=3, min_rows=0))
    assert not [
        t
        for t in threading.enumerate()
        if t.daemon and t is not threading.current_thread() and t.is_alive() and t.name.startswith("Thread")
    ], "readers are done"
