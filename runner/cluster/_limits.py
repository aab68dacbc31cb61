"""Provider limits shared by every worker of a cluster (``cluster.shared_limits``).

A provider's limits belong to the account, not to a process, so with
``shared_limits`` they live in the database and every worker takes from the
same budget:

* **rate_limit** (rpm, tpm): one token bucket row per provider and kind in
  ``runner_buckets``, refilled continuously at the per-minute rate up to one
  minute's worth, as :mod:`runner._ratelimit` does in memory.  An attempt
  reserves one request in a single atomic ``UPDATE ... RETURNING`` (the row
  lock orders concurrent workers) and sleeps for the debt it sees; token
  usage is charged after the answer, carried by the provider's next
  reservation (or a flush within a second), so it costs no round trip of its
  own.  In any minute a provider therefore gets at most its rate plus one
  bucket (the burst a full bucket allows).  The bucket's clock is the
  server's ``clock_timestamp()``, so the workers' clocks need not agree.
* **max_concurrency**: one row per slot in ``runner_slots``; an attempt takes
  a free slot (``FOR UPDATE SKIP LOCKED``) with a lease renewed while it
  runs, and gives it back after the call.  A worker that dies stops renewing
  and its slots come free when their lease runs out.  Waiters wake on
  ``NOTIFY runner_slots`` when a slot is given back.
* **cooldown**: the consecutive failures of a provider are counted for the
  whole cluster, in its ``runner_cooldowns`` row: ``cooldown.failures``
  failures in a row, on any workers, start the cooldown for every worker;
  a success on any worker starts the count again.  Each worker sends its
  outcomes since its last flush in one atomic ``UPDATE`` per flush (the row
  lock orders the workers; "in a row" is the order in which the flushes
  reach the database, within :data:`FLUSH_INTERVAL` of the calls).  The
  update that reaches the threshold writes the cooldown's end time, resets
  the count and announces it (``NOTIFY runner_cooldown``); every worker then
  skips the provider until that time.  Outcomes while the provider cools
  down are not counted (calls started before it), so the count starts
  afresh after it, as on one machine.  Successes cost nothing while the
  count is zero: a worker sends one only after it learnt of a failure
  (its own, or ``NOTIFY runner_failures`` from another worker).

One owner task (:meth:`SharedLimits.run`) sends what the hot path queues
synchronously (slot releases, call outcomes, pending token charges) and
renews the slot leases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final

import anyio
from anyio.abc import TaskStatus

from runner.cluster._pool import Connection, Database
from runner.config._model import ProviderConfig

SLOTS_CHANNEL: Final = "runner_slots"
WANTED_CHANNEL: Final = "runner_slot_wanted"
COOLDOWN_CHANNEL: Final = "runner_cooldown"
FAILURES_CHANNEL: Final = "runner_failures"

#: Seconds between flushes of queued token charges and slot releases.
FLUSH_INTERVAL: Final = 0.05
#: Seconds a spare slot stays with its worker unused before it goes back.
SPARE_FOR: Final = 0.2
#: Seconds spares are given back at once after another worker said it waits.
CONTENDED_FOR: Final = 1.0

_SETUP_BUCKET: Final = """
INSERT INTO runner_buckets (provider, kind, capacity, rate, level, updated)
VALUES ($1, $2, $3::float8, $3::float8 / 60.0, $3::float8, clock_timestamp())
ON CONFLICT (provider, kind) DO UPDATE
SET capacity = excluded.capacity, rate = excluded.rate,
    level = least(runner_buckets.level, excluded.capacity)
"""
_SETUP_SLOTS: Final = """
INSERT INTO runner_slots (provider, slot) SELECT $1, s FROM generate_series(0, $2 - 1) AS s
ON CONFLICT DO NOTHING
"""
# Reserve $2 requests and charge $3 tokens (refilling first); the levels after.
_RESERVE: Final = """
WITH t AS (SELECT clock_timestamp() AS now)
UPDATE runner_buckets b
SET level = least(b.capacity,
                  b.level + greatest(0, extract(epoch FROM t.now - b.updated)) * b.rate)
            - CASE b.kind WHEN 'requests' THEN $2::float8 ELSE $3::float8 END,
    updated = greatest(b.updated, t.now)
