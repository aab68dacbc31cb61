"""The worker's ``/metrics`` page: Prometheus text exposition format 0.0.4.

:class:`PrometheusTee` sits in front of the metrics writer's sink: every
metric event updates these counters and then goes on to the writer.  Because
both see the very same events, ``/metrics`` agrees with ``metrics summary``
over the events this process wrote, by construction.

Metric names (labels in braces):

* ``runner_provider_requests_total{provider,role}``: provider attempts.
* ``runner_provider_failures_total{provider,role,code}``: failed attempts by error code.
* ``runner_provider_latency_seconds{provider,role}``: histogram of attempt latency.
* ``runner_provider_tokens_total{provider,role,direction}``: ``input``/``output`` tokens.
* ``runner_provider_cost_usd_total{provider,role}``: cost in USD.
* ``runner_queue_depth``: accepted tasks not yet running.
* ``runner_tasks_in_flight``: tasks running or waiting to retry.
* ``runner_tasks_finished_total{status}``: terminal results journaled by this process.

The format is written by hand (it is small and stable); the tests parse the
page with ``prometheus_client``'s own parser.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import Final

from runner.metrics._events import MetricEvent
from runner.metrics._writer import FlushableSink, MetricsSink

#: Upper bounds, in seconds, of the latency histogram's buckets (``+Inf`` is implicit).
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class _Series:
    """The counters of one (provider, role) pair."""

    __slots__ = (
        "buckets",
        "cost",
        "failures",
        "input_tokens",
        "latency_sum",
        "output_tokens",
        "requests",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.failures: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0


class PrometheusTee:
    """A :class:`MetricsSink` that counts each event, then passes it to ``inner``."""

    def __init__(self, inner: MetricsSink) -> None:
        self._inner = inner
        self._series: dict[tuple[str, str], _Series] = {}

    async def send(self, event: MetricEvent) -> None:
        self.observe(event)
        await self._inner.send(event)

    async def flush(self) -> None:
        """The inner sink's flush: every event sent so far is stored when it returns."""
        if isinstance(self._inner, FlushableSink):
            await self._inner.flush()

    def observe(self, event: MetricEvent) -> None:
        """Count one event (without forwarding it)."""
        key = (event.provider, event.role)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        series.requests += 1
        if not event.success:
            code = event.error_code or "unknown"
            series.failures[code] = series.failures.get(code, 0) + 1
        seconds = event.latency_ms / 1000.0
        series.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        series.latency_sum += seconds
        series.input_tokens += event.input_tokens
        series.output_tokens += event.output_tokens
        series.cost += event.cost_usd

    def render(self, gauges: Mapping[str, float], finished: Mapping[str, int]) -> str:
        """The whole page: provider series, then the worker's gauges and results."""
        out: list[str] = []
        items = sorted(self._series.items())

        def family(name: str, kind: str, text: str, rows: Callable[[], None]) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")
            rows()

        def requests() -> None:
            for (provider, role), s in items:
                out.append(
                    _line(
                        "runner_provider_requests_total", s.requests, provider=provider, role=role
                    )
                )

        def failures() -> None:
            for (provider, role), s in items:
                for code, n in sorted(s.failures.items()):
                    out.append(
                        _line(
                            "runner_provider_failures_total",
                            n,
                            provider=provider,
                            role=role,
                            code=code,
                        )
                    )

        def latency() -> None:
            name = "runner_provider_latency_seconds"
            for (provider, role), s in items:
                running = 0
                for bound, n in zip((*LATENCY_BUCKETS, math.inf), s.buckets, strict=True):
                    running += n
                    le = "+Inf" if bound == math.inf else repr(bound)
                    out.append(
                        _line(f"{name}_bucket", running, provider=provider, role=role, le=le)
                    )
                out.append(_line(f"{name}_sum", s.latency_sum, provider=provider, role=role))
                out.append(_line(f"{name}_count", s.requests, provider=provider, role=role))

        def tokens() -> None:
            for (provider, role), s in items:
                for direction, n in (("input", s.input_tokens), ("output", s.output_tokens)):
                    out.append(
                        _line(
                            "runner_provider_tokens_total",
                            n,
                            provider=provider,
                            role=role,
                            direction=direction,
                        )
                    )

        def cost() -> None:
            for (provider, role), s in items:
                out.append(
                    _line("runner_provider_cost_usd_total", s.cost, provider=provider, role=role)
                )

        family("runner_provider_requests_total", "counter", "Provider attempts.", requests)
        family(
            "runner_provider_failures_total",
            "counter",
            "Failed provider attempts by error code.",
            failures,
        )
        family("runner_provider_latency_seconds", "histogram", "Provider attempt latency.", latency)
        family(
            "runner_provider_tokens_total",
            "counter",
            "Tokens by direction (input, output).",
            tokens,
        )
        family("runner_provider_cost_usd_total", "counter", "Cost in US dollars.", cost)
        for name, value in sorted(gauges.items()):
            out.append(f"# HELP {name} {_GAUGE_HELP.get(name, name)}")
            out.append(f"# TYPE {name} gauge")
            out.append(_line(name, value))
        out.append("# HELP runner_tasks_finished_total Terminal results journaled by this process.")
        out.append("# TYPE runner_tasks_finished_total counter")
        for status, n in sorted(finished.items()):
            out.append(_line("runner_tasks_finished_total", n, status=status))
        return "\n".join(out) + "\n"


_GAUGE_HELP: Final = {
    "runner_queue_depth": "Accepted tasks not yet running.",
    "runner_tasks_in_flight": "Tasks running or waiting to retry.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _line(name: str, value: float, **labels: str) -> str:
    # 12 significant digits: sums of float costs carry noise in the last digits
    # (0.0013109999999999999 for 0.001311), which only misleads a reader.
    text = f"{value:.12g}" if isinstance(value, float) else str(value)
    if not labels:
        return f"{name} {text}"
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {text}"
