"""Ranking values across sorted runs (the summary's percentiles) without sorting them together."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.metrics._runs import nearest_ranks

runs_strategy = st.lists(
    st.lists(st.integers(min_value=-5, max_value=10**9), max_size=40).map(sorted),
    min_size=1,
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(runs=runs_strategy, data=st.data())
def test_every_rank_equals_the_value_in_the_sorted_whole(
    runs: list[list[int]], data: st.DataObject
) -> None:
    """Runs of any sizes and ranges (ties, empties, disjoint) rank as one sorted list would."""
    whole = sorted(v for run in runs for v in run)
    if not whole:
        return
    ranks = data.draw(st.lists(st.integers(1, len(whole)), min_size=1, max_size=5))
    got = nearest_ranks([array("q", run) for run in runs], ranks)
    assert got == [whole[k - 1] for k in ranks]


def test_runs_far_apart_still_rank_exactly() -> None:
    """A run of small values and one of large values: the median falls between the runs."""
    low = array("q", range(100))
    high = array("q", range(10_000, 10_101))
    assert nearest_ranks([low, high], [1, 100, 101, 201]) == [0, 99, 10_000, 10_100]


def test_a_rank_outside_the_values_is_refused() -> None:
    """Rank 0 or a rank beyond the count is a bug in the caller, said as such."""
    with pytest.raises(ValueError, match=r"rank 3 is outside 1\.\.2"):
        nearest_ranks([array("q", [1, 2])], [3])
