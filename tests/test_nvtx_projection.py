"""Range nesting on tiny interval sets: touching, nested, crossing and identical ranges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmprof.analysis.projection import _nesting, _parents_by_search, _parents_by_stack


def _ranges(spans: list[tuple[int, int]], tid: int = 1) -> pd.DataFrame:
    return pd.DataFrame({"start_ns": [s for s, _ in spans], "end_ns": [e for _, e in spans], "global_tid": tid})


@pytest.mark.parametrize(
    ("spans", "parents", "levels"),
    [
        ([(0, 10), (1, 5), (5, 9)], [-1, 0, 0], [0, 1, 1]),  # touching siblings inside a parent
        ([(0, 10), (1, 9), (2, 8)], [-1, 0, 1], [0, 1, 2]),  # a chain
        ([(0, 4), (4, 8)], [-1, -1], [0, 0]),  # touching, not nested
        ([(0, 10), (2, 6), (4, 8)], [-1, 0, 0], [0, 1, 1]),  # crossing start/end ranges: tightest encloser
        ([(0, 10), (1, 5), (2, 8), (3, 4)], [-1, 0, 0, 1], [0, 1, 1, 2]),  # (3,4) is tighter in (1,5) than in (2,8)
    ],
)
def test_parent_is_the_tightest_enclosing_range(
    spans: list[tuple[int, int]], parents: list[int], levels: list[int]
) -> None:
    parent, level, _ = _nesting(_ranges(spans))
    assert parent.tolist() == parents
    assert level.tolist() == levels


def test_stack_declines_crossing_ranges_and_search_agrees_on_nested_ones() -> None:
    start, end = np.array([0, 2, 4]), np.array([10, 6, 8])
    assert _parents_by_stack(start, end, np.lexsort((np.arange(3), -end, start))) is None
    start, end = np.array([0, 1, 2, 5]), np.array([10, 9, 4, 8])
    by_stack = _parents_by_stack(start, end, np.lexsort((np.arange(4), -end, start)))
    assert by_stack is not None and by_stack.tolist() == _parents_by_search(start, end).tolist() == [-1, 0, 1, 1]


def test_ranges_nest_only_within_their_thread() -> None:
    ranges = pd.concat([_ranges([(0, 10)], tid=1), _ranges([(1, 2)], tid=2)], ignore_index=True)
    parent, level, _ = _nesting(ranges)
    assert parent.tolist() == [-1, -1] and level.tolist() == [0, 0]
