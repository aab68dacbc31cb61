"""What other tools read: CSV booleans as true/false, Prometheus values without float noise."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from runner.cli._metrics import write_events
from runner.metrics import MetricEvent
from runner.metrics._events import ts_to_us
from runner.service._prometheus import PrometheusTee


def _event(n: int, *, success: bool, cost: float = 0.000437) -> MetricEvent:
    return MetricEvent(
        event_id=f"e{n}",
        task_id=f"t{n}",
        provider="sim-a",
        role="coder",
        model="m",
        attempt=1,
        ts_us=ts_to_us(datetime(2026, 1, 1, tzinfo=UTC)),
        latency_ms=12.5,
        success=success,
        error_code=None if success else "rate_limited",
        input_tokens=10,
        output_tokens=5,
        cost_usd=cost,
    )


def test_csv_export_writes_booleans_as_true_and_false() -> None:
    """``metrics export --format csv`` writes success as true/false, as JSON does."""
    out = io.StringIO()
    write_events([_event(1, success=True), _event(2, success=False)], "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [row["success"] for row in rows] == ["true", "false"]


class _NoSink:
    async def send(self, event: MetricEvent) -> None:  # pragma: no cover - not forwarded here
        return None


def test_prometheus_values_carry_no_float_noise() -> None:
    """Six events of $0.000437 are 0.002622 on /metrics, not 0.0026219999999999998."""
    tee = PrometheusTee(_NoSink())
    for n in range(6):
        tee.observe(_event(n, success=True))
    page = tee.render({}, {})
    line = next(x for x in page.splitlines() if x.startswith("runner_provider_cost_usd_total{"))
    assert line == 'runner_provider_cost_usd_total{provider="sim-a",role="coder"} 0.002622'
    assert 'runner_provider_latency_seconds_sum{provider="sim-a",role="coder"} 0.075' in page
    # Still valid exposition text.
    assert {f.name for f in text_string_to_metric_families(page)} >= {"runner_provider_cost_usd"}
