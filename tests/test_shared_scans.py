"""Scans shared by several summaries: computed once per key, and never handed out under another key."""

from __future__ import annotations

import threading
import time

import pandas as pd
from conftest import DEMO

from llmprof.analysis.stats import REPORTS, KeyedOnce, SharedScans
from llmprof.nsys.export import open_export


def test_each_key_is_computed_once_even_when_threads_ask_at_once() -> None:
    once: KeyedOnce[str] = KeyedOnce()
    calls: list[str] = []

    def compute(key: str) -> str:
        time.sleep(0.01)
        calls.append(key)
        return key.upper()

    threads = [threading.Thread(target=once.get, args=(k, lambda k=k: compute(k))) for k in ("a", "b") * 8]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(calls) == ["a", "b"]
    assert once.get("a", lambda: "not again") == "A" and once.get("b", lambda: "not again") == "B"


def test_durations_of_one_table_are_never_reused_for_another() -> None:
    with open_export(DEMO) as export:
        scans = SharedScans(export)
        kernels, calls, osrt = (scans.durations(name) for name in ("kernels", "cuda_api", "osrt"))
        assert int(kernels["value_n"].sum()) == 40_755
        assert int(calls["value_n"].sum()) != int(kernels["value_n"].sum())
        assert not osrt.equals(calls)
        assert scans.durations("kernels") is kernels  # the same key: computed once


def test_results_handed_in_are_the_ones_reports_use() -> None:
    with open_export(DEMO) as export:
        computed = SharedScans(export).durations("kernels")
        halved = computed.assign(value_total=computed["value_total"] // 2)
        scans = SharedScans(export, durations={"kernels": halved})
        summary = REPORTS["cuda_gpu_kern_sum"].run(scans)
        plain = REPORTS["cuda_gpu_kern_sum"].run(export)
        assert int(summary["total_ns"].sum()) == int(halved["value_total"].sum())
        assert int(plain["total_ns"].sum()) == int(computed["value_total"].sum())
        pd.testing.assert_frame_equal(REPORTS["cuda_api_sum"].run(scans), REPORTS["cuda_api_sum"].run(export))
