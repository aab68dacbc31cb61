"""The task state machine: the table of legal moves, terminal states, and move()."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime

import pytest

from runner import Task, TransitionError
from runner._clock import _MILLIS_KEPT, iso_ms
from runner._context import new_context
from runner._registry import Chain
from runner._results import entry_of, history_of, task_result
from runner._states import FINAL, STATUSES, TERMINAL, TRANSITIONS, is_legal, move
from runner._task import Status
from workers._base import CompletionResponse
from workers._types import Usage

LEGAL = {
    ("pending", "running"),
    ("pending", "cancelled"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "retrying"),
    ("running", "cancelled"),
    ("retrying", "running"),
    ("retrying", "failed"),
    ("retrying", "cancelled"),
}


def ctx_in(status: Status):  # type: ignore[no-untyped-def]
    ctx = new_context(Task(prompt="p"), "t-1", Chain(role="coder", routes=()), now=0.0, wall=0.0)
    ctx.status = status
    return ctx


@pytest.mark.parametrize(("current", "new"), list(itertools.product(STATUSES, STATUSES)))
def test_every_pair_of_states(current: Status, new: Status) -> None:
    """Each of the nine legal moves succeeds; every other pair of states raises."""
    ctx = ctx_in(current)
    if (current, new) in LEGAL:
        entry = move(ctx, new, provider="a", at=1_700_000_000.25, attempt=2)
        assert ctx.status == new
        assert ctx.history[-1] is entry
        assert (entry.status, entry.provider, entry.attempt) == (new, "a", 2)
    else:
        with pytest.raises(TransitionError, match=f"illegal status move {current} -> {new}"):
            move(ctx, new, provider="a", at=0.0)
        assert ctx.status == current
        assert len(ctx.history) == 1


def test_table_matches_design() -> None:
    """The table holds exactly the nine moves of docs/lifecycle.md and is_legal agrees with it."""
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == LEGAL
    assert all(is_legal(a, b) == ((a, b) in LEGAL) for a in STATUSES for b in STATUSES)


def test_terminal_states_have_no_way_out() -> None:
    """completed, failed and cancelled are terminal: nothing leaves them."""
    assert frozenset({"completed", "failed", "cancelled"}) == TERMINAL
    assert all(not TRANSITIONS[s] for s in TERMINAL)
    assert all(TRANSITIONS[s] for s in STATUSES if s not in TERMINAL)


def test_result_statuses_are_the_terminal_ones_and_rejected() -> None:
    """A Result ends completed, failed or cancelled, or is rejected without running."""
    assert TERMINAL | {"rejected"} == FINAL


def test_history_is_iso_utc_with_milliseconds() -> None:
    """History timestamps are ISO 8601 UTC with milliseconds and a Z."""
    assert iso_ms(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1_795_726_800.123456) == "2026-11-26T21:00:00.123Z"
    ctx = ctx_in("pending")
    move(ctx, "running", provider="a", at=1_795_726_800.5)
    assert entry_of(ctx.history[-1]).at == "2026-11-26T21:00:00.500Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry_of(ctx.history[0]).at)


def test_moves_keep_the_float_time_until_formatted() -> None:
    """In flight a move holds its wall time; the history entry users read is made from it."""
    ctx = ctx_in("pending")
    recorded = move(ctx, "running", provider="a", at=1_795_726_800.25, attempt=1)
    assert recorded.wall == 1_795_726_800.25
    [_, running] = history_of(ctx.history)
    assert (running.status, running.at, running.provider, running.attempt) == (
        "running",
        "2026-11-26T21:00:00.250Z",
        "a",
        1,
    )


def test_timestamps_stay_right_across_second_boundaries() -> None:
    """Consecutive moves in different seconds (and back again) each get their own second."""
    base = 1_795_726_800
    stamps = [iso_ms(base + 0.999), iso_ms(base + 1.0), iso_ms(base + 1.25), iso_ms(base + 0.5)]
    assert stamps == [
        "2026-11-26T21:00:00.999Z",
        "2026-11-26T21:00:01.000Z",
        "2026-11-26T21:00:01.250Z",
        "2026-11-26T21:00:00.500Z",
    ]


def test_timestamps_stay_right_past_the_memo_of_recent_milliseconds() -> None:
    """More distinct milliseconds than the memo keeps: each still formats like datetime does."""
    base = 1_795_726_800
    walls = [base + i / 1000 + 0.0004 for i in range(_MILLIS_KEPT + 10)]
    walls += walls[:5]  # formatted again after the memo was dropped
    for wall in walls:
        expected = datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="milliseconds")
        assert iso_ms(wall) == expected.replace("+00:00", "Z")


def test_error_message_lists_legal_moves() -> None:
    """A refused move says which moves the current status allows."""
    ctx = ctx_in("completed")
    with pytest.raises(
        TransitionError, match=r"completed -> running \(legal from completed: none\)"
    ):
        move(ctx, "running", provider=None, at=0.0)


def test_result_figures_are_rounded_and_a_non_finite_cost_is_kept() -> None:
    """Latency and queued time to the µs, cost to 1e-10 USD; an infinite cost stays as it is."""
    usage = Usage(input_tokens=1, output_tokens=2, total_tokens=3)
    results = []
    for cost in (0.000012345678912345, float("inf")):
        ctx = ctx_in("pending")
        ctx.enqueued_at = 10.0
        move(ctx, "running", provider="a", at=1.0, attempt=1)
        ctx.started_at = 10.0001234567
        move(ctx, "completed", provider="a", at=2.0, attempt=1)
        ctx.response = CompletionResponse(text="x", finish_reason="stop", usage=usage, model="m")
        ctx.latency_ms = 12.3456789
        ctx.cost_usd = cost
        results.append(task_result(ctx))
    rounded, infinite = results
    assert (rounded.latency_ms, rounded.queued_ms, rounded.cost_usd) == (12.346, 0.123, 1.23457e-05)
    assert infinite.cost_usd == float("inf")
