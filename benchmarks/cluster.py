"""Cluster mode on PostgreSQL: scaling out, per-task overhead, shared limits, summaries.

Needs a PostgreSQL server: ``RUNNER_BENCH_DATABASE_URL`` (default the local
``postgresql://postgres@127.0.0.1:5432/postgres``); each measurement gets a
database of its own, dropped afterwards.  Without a server the case is
skipped.  Worker processes are real ``python -m runner worker`` processes.

* **scaling**: 1 worker vs 3 workers, simulated 100 ms providers,
  concurrency 20 each.  The tasks are enqueued in one transaction while the
  workers wait, and the time is the server's, from that commit to the last
  result; throughput is tasks per second, and the target is the ratio.
* **overhead**: one worker, zero-latency providers, the same tasks file sent
  with ``submit --url`` to a worker on SQLite and to one on PostgreSQL
  (tasks/s of the whole command), and the database transactions each task
  cost on PostgreSQL (``pg_stat_database.xact_commit``, every statement
  outside a transaction counts as one: claims, result writes, heartbeats,
  metric batches, NOTIFY wake-ups).
* **rate limit**: 3 workers share ``requests_per_minute: 600``; the
  bucket's admissions, logged by the database inside each reservation
  (:mod:`benchmarks._admissions`, on the server's clock), are checked
  against the bucket: at most 600 + 10 per second since the first, and in
  any 60 s window at most 600 + one bucket (600).  The attempts' start
  stamps (metric events, taken by the workers after the wait) are checked
  the same way for comparison, with how late they come.
* **summary**: ``summarize`` over 200,000 (quick) or 1,000,000 (full) events
  written in the writer's batches, every event and a 12 h window.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from benchmarks import _admissions
from benchmarks._fixtures import metric_events, require_runner
from benchmarks._harness import Case, Metric, Settings, Skip, Target
from runner.metrics._query import Filters, Grouping
from runner.metrics._writer import DEFAULT_BATCH

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SCALING = Target(op=">=", value=2.7, text="3 workers >= 2.7x the throughput of 1")
SUMMARY = Target(op="<=", value=1.0, text="1,000,000 events summarised in <= 1 s")


def _server() -> str:
    return os.environ.get("RUNNER_BENCH_DATABASE_URL") or DEFAULT_SERVER


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_server(), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Database:
    """A fresh database for one measurement."""

    def __init__(self) -> None:
        self.name = f"runner_bench_{uuid.uuid4().hex[:10]}"
        self.url = _with_db(_server(), self.name)

    def __enter__(self) -> Database:
        try:
            asyncio.run(_admin(f'CREATE DATABASE "{self.name}"'))
        except (OSError, TimeoutError) as exc:
            raise Skip(f"no PostgreSQL at {_server()} ({exc})") from None
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def _config(
    scratch: Path,
    name: str,
    *,
    latency_ms: float,
    concurrency: int,
    database: str | None,
    rpm: int | None = None,
) -> Path:
    path = scratch / f"{name}.yaml"
    limit = f"    rate_limit: {{requests_per_minute: {rpm}}}\n" if rpm else ""
    cluster = f"cluster: {{database: '{database}', lease: 10s}}\n" if database else ""
    path.write_text(
        f"""\
providers:
  - id: sim
    type: simulated
    latency_ms: {{mean: {latency_ms}, jitter: 0}}
    max_concurrency: 10000
{limit}default_provider: sim
concurrency: {concurrency}
logging: {{level: error}}
metrics: {{path: {scratch / name / "metrics.db"}}}
worker: {{port: 0, journal: {scratch / name / "journal.db"}, queue_size: 100000}}
{cluster}"""
    )
    return path


class Worker:
    """One ``python -m runner worker`` process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "worker", "--config", str(config)],
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(rb"listening on (http://[0-9.]+:\d+)", log.read_bytes())
            if found:
                self.url = found[1].decode()
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"worker did not start: {log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def _workers(configs: Sequence[Path], scratch: Path) -> list[Worker]:
    return [Worker(c, scratch / f"{c.stem}-{i}.log") for i, c in enumerate(configs)]


async def _enqueue_and_wait(url: str, count: int) -> float:
    """Enqueue ``count`` tasks in one transaction; server seconds to the last result."""
    import asyncpg
    import msgspec

    from runner._task import Task
    from runner.cluster._pool import open_database
    from runner.cluster._queue import Queue
    from runner.service._cluster import cancelled_result

    encode = msgspec.json.Encoder().encode
    rows = [(f"t{i}", encode(Task(id=f"t{i}", prompt="x"))) for i in range(count)]
    async with open_database(url) as db:
        queue = Queue(db, worker_id="bench", lease=10, cancelled=cancelled_result)
        await queue.accept(rows)
    conn = await asyncpg.connect(url)
    try:
        # Polled: the benchmark measures server time, so the poll's own pace does not count.
        while await conn.fetchval("SELECT count(*) FROM runner_tasks WHERE result IS NULL"):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return float(
            await conn.fetchval(
                "SELECT extract(epoch FROM max(finished_at) - min(submitted_at)) FROM runner_tasks"
            )
        )
    finally:
        await conn.close()


