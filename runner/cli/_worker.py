"""``python -m runner worker``: start-time checks, the serving loop, and signals.

Order of start: check the bind address against the token rule, open the
journal (refused if another worker holds it), purge expired results, open
the metrics writer behind the Prometheus tee, open the Runner, resume the
journal's unfinished tasks, and only then listen.  The line
``runner worker: listening on http://HOST:PORT`` on stderr says it is ready
(tests read the port from it when they bind port 0).

Signals: the first SIGTERM/SIGINT stops intake (POST answers 503), lets the
Runner finish running tasks within ``grace_period`` and leaves the rest
unfinished in the journal for the next start; GET keeps answering meanwhile.
A second signal stops at once.  Neither loses an accepted task: it was
committed before its 202.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Final, TextIO

import anyio
import anyio.abc

from runner._errors import UsageError
from runner.cli._main import EXIT_INTERRUPTED, EXIT_OK, notice
from runner.cli._notices import notice_line, refuse_stranded
from runner.config._model import Config
from runner.metrics._store import check_store
from runner.metrics._writer import MetricsSink, open_metrics_writer
from runner.service._cluster import ClusterWorker
from runner.service._http import FD_RESERVE, Limits, Reports, connection_cap, serve
from runner.service._journal import Journal, open_journal
from runner.service._prometheus import PrometheusTee
from runner.service._server import make_app
from runner.service._worker import Worker

if TYPE_CHECKING:
    from runner._api import Runner

#: Longest pause between two retention purges, in seconds.
MAX_PURGE_INTERVAL: Final = 3600.0
#: The highest TCP port (``worker.port`` is checked against it by the config).
MAX_PORT: Final = 65535


def cmd_worker(args: argparse.Namespace) -> int:
    """Serve until signalled; 0 after a graceful drain, 130 after a forced stop."""
    from runner.config._load import discover_config

    if args.port is not None and not 0 <= args.port <= MAX_PORT:
        raise UsageError(
            f"--port {args.port} is not a TCP port: give 0-{MAX_PORT} (0 picks a free one)"
        )
    config = discover_config(args.config, notice=notice)
    refuse_stranded(config)
    host = args.host or config.worker.host
    port = config.worker.port if args.port is None else args.port
    check_bind(host, config)
    if not config.cluster.enabled:
        # In cluster mode events go to the cluster database, not metrics.path.
        check_store(config.metrics)
    service = Service(config, host, port, stderr=sys.stderr)
    try:
        anyio.run(service.main)
    except BaseExceptionGroup as group:
        # A start-time refusal inside a task group: one clear message, exit 2.
        usage, _ = group.split(UsageError)
        if usage is None:
            raise
        raise _first(usage) from None
    return EXIT_INTERRUPTED if service.forced else EXIT_OK


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, config: Config) -> None:
    """Refuse to listen beyond loopback without ``worker.auth_token``."""
    if not is_loopback(host) and not config.worker.auth_token:
        raise UsageError(
            f"refusing to listen on {host} without a token: anyone who can reach it could run"
            " tasks on your providers. Set worker.auth_token (for example"
            " auth_token: ${RUNNER_TOKEN}) or bind 127.0.0.1"
        )


class Service:
    """One run of the worker process: everything it opens, in order, and its signals."""

    def __init__(self, config: Config, host: str, port: int, *, stderr: TextIO) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.stderr = stderr
        #: True when a second signal cut the drain short.
        self.forced = False
        self._stop = anyio.Event()

    def say(self, text: str) -> None:
        print(f"runner worker: {text}", file=self.stderr, flush=True)

    def notice(self, level: str, message: str) -> None:
        """The metrics writer's spill and loss notices."""
        self.say(f"{level}: {message}")

    async def main(self) -> None:
        if self.config.cluster.enabled:
            await self._main_cluster()
            return
        from runner._api import Runner

        wc = self.config.worker
        async with open_journal(wc.journal) as journal, anyio.create_task_group() as outer:
            purged = await journal.purge(wc.retention)
            if purged:
                self.say(f"removed {purged} results older than worker.retention")
            outer.start_soon(self._watch_signals, outer.cancel_scope)
            outer.start_soon(self._purge, journal, wc.retention)
            async with open_metrics_writer(self.config.metrics, notify=self.notice) as sink:
                tee = PrometheusTee(sink)
                # The worker first, so the Runner gets its observer when made.
                worker = Worker(
                    journal,
                    queue_size=wc.queue_size,
                    before_finish=tee.flush,
                    report=self.say,
                )
                runner = Runner.from_config(
                    self.config,
                    metrics=tee,
                    observer=worker.observe,
                    on_notice=lambda n: self.say(notice_line(n)),
                )
                async with runner:
                    await self._serve(
                        runner, worker, lambda n: f"journal {wc.journal}, {n} tasks resumed", tee
                    )
            outer.cancel_scope.cancel()

    async def _main_cluster(self) -> None:
        """Cluster mode: queue, journal, limits and metrics in PostgreSQL (docs/cluster.md)."""
        from runner._api import Runner
        from runner.cluster._limits import SharedLimits
        from runner.cluster._metrics import PgEventStore
        from runner.cluster._pool import open_database
        from runner.cluster._queue import Queue
        from runner.cluster._schema import migrate
        from runner.metrics._jsonl import JsonlStore
        from runner.metrics._store import spill_path
        from runner.metrics._writer import NullSink, open_event_writer
        from runner.service._cluster import ClusterWorker, cancelled_result, new_worker_id

        config = self.config
        cc = config.cluster
        url = cc.database or ""
        worker_id = new_worker_id()
        # Connections: the Runner's attempts (shared limits), the finisher, the
        # heartbeat, the sweep and the HTTP handlers share one pool.
        size = min(max(4, config.concurrency // 2), 32)
        async with (
            open_database(url, min_size=2, max_size=size, notice=self.say) as db,
            anyio.create_task_group() as outer,
        ):
            await migrate(db)
            queue = Queue(db, worker_id=worker_id, lease=cc.lease, cancelled=cancelled_result)
            purged = await queue.purge(config.worker.retention)
            if purged:
                self.say(f"removed {purged} results older than worker.retention")
            outer.start_soon(self._watch_signals, outer.cancel_scope)
            outer.start_soon(self._purge, queue, config.worker.retention)
            limits = None
            if cc.shared_limits:
                limits = SharedLimits(
                    db,
                    config.providers,
                    worker_id=worker_id,
                    lease=cc.lease,
                    cooldown=config.cooldown.seconds,
                    failures=config.cooldown.failures,
                )
                await outer.start(limits.run)
            async with AsyncExitStack() as stack:
                if config.metrics.store == "none":
                    sink: MetricsSink = NullSink()
                else:
                    spill = JsonlStore(spill_path(config.metrics.path))
                    sink = await stack.enter_async_context(
                        open_event_writer(
                            PgEventStore(db),
                            spill=spill,
                            notify=self.notice,
                            import_hint=f"python -m runner metrics migrate {spill.name}"
                            " --config CONFIG (with this cluster section)",
                        )
                    )
                tee = PrometheusTee(sink)
                # The worker first, so the Runner gets its observer when made.
                worker = ClusterWorker(
                    queue,
                    queue_size=config.worker.queue_size,
                    concurrency=config.concurrency,
                    prefetch=max(1, config.concurrency // 2),
                    before_finish=tee.flush,
                )
                runner = Runner.from_config(
                    config,
                    metrics=tee,
                    observer=worker.observe,
                    on_notice=lambda n: self.say(notice_line(n)),
                    limits=limits,
                )
                async with runner:
                    channels = worker.channels()
                    reconnects = [worker.on_reconnect]
                    if limits is not None:
                        channels.update(limits.channels())
                        reconnects.append(limits.on_reconnect)
                    await outer.start(
                        db.listen, channels, lambda: [f() for f in reconnects] and None
                    )
                    await self._serve(
                        runner,
                        worker,
                        lambda _: f"cluster database {db.name}, worker {worker_id}",
                        tee,
                    )
            outer.cancel_scope.cancel()

    async def _serve(
        self,
        runner: Runner,
        worker: Worker | ClusterWorker,
        where: Callable[[int], str],
        tee: PrometheusTee,
    ) -> None:
        wc = self.config.worker
        workflows = {"default", *self.config.workflows}
        reports = Reports(self.say)
        cap = connection_cap(wc.max_connections, reserve=FD_RESERVE + self.config.concurrency)
        if cap < wc.max_connections:
            self.say(
                f"serving at most {cap} connections, not worker.max_connections"
                f" ({wc.max_connections}): the open-files limit is lower (raise it with ulimit -n)"
            )
        limits = Limits(
            head_timeout=wc.head_timeout, body_timeout=wc.body_timeout, max_connections=cap
        )
        app = make_app(
            worker,
            tee,
            known_workflows=workflows,
            auth_token=wc.auth_token,
            max_request_bytes=wc.max_request_bytes,
            reports=reports,
            body_timeout=limits.body_timeout,
        )
        async with anyio.create_task_group() as tg:
            resumed = await tg.start(worker.run, runner)
            async with serve(app, self.host, self.port, limits=limits, reports=reports) as url:
                self.say(f"listening on {url} ({where(resumed)})")
                await self._stop.wait()
                worker.begin_drain()
                grace = self.config.grace_period
                self.say(
                    f"draining: finishing running tasks (up to {grace:g} s); again to stop at once"
                )
                await runner.shutdown(grace)
                if isinstance(worker, ClusterWorker):
                    released = await worker.release_unfinished()
                    if released:
                        self.say(f"gave {released} unfinished tasks back to the cluster")
                # worker.run returns (ending this task group) once every
                # task the Runner gave back is journaled.
                worker.close()
        if isinstance(worker, ClusterWorker):
            self.say("stopped")
            return
        if worker.unwritten:
            self.say(
                f"{worker.unwritten} finished results could not be journaled: those tasks run"
                " again on the next start"
            )
        self.say(
            f"stopped; {worker.unfinished} unfinished tasks stay in the journal for the next start"
        )

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if not self._stop.is_set():
                    self._stop.set()
                    continue
                self.forced = True
                self.say("stopping at once; unfinished tasks stay in the journal")
                scope.cancel()
                return

    async def _purge(self, journal: Journal, retention: float) -> None:
        """Purge expired results now and then: the same for both backends."""
        interval = min(max(retention / 10, 1.0), MAX_PURGE_INTERVAL)
        while True:
            await anyio.sleep(interval)
            await journal.purge(retention)


def _first(group: BaseExceptionGroup[UsageError]) -> UsageError:
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error
