"""Runs: each write batch's per-series totals and sorted latencies, and their compaction.

A *run* is one row of the SQLite ``runs`` table: for one (provider, role)
*series* and one id range ``[first_id, last_id]``, the totals, the failures
by code and every latency, sorted and packed.  Every event of the series
with an id in the range is in the run; the summary relies on that to add
whole runs and to re-read only the runs a time edge cuts through.

The ``rollup`` counters (per provider, role and outcome) are built in the
same pass over a batch (:func:`build_runs`).  This module is the pure part
(building, packing, deciding what to merge, merging);
:mod:`runner.metrics._sqlite` reads and writes the rows.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import compress
from operator import itemgetter
from typing import Final

import msgspec

from runner.metrics._events import Row

#: A ``runs`` row without its id, in ``INSERT_RUN`` column order.
RunRow = tuple[str, str, int, int, int, int, int, int, int, int, int, int, str, bytes]
#: A ``rollup`` row, or what a batch adds to one: (provider, role, outcome, requests,
#: latency sum, latency max, input tokens, output tokens, nano-USD); outcome '' is success.
RollupRow = tuple[str, str, str, int, int, int, int, int, int]
#: A run's columns from ``first_id`` on, in ``MERGE_SOURCE`` order.
RunBody = tuple[int, int, int, int, int, int, int, int, int, int, str, bytes]

_encoder: Final = msgspec.json.Encoder()
_errors_decoder: Final = msgspec.json.Decoder(dict[str, int])


class Compaction(msgspec.Struct, frozen=True, kw_only=True):
    """When a write merges a series' newest runs into one.

    A run with fewer than ``small`` events is small.  When a series' newest
    ``count`` runs are all small, they are merged into one run.  A series
    therefore ends in at most ``count - 1`` small runs.  While its batches
    are small, every earlier run holds at least ``small`` events (a merge
    still below ``small`` is merged again the next time); a big batch only
    leaves the fewer than ``count`` small runs before it as they are.  So
    the runs a summary unpacks stay few however small the write batches are.
    A merged run holds fewer than ``count * small`` events, which bounds what
    a time edge through it reads.  Each merge costs about ``small``
    latencies once every ``count - 1`` writes of the series: a few per write.
    """

    small: int = 1024
    count: int = 8


#: What writers use unless told otherwise.
DEFAULT_COMPACTION: Final = Compaction()


def pack_latencies(values: Iterable[int]) -> bytes:
    """Sorted latencies as little-endian int64, the ``runs.latencies`` format."""
    packed = array("q", sorted(values))
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_latencies(blob: bytes, into: array[int]) -> None:
    """Append the latencies of a packed run to ``into``."""
    start = len(into)
    into.frombytes(blob)
    if sys.byteorder == "big":
        tail = into[start:]
        tail.byteswap()
        into[start:] = tail


def nearest_ranks(runs: Sequence[array[int]], ranks: Iterable[int]) -> list[int]:
    """The values at 1-based ``ranks`` of all the values of ``runs``, each run sorted.

    Exact, without sorting everything (which took most of a summary's time
    over a million events).  With ``n`` values in all, each run ``r`` of
    ``m`` values has its own candidate for rank ``k``: the value at index
    ``ceil(k * m / n) - 1``.  At least ``k`` values are at or below the
    largest candidate, and fewer than ``k`` below the smallest, so the
    value of rank ``k`` lies between the two; only the values in that window
    are sorted.  Runs drawn from one distribution put few values there; in
    the worst case the window holds everything, as a full sort would.
    """
    runs = [run for run in runs if run]
    n = sum(map(len, runs))
    out: list[int] = []
    for k in ranks:
        if not 1 <= k <= n:
            raise ValueError(f"rank {k} is outside 1..{n}")
        candidates = [run[-(-k * len(run) // n) - 1] for run in runs]
        lo, hi = min(candidates), max(candidates)
        below = 0
        window: list[int] = []
        for run in runs:
            start = bisect_left(run, lo)
            below += start
            window += run[start : bisect_right(run, hi, start)]
        window.sort()
        out.append(window[k - below - 1])
    return out


def _errors_json(errors: dict[str, int]) -> str:
    return _encoder.encode(dict(sorted(errors.items()))).decode()


_TS: Final = itemgetter(6)
_LATENCY: Final = itemgetter(7)
_OK: Final = itemgetter(8)
_INPUT: Final = itemgetter(10)
_OUTPUT: Final = itemgetter(11)
_COST: Final = itemgetter(12)


def _outcomes(provider: str, role: str, events: Sequence[Row]) -> list[RollupRow]:
    """The rollup rows of one series' failures, one per outcome (error code)."""
    by_code: dict[str, list[Row]] = {}
    for r in events:
        by_code.setdefault(r[9] or "unknown", []).append(r)
    out: list[RollupRow] = []
    for code, rows in by_code.items():
        latencies = list(map(_LATENCY, rows))
        out.append(
            (
                provider,
                role,
                code,
                len(rows),
                sum(latencies),
                max(latencies),
                sum(map(_INPUT, rows)),
                sum(map(_OUTPUT, rows)),
                sum(map(_COST, rows)),
            )
        )
    return out