async def _wait_schema(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        while not await conn.fetchval("SELECT to_regclass('runner_tasks') IS NOT NULL"):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def _cluster_run(scratch: Path, workers: int, count: int, latency_ms: float) -> float:
    """Tasks per second of ``workers`` workers on one fresh database."""
    with Database() as db:
        configs = [
            _config(scratch, f"w{workers}-{i}", latency_ms=latency_ms, concurrency=20,
                    database=db.url)
            for i in range(workers)
        ]  # fmt: skip
        running = _workers(configs, scratch)
        try:
            asyncio.run(_wait_schema(db.url))
            seconds = asyncio.run(_enqueue_and_wait(db.url, count))
        finally:
            for w in running:
                w.stop()
    return count / seconds


def scaling(settings: Settings) -> list[Metric]:
    scratch = Path(settings.scratch)
    per_worker = 2000 if settings.full else 1000  # 10 s (5 s) of work per worker
    reps = 3 if settings.full else 1
    one = [_cluster_run(scratch, 1, per_worker, 100.0) for _ in range(reps)]
    three = [_cluster_run(scratch, 3, 3 * per_worker, 100.0) for _ in range(reps)]
    ideal = 20 / 0.1
    return [
        Metric(name="1 worker", unit="tasks/s", samples=one, note=f"ideal {ideal:.0f}/s"),
        Metric(name="3 workers", unit="tasks/s", samples=three, note=f"ideal {3 * ideal:.0f}/s"),
        Metric(
            name="3 vs 1 workers",
            unit="x",
            samples=[t / o for t, o in zip(three, one, strict=True)],
            target=SCALING,
            note="simulated 100 ms providers, concurrency 20 each",
        ),
    ]


async def _xacts(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await asyncio.sleep(1.5)  # the statistics are flushed about once a second
        return int(
            await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            )
        )
    finally:
        await conn.close()


def _submit(url: str, tasks: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "runner", "submit", str(tasks), "--url", url, "--out",
         os.devnull, "--no-progress"],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def overhead(settings: Settings) -> list[Metric]:
    scratch = Path(settings.scratch)
    count = 20_000 if settings.full else 5_000
    reps = 3 if settings.full else 1
    tasks = scratch / "overhead.jsonl"
    tasks.write_text("".join(f'{{"id": "t{i}", "prompt": "x"}}\n' for i in range(count)))
    sqlite: list[float] = []
    postgres: list[float] = []
    trips: list[float] = []
    for rep in range(reps):
        config = _config(scratch, f"sqlite-{rep}", latency_ms=0, concurrency=64, database=None)
        (w,) = _workers([config], scratch)
        try:
            sqlite.append(count / _submit(w.url, tasks))
        finally:
            w.stop()
        with Database() as db:
            config = _config(scratch, f"pg-{rep}", latency_ms=0, concurrency=64, database=db.url)
            (w,) = _workers([config], scratch)
            try:
                before = asyncio.run(_xacts(db.url))
                postgres.append(count / _submit(w.url, tasks))
                after = asyncio.run(_xacts(db.url))
            finally:
                w.stop()
            trips.append((after - before) / count)
    return [
        Metric(name="1 worker on SQLite", unit="tasks/s", samples=sqlite,
               note=f"submit --url, {count:,} tasks, zero-latency provider"),
        Metric(name="1 worker on PostgreSQL", unit="tasks/s", samples=postgres,
               note="the same file and command"),
        Metric(name="PostgreSQL vs SQLite", unit="x",
               samples=[p / s for p, s in zip(postgres, sqlite, strict=True)]),
        Metric(name="database transactions per task", unit="xacts", samples=trips,
               note="pg_stat_database.xact_commit over the run / tasks"),
    ]  # fmt: skip


async def _log_admissions(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await _admissions.install(conn)
    finally:
        await conn.close()


async def _times(url: str) -> tuple[list[float], list[float], list[float]]:
    """The attempts' stamps (metric events), the bucket's admissions, and what each took."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        starts = await conn.fetch("SELECT ts_us FROM runner_events ORDER BY ts_us")
        admitted = await conn.fetch(_admissions.SELECT)
    finally:
        await conn.close()
    return (
        [r["ts_us"] / 1e6 for r in starts],
        [r["admitted"] for r in admitted],
        [r["taken"] for r in admitted],
    )


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rate_limit(settings: Settings) -> list[Metric]:
    scratch = Path(settings.scratch)
    rpm = 600
    count = 1400 if settings.full else 700  # 80 s or 10 s past the burst
    with Database() as db:
        configs = [
            _config(scratch, f"rl-{i}", latency_ms=10, concurrency=20, database=db.url, rpm=rpm)
            for i in range(3)
        ]
        running = _workers(configs, scratch)
        try:
            asyncio.run(_wait_schema(db.url))
            asyncio.run(_log_admissions(db.url))
            asyncio.run(_enqueue_and_wait(db.url, count))
        finally:
            for w in running:
                w.stop()
        starts, admitted, taken = asyncio.run(_times(db.url))
    window, excess = _admissions.check_bucket(admitted, rpm)
    stamped_window, stamped_excess = _admissions.check_bucket(starts, rpm)
    # The k-th stamp against the k-th admission: how late the workers stamp.
    late = [s - a for s, a in zip(starts, admitted, strict=False)]
    return [
        Metric(name="attempts (metric events)", unit="calls", samples=[float(len(starts))],
               note=f"3 workers, requests_per_minute {rpm}"),
        Metric(name="admissions (bucket log)", unit="calls", samples=[float(len(admitted))],
               note=f"units taken each: {min(taken):g}-{max(taken):g}"),
        Metric(name="most admissions in any 60 s window", unit="calls", samples=[float(window)],
               target=Target(op="<=", value=2 * rpm, text="rate + one bucket's burst"),
               note=f"database clock; allowed {rpm} + burst {rpm}"),
        Metric(name="most admissions over 600 + 10/s since the first", unit="calls",
               samples=[excess], target=Target(op="<=", value=0.001, text="never past the bucket"),
               note="database clock; float rounding only"),
        Metric(name="most stamped starts in any 60 s window", unit="calls",
               samples=[float(stamped_window)], note="the workers' stamps, after the wait"),
        Metric(name="most stamped starts over 600 + 10/s since the first", unit="calls",
               samples=[stamped_excess], note="the workers' stamps, after the wait"),
        Metric(name="k-th stamp after the k-th admission, median", unit="ms",
               samples=[1000 * _quantile(late, 0.5)]),
        Metric(name="k-th stamp after the k-th admission, most", unit="ms",
               samples=[1000 * max(late)], note=f"least {1000 * min(late):.1f} ms"),
    ]  # fmt: skip


async def _fill_and_summarise(url: str, count: int, reps: int) -> tuple[list[float], list[float]]:
    import itertools
    from datetime import UTC, datetime, timedelta

    from runner.cluster._metrics import PgEventStore, summarize
    from runner.cluster._pool import open_database
    from runner.cluster._schema import migrate

    async with open_database(url) as db:
        await migrate(db)
        store = PgEventStore(db)
        events = metric_events(count, span_s=86_400.0)
        while batch := list(itertools.islice(events, DEFAULT_BATCH)):
            await store.write(batch)
        await db.execute("VACUUM ANALYZE")
        whole: list[float] = []
        window: list[float] = []
        since = datetime.now(UTC) - timedelta(hours=12)
        for _ in range(reps + 1):
            started = time.perf_counter()
            rows = await summarize(db, Filters(), Grouping())
            whole.append(time.perf_counter() - started)
            assert sum(r.requests for r in rows) == count
            started = time.perf_counter()
            await summarize(db, Filters(since=since), Grouping())
            window.append(time.perf_counter() - started)
    return whole[1:], window[1:]


def summary(settings: Settings) -> list[Metric]:
    import msgspec

    from benchmarks.metrics_summary import timed_command

    count = 1_000_000 if settings.full else 200_000
    with Database() as db:
        whole, window = asyncio.run(_fill_and_summarise(db.url, count, settings.repetitions))
        # What a user types, start-up and connecting included.
        command: list[float] = []
        for _ in range(settings.repetitions):
            seconds, out = timed_command(["metrics", "summary", "--db", db.url, "--format", "json"])
            assert sum(r["requests"] for r in msgspec.json.decode(out)) == count
            command.append(seconds)
    return [
        Metric(name=f"{count:,} events, all (query)", unit="s", samples=whole),
        Metric(name=f"{count:,} events, --since 12h (query)", unit="s", samples=window),
        Metric(name=f"{count:,} events: metrics summary --db postgresql://", unit="s",
               samples=command, target=SUMMARY if count == 1_000_000 else None,
               note="the whole command, interpreter start-up included"),
    ]  # fmt: skip


def run(settings: Settings) -> Sequence[Metric]:
    require_runner()
    try:
        import asyncpg  # noqa: F401 - a dependency; checked for a clear skip
    except ImportError:
        raise Skip("asyncpg is not installed") from None
    try:
        asyncio.run(_admin("SELECT 1"))
    except (OSError, TimeoutError) as exc:
        raise Skip(f"no PostgreSQL at {_server()} ({exc})") from None
    only = os.environ.get("RUNNER_BENCH_CLUSTER", "scaling,overhead,rate_limit,summary")
    parts: dict[str, Any] = {
        "scaling": scaling,
        "overhead": overhead,
        "rate_limit": rate_limit,
        "summary": summary,
    }
    metrics: list[Metric] = []
    for name in only.split(","):
        metrics += parts[name.strip()](settings)
    return metrics


CASE = Case(name="cluster", title="cluster mode on PostgreSQL", run=run)