FROM t
WHERE b.provider = $1
RETURNING b.kind, b.level, b.rate
"""
_TAKE_SLOT: Final = """
UPDATE runner_slots SET holder = $2, lease_until = now() + make_interval(secs => $3)
WHERE (provider, slot) = (
    SELECT provider, slot FROM runner_slots
    WHERE provider = $1 AND (holder IS NULL OR lease_until < now())
    ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED
)
RETURNING slot
"""
_GIVE_SLOTS: Final = """
WITH freed AS (
    UPDATE runner_slots s SET holder = NULL, lease_until = NULL
    FROM unnest($1::text[], $2::int[]) AS g(provider, slot)
    WHERE s.provider = g.provider AND s.slot = g.slot AND s.holder = $3
    RETURNING s.provider
)
SELECT pg_notify('runner_slots', provider) FROM (SELECT DISTINCT provider FROM freed) AS f
"""
_RENEW_SLOTS: Final = """
UPDATE runner_slots s SET lease_until = now() + make_interval(secs => $4)
FROM unnest($1::text[], $2::int[]) AS g(provider, slot)
WHERE s.provider = g.provider AND s.slot = g.slot AND s.holder = $3
"""
_SETUP_COUNT: Final = """
INSERT INTO runner_cooldowns (provider, until) VALUES ($1, '-infinity') ON CONFLICT DO NOTHING
"""
# Each provider's outcomes since the last flush: whether a success came among
# them and the failures after the last success.  The rows are locked first
# (a concurrent flush is waited for and its result read), so the count moves
# atomically; the one that reaches $4 starts the cooldown of $5 seconds.
_OUTCOMES: Final = """
WITH o AS (
    SELECT * FROM unnest($1::text[], $2::bool[], $3::int[]) AS o(provider, reset, failures)
), counted AS (
    SELECT c.provider, c.until > now() AS cooling,
           CASE WHEN c.until > now() THEN 0
                WHEN o.reset THEN o.failures
                ELSE c.failures + o.failures END AS failures
    FROM runner_cooldowns c JOIN o ON o.provider = c.provider
    FOR UPDATE OF c
), moved AS (
    UPDATE runner_cooldowns c
    SET failures = CASE WHEN n.failures >= $4 AND NOT n.cooling THEN 0 ELSE n.failures END,
        until = CASE WHEN n.failures >= $4 AND NOT n.cooling
                     THEN now() + make_interval(secs => $5) ELSE c.until END
    FROM counted n WHERE c.provider = n.provider
    RETURNING c.provider, c.failures, n.failures >= $4 AND NOT n.cooling AS started
)
SELECT provider, failures, started,
       CASE WHEN started THEN pg_notify('runner_cooldown', provider) END,
       CASE WHEN failures > 0 THEN pg_notify('runner_failures', provider) END