def build_runs(ids: Sequence[int], rows: Sequence[Row]) -> tuple[list[RunRow], list[RollupRow]]:
    """A batch's runs (one per series) and rollup rows; ``ids[i]`` is the id of ``rows[i]``.

    The two come from one pass so that the rollup, the runs and therefore
    every summary figure are computed by this one function, whichever path
    (the writer, an import) stored the events.
    """
    series: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        positions = series.get((r[2], r[3]))
        if positions is None:
            series[(r[2], r[3])] = [i]
        else:
            positions.append(i)
    runs: list[RunRow] = []
    rollup: list[RollupRow] = []
    for (provider, role), positions in series.items():
        group = [rows[i] for i in positions]
        latencies = list(map(_LATENCY, group))
        ts = list(map(_TS, group))
        n, total, inputs = len(group), sum(latencies), sum(map(_INPUT, group))
        outputs, cost = sum(map(_OUTPUT, group)), sum(map(_COST, group))
        failed = [r for r in group if not r[8]]
        failures = _outcomes(provider, role, failed)
        runs.append(
            (
                provider,
                role,
                ids[positions[0]],
                ids[positions[-1]],
                min(ts),
                max(ts),
                n,
                total,
                max(latencies),
                inputs,
                outputs,
                cost,
                _errors_json({f[2]: f[3] for f in failures}),
                pack_latencies(latencies),
            )
        )
        if len(failed) < n:  # the successes: the series' totals less its failures'
            best = max(compress(latencies, map(_OK, group))) if failed else max(latencies)
            rollup.append(
                (
                    provider,
                    role,
                    "",
                    n - len(failed),
                    total - sum(f[4] for f in failures),
                    best,
                    inputs - sum(f[6] for f in failures),
                    outputs - sum(f[7] for f in failures),
                    cost - sum(f[8] for f in failures),
                )
            )
        rollup += failures
    return runs, rollup


def batch_runs(first_id: int, rows: Sequence[Row]) -> tuple[list[RunRow], list[RollupRow]]:
    """The runs and rollup rows of a batch inserted whole, its ids starting at ``first_id``."""
    return build_runs(range(first_id, first_id + len(rows)), rows)


class Prepared(list[Row]):
    """A batch of rows whose figures were built ahead (by the import's reader process).

    The figures assume the rows get the ids ``first_id`` on; :meth:`figures_at`
    moves them to where the rows really landed.
    """

    __slots__ = ("first_id", "rollup", "runs")

    def __init__(
        self, rows: list[Row], first_id: int, runs: list[RunRow], rollup: list[RollupRow]
    ) -> None:
        super().__init__(rows)
        self.first_id = first_id
        self.runs = runs
        self.rollup = rollup

    def figures_at(self, first_id: int) -> tuple[list[RunRow], list[RollupRow]]:
        """The runs and rollup rows for the batch stored whole from id ``first_id``."""
        shift = first_id - self.first_id
        if shift:
            runs = [(r[0], r[1], r[2] + shift, r[3] + shift, *r[4:]) for r in self.runs]
            return runs, self.rollup
        return self.runs, self.rollup


def series_of(runs: Iterable[RunRow]) -> set[tuple[str, str]]:
    """The (provider, role) pairs a batch's runs belong to."""
    return {(r[0], r[1]) for r in runs}


def to_merge(tail: Sequence[tuple[int, int]], compaction: Compaction) -> list[int]:
    """The ids of the runs to merge, given a series' newest runs (id, requests), newest first.

    Empty unless the newest ``compaction.count`` runs are all small.
    """
    if compaction.count < 2 or len(tail) < compaction.count:
        return []
    newest = tail[: compaction.count]
    if any(requests >= compaction.small for _, requests in newest):
        return []
    return sorted(run_id for run_id, _ in newest)


def merge_runs(bodies: Sequence[RunBody]) -> RunBody:
    """One run holding the events of consecutive runs of one series (given in id order).

    Consecutive runs of a series hold every event of the series between the
    first one's ``first_id`` and the last one's ``last_id``, so the merged
    run keeps the promise the time-edge reads rely on.
    """
    latencies: array[int] = array("q")
    errors: dict[str, int] = {}
    for body in bodies:
        unpack_latencies(body[11], latencies)
        for code, count in _errors_decoder.decode(body[10]).items():
            errors[code] = errors.get(code, 0) + count
    return (
        bodies[0][0],
        bodies[-1][1],
        min(b[2] for b in bodies),
        max(b[3] for b in bodies),
        sum(b[4] for b in bodies),
        sum(b[5] for b in bodies),
        max(b[6] for b in bodies),
        sum(b[7] for b in bodies),
        sum(b[8] for b in bodies),
        sum(b[9] for b in bodies),
        _errors_json(errors),
        # Sorting concatenated sorted runs is a linear merge for Timsort.
        pack_latencies(latencies),
    )
