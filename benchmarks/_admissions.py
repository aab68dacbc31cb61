"""The shared rate limit's admissions as the database decides them (measurement only).

A worker learns from the bucket's ``UPDATE ... RETURNING`` the level after
its reservation and sleeps the debt; the attempt's metric event is stamped
later, after that sleep, by an event loop that may wake late.  Stamps that
move by different amounts can shift attempts between windows, so they
cannot tell whether the bucket let too much through.

This log records the decision itself: a trigger on ``runner_buckets`` runs
inside the reserving statement (same transaction, same row lock, the new
row) and writes the admission time the bucket promised: the row's new
``updated`` (the server's clock, never moved backwards) plus the debt at
the rate.  A worker receives the answer after that statement committed and
sleeps the debt from then, so its attempt never starts before this time.

Only the benchmark and the tests install it; a worker never does, so the
production statement is unchanged (where installed, each reservation pays
one extra insert while holding the row lock).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

#: DDL to run once the cluster schema exists and before the first reservation.
INSTALL: Final = (
    """CREATE TABLE bench_admissions (
        seq bigserial PRIMARY KEY,
        provider text NOT NULL,
        admitted double precision NOT NULL,
        taken double precision NOT NULL
    )""",
    # The refill the statement applied, recomputed from the old and new
    # rows; 'taken' is what the statement took besides it: 1 for a request
    # reservation, 0 for a token charge's refill of the requests row or for
    # a worker's setup (which leave no admission to log).
    """CREATE FUNCTION bench_log_admission() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        refilled double precision := least(
            OLD.capacity,
            OLD.level + greatest(0, extract(epoch FROM NEW.updated - OLD.updated)) * OLD.rate);
    BEGIN
        IF refilled - NEW.level > 0.5 THEN
            INSERT INTO bench_admissions (provider, admitted, taken)
            VALUES (NEW.provider,
                    extract(epoch FROM NEW.updated) + greatest(0, -NEW.level) / NEW.rate,
                    refilled - NEW.level);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER bench_log_admission AFTER UPDATE ON runner_buckets
    FOR EACH ROW WHEN (NEW.kind = 'requests') EXECUTE FUNCTION bench_log_admission()""",
)

#: Every logged admission: seconds since the epoch (server clock) and units taken.
SELECT: Final = "SELECT admitted, taken FROM bench_admissions ORDER BY admitted, seq"


class _Executor(Protocol):
    async def execute(self, query: str, /) -> str: ...


async def install(conn: _Executor) -> None:
    """Start logging admissions on this database (the cluster schema must exist)."""
    for statement in INSTALL:
        await conn.execute(statement)


def check_bucket(times: Sequence[float], per_minute: int) -> tuple[int, float]:
    """The worst 60 s window and the worst excess over the bucket's promise.

    ``times`` sorted.  Returns the most times in any closed 60 s window
    (a full bucket allows ``2 * per_minute``) and the most by which the
    k-th time exceeds ``per_minute + rate * (t_k - t_1)`` (the full bucket
    at the first admission plus its refill since; allowed: 0).
    """
    if not times:
        return 0, 0.0
    rate = per_minute / 60
    t0 = times[0]
    excess = max(k - (per_minute + rate * (t - t0)) for k, t in enumerate(times, start=1))
    window = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - 60:
            j += 1
        window = max(window, i - j + 1)
    return window, excess