FROM moved
"""
_COOLING: Final = """
SELECT provider, extract(epoch FROM until - now())::float8 AS remaining
FROM runner_cooldowns WHERE until > now() AND ($1::text IS NULL OR provider = $1)
"""


class ProviderAdmission:
    """The cluster-wide admission of one provider's attempts.

    Slots are *kept* between attempts: a slot an attempt gives back stays
    with this worker as a spare for the next attempt, so a busy worker makes
    no slot round trip per attempt.  Spares go back to the cluster once idle
    for :data:`SPARE_FOR`, and at once while another worker is waiting for a
    slot of the provider (it says so with ``NOTIFY runner_slot_wanted``).
    """

    __slots__ = ("_limits", "_rate", "_wake", "contended_until", "in_use", "provider", "spare")

    def __init__(self, limits: SharedLimits, provider: ProviderConfig, *, rate: bool) -> None:
        self._limits = limits
        self.provider = provider.id
        self._rate = rate
        self._wake = anyio.Event()
        #: Slots in use by an attempt of this worker.
        self.in_use: list[int] = []
        #: Slots this worker holds without using them: (slot, idle since).
        self.spare: list[tuple[int, float]] = []
        #: Until when spares are given back at once (another worker is waiting).
        self.contended_until = 0.0

    @property
    def held(self) -> list[int]:
        """Every slot this worker holds for the provider."""
        return [*self.in_use, *(slot for slot, _ in self.spare)]

    async def enter(self) -> None:
        """Wait until the shared budgets allow one more attempt, then take a slot."""
        limits = self._limits
        if self._rate:
            await limits.reserve(self.provider)
        if self.spare:
            self.in_use.append(self.spare.pop()[0])
            return
        while True:
            taken = await limits.take_slot(self.provider)
            if taken is not None:
                self.in_use.append(taken)
                return
            limits.queue_want(self.provider)
            # Woken by a slot given back anywhere; the timeout covers a slot
            # freed by a lease that ran out (its dead holder announces nothing).
            with anyio.move_on_after(limits.lease / 3):
                await self._wake.wait()

    def leave(self, tokens: int) -> None:
        """After the attempt: keep the slot as a spare (or give it back) and charge tokens."""
        if self.in_use:
            slot = self.in_use.pop()
            now = anyio.current_time()
            if now < self.contended_until:
                self._limits.queue_release(self.provider, slot)
            else:
                self.spare.append((slot, now))
                self._limits.note_spare()
        if tokens and self._rate:
            self._limits.queue_charge(self.provider, tokens)

    def idle_spares(self, now: float, *, everything: bool = False) -> list[int]:
        """Take out the spares idle for :data:`SPARE_FOR` (or all of them)."""
        keep: list[tuple[int, float]] = []
        out: list[int] = []
        for slot, since in self.spare:
            if everything or now - since >= SPARE_FOR:
                out.append(slot)
            else:
                keep.append((slot, since))
        self.spare = keep
        return out

    def wake(self) -> None:
        """A slot came free somewhere: let waiters try again."""
        self._wake.set()
        self._wake = anyio.Event()


class SharedLimits:
    """Every provider's shared limits for one worker; run :meth:`run` as its owner task."""

    def __init__(
        self,
        db: Database,
        providers: Sequence[ProviderConfig],
        *,
        worker_id: str,
        lease: float,
        cooldown: float,
        failures: int,
    ) -> None:
        self.db = db
        self.worker_id = worker_id
        self.lease = lease
        self._cooldown = cooldown
        self._threshold = failures
        self._providers = {p.id: p for p in providers}
        self._admissions: dict[str, ProviderAdmission] = {}
        for p in providers:
            limit = p.rate_limit
            rate = limit is not None and (
                limit.requests_per_minute is not None or limit.tokens_per_minute is not None
            )
            self._admissions[p.id] = ProviderAdmission(self, p, rate=rate)
        self._charges: dict[str, int] = {}
        self._releases: list[tuple[str, int]] = []
        #: Outcomes not sent yet, per provider: (a success came, failures after it).
        self._outcomes: dict[str, tuple[bool, int]] = {}
        #: Providers whose cluster count may be above zero: a success must be sent.
        self._failing: set[str] = set()
        #: Failure notices seen per provider, so a flush's "count is zero" is
        #: not trusted over a failure announced while it was on its way.
        self._failure_notices: dict[str, int] = {}
        self._cool: Callable[[str, float], None] | None = None
        self._kick = anyio.Event()
        self._reload = False
        self._pending_cooldowns: set[str] = set()
        self._wants: set[str] = set()
        self._spares = False

    # -- what the dispatcher and registry use -------------------------------

    def admission(self, provider: ProviderConfig) -> ProviderAdmission | None:
        """The shared admission of ``provider``."""
        return self._admissions.get(provider.id)

    def record_success(self, provider_id: str) -> None:
        """A call succeeded: the cluster's count starts again (sent only if it may be above 0)."""
        if provider_id in self._failing:
            self._outcomes[provider_id] = (True, 0)
            self._kick.set()

    def record_failure(self, provider_id: str) -> None:
        """A call failed in a way that counts: added to the cluster's count with the next flush."""
        if self._cooldown <= 0 or provider_id not in self._providers:
            return  # no cooldown to start
        reset, failures = self._outcomes.get(provider_id, (False, 0))
        self._outcomes[provider_id] = (reset, failures + 1)
        self._failing.add(provider_id)
        self._kick.set()

    def bind(self, cool: Callable[[str, float], None]) -> None:
        """Where cooldowns started elsewhere go: ``cool(provider_id, seconds_left)``."""
        self._cool = cool

    # -- notifications ------------------------------------------------------

    def channels(self) -> dict[str, Callable[[str], None]]:
        """The LISTEN channels this component needs, with their callbacks."""
        return {
            SLOTS_CHANNEL: self._on_slot,
            WANTED_CHANNEL: self._on_wanted,
            COOLDOWN_CHANNEL: self._on_cooldown,
            FAILURES_CHANNEL: self._on_failure,
        }

    def on_reconnect(self) -> None:
        """Notifications may have been missed: wake slot waiters, reload cooldowns.

        A failure announced meanwhile may have been missed too, so the next
        success of each provider is sent.
        """
        for admission in self._admissions.values():
            admission.wake()
        self._failing.update(self._providers)
        self._reload = True
        self._kick.set()

    def _on_slot(self, provider_id: str) -> None:
        admission = self._admissions.get(provider_id)
        if admission is not None:
            admission.wake()

    def _on_wanted(self, payload: str) -> None:
        provider_id, _, who = payload.partition(" ")
        admission = self._admissions.get(provider_id)
        if admission is None or who == self.worker_id:
            return
        admission.contended_until = anyio.current_time() + CONTENDED_FOR
        self._releases += [
            (provider_id, slot) for slot in admission.idle_spares(0.0, everything=True)
        ]
        self._kick.set()

    def _on_failure(self, provider_id: str) -> None:
        if provider_id in self._providers:
            self._failing.add(provider_id)
            self._failure_notices[provider_id] = self._failure_notices.get(provider_id, 0) + 1

    def _on_cooldown(self, provider_id: str) -> None:
        self._pending_cooldowns.add(provider_id)
        self._kick.set()

    # -- database operations --------------------------------------------------

    async def setup(self) -> None:
        """Create or resize every provider's buckets and slots to match this config."""

        async def run(conn: Connection) -> None:
            async with conn.transaction():
                for p in self._providers.values():
                    limit = p.rate_limit
                    if limit is not None and limit.requests_per_minute is not None:
                        await conn.execute(
                            _SETUP_BUCKET, p.id, "requests", limit.requests_per_minute
                        )
                    else:
                        await conn.execute(
                            "DELETE FROM runner_buckets WHERE provider = $1 AND kind = 'requests'",
                            p.id,
                        )
                    if limit is not None and limit.tokens_per_minute is not None:
                        await conn.execute(_SETUP_BUCKET, p.id, "tokens", limit.tokens_per_minute)
                    else:
                        await conn.execute(
                            "DELETE FROM runner_buckets WHERE provider = $1 AND kind = 'tokens'",
                            p.id,
                        )
                    await conn.execute(_SETUP_COUNT, p.id)
                    await conn.execute(_SETUP_SLOTS, p.id, p.max_concurrency)
                    await conn.execute(
                        "DELETE FROM runner_slots WHERE provider = $1 AND slot >= $2",
                        p.id,
                        p.max_concurrency,
                    )

        await self.db.run(run)

    async def reserve(self, provider_id: str) -> float:
        """Take one request from the shared bucket (and charge pending tokens); sleep the debt.

        Returns the seconds waited.
        """
        tokens = self._charges.pop(provider_id, 0)
        try:
            rows = await self.db.fetch(_RESERVE, provider_id, 1.0, float(tokens))
        except BaseException:
            self._charges[provider_id] = self._charges.get(provider_id, 0) + tokens
            raise
        wait = 0.0
        for row in rows:
            level, rate = row["level"], row["rate"]
            if level < 0 and rate > 0:
                # A request reservation waits for its own unit; token debt waits
                # until the bucket is back at zero.
                wait = max(wait, -level / rate)
        if wait > 0:
            await anyio.sleep(wait)
        return wait

    async def take_slot(self, provider_id: str) -> int | None:
        """A free slot of the provider, now held by this worker, or ``None``."""
        value = await self.db.fetchval(_TAKE_SLOT, provider_id, self.worker_id, self.lease)
        return None if value is None else int(value)

    def queue_release(self, provider_id: str, slot: int) -> None:
        self._releases.append((provider_id, slot))
        self._kick.set()

    def queue_want(self, provider_id: str) -> None:
        """Tell the other workers this one waits for a slot (sent by the owner)."""
        self._wants.add(provider_id)
        self._kick.set()

    def note_spare(self) -> None:
        """A slot became spare: the owner gives it back if it stays unused."""
        self._spares = True

    def queue_charge(self, provider_id: str, tokens: int) -> None:
        self._charges[provider_id] = self._charges.get(provider_id, 0) + tokens

    async def cooling(self, provider_id: str | None = None) -> dict[str, float]:
        """Providers cooling down in the cluster now, with the seconds left."""
        rows = await self.db.fetch(_COOLING, provider_id)
        return {r["provider"]: float(r["remaining"]) for r in rows}

    # -- the owner task -------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Send queued releases, charges and cooldowns; renew slot leases; until cancelled.

        On cancellation the slots still held are given back (shielded), so a
        graceful stop frees them at once rather than after their lease.
        """
        await self.setup()
        await self._apply_cooldowns(None)
        task_status.started()
        renew_every = self.lease / 3
        next_renew = anyio.current_time() + renew_every
        try:
            while True:
                # Spares are looked at again once they may have idled long enough.
                with anyio.move_on_after(SPARE_FOR if self._spares else 1.0):
                    await self._kick.wait()
                self._kick = anyio.Event()
                # Let releases that arrive together go in one statement.
                await anyio.sleep(FLUSH_INTERVAL)
                await self._flush()
                if anyio.current_time() >= next_renew:
                    await self._renew()
                    next_renew = anyio.current_time() + renew_every
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                for admission in self._admissions.values():
                    self._releases += [(admission.provider, s) for s in admission.held]
                    admission.in_use.clear()
                    admission.spare.clear()
                await self._flush()

    async def _flush(self) -> None:
        if self._spares:
            now = anyio.current_time()
            self._spares = False
            for admission in self._admissions.values():
                self._releases += [(admission.provider, s) for s in admission.idle_spares(now)]
                self._spares = self._spares or bool(admission.spare)
        wants, self._wants = self._wants, set()
        for provider_id in wants:
            await self.db.execute(
                "SELECT pg_notify($1, $2)", WANTED_CHANNEL, f"{provider_id} {self.worker_id}"
            )
        releases, self._releases = self._releases, []
        if releases:
            await self.db.fetch(
                _GIVE_SLOTS, [r[0] for r in releases], [r[1] for r in releases], self.worker_id
            )
        if self._outcomes:
            await self._send_outcomes()
        charges, self._charges = self._charges, {}
        for provider_id, tokens in charges.items():
            await self.db.fetch(_RESERVE, provider_id, 0.0, float(tokens))
        if self._reload:
            self._reload = False
            await self._apply_cooldowns(None)
        pending, self._pending_cooldowns = self._pending_cooldowns, set()
        for provider_id in pending:
            await self._apply_cooldowns(provider_id)

    async def _send_outcomes(self) -> None:
        """Move the cluster's counts by this worker's outcomes; apply a cooldown they start."""
        outcomes, self._outcomes = self._outcomes, {}
        notices = dict(self._failure_notices)
        rows = await self.db.fetch(
            _OUTCOMES,
            list(outcomes),
            [reset for reset, _ in outcomes.values()],
            [failures for _, failures in outcomes.values()],
            self._threshold,
            self._cooldown,
        )
        for row in rows:
            provider_id = row["provider"]
            if row["started"] and self._cool is not None:
                # Ours to apply now; the others learn it from the notification.
                self._cool(provider_id, self._cooldown)
            # Zero now, and nothing since says otherwise (a failure announced
            # meanwhile, or one of ours not sent yet): successes need not be sent.
            quiet = self._failure_notices.get(provider_id, 0) == notices.get(provider_id, 0)
            if row["failures"] == 0 and quiet and provider_id not in self._outcomes:
                self._failing.discard(provider_id)

    async def _apply_cooldowns(self, provider_id: str | None) -> None:
        cool = self._cool
        if cool is None:
            return
        for pid, remaining in (await self.cooling(provider_id)).items():
            if pid in self._providers and remaining > 0 and math.isfinite(remaining):
                cool(pid, remaining)

    async def _renew(self) -> None:
        held = [(a.provider, s) for a in self._admissions.values() for s in a.held]
        if held:
            await self.db.execute(
                _RENEW_SLOTS, [h[0] for h in held], [h[1] for h in held], self.worker_id, self.lease
            )
