"""Tables on a terminal of 80 and 120 columns: ids and roles whole, nothing wider.

Each command's rich output is rendered into a rich Console of a fixed width
(as a terminal of that size would show it); every provider id and role name
must appear whole, and no line may be wider than the terminal.  The
``submit`` summary has the same test in test_submit.py.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from runner.cli._config import _print_rich as print_config
from runner.cli._metrics import print_rich as print_metrics
from runner.cli._providers import CheckResult, render
from runner.cli._tables import Column, print_table
from runner.config._load import discover
from runner.metrics import MetricEvent
from runner.metrics._events import ts_to_us
from runner.metrics._query import Filters, Grouping, summarize_events

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = [80, 120]
PROVIDERS = ("sim-fast", "sim-flaky", "sim-careful")
ROLES = ("clarifier", "planner", "coder", "reviewer", "translator")


def _console(width: int) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=width, highlight=False), buffer


def _lines(buffer: io.StringIO, width: int) -> list[str]:
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= width
    return lines


def _shows_whole(lines: list[str], *words: str) -> None:
    cells = {cell for line in lines for cell in line.split()}
    for word in words:
        assert word in cells, f"{word!r} is cut or missing"


@pytest.mark.parametrize("width", WIDTHS)
def test_metrics_summary_keeps_every_provider_and_role(width: int) -> None:
    """Three ``sim-*`` providers by five roles: each id and role whole (they were ``sim-…``)."""
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        MetricEvent(
            event_id=f"{p}-{r}-{n}",
            task_id=f"t{n}",
            provider=p,
            role=r,
            model="m",
            attempt=1,
            ts_us=ts_to_us(ts),
            latency_ms=12.5 + n,
            success=n % 4 != 0,
            error_code=None if n % 4 else "rate_limited",
            input_tokens=1_234,
            output_tokens=5_678,
            cost_usd=0.001311,
        )
        for p in PROVIDERS
        for r in ROLES
        for n in range(8)
    ]
    rows = summarize_events(events, Filters(), Grouping(provider=True, role=True))
    console, buffer = _console(width)
    print_metrics(rows, Grouping(), console)
    lines = _lines(buffer, width)
    _shows_whole(lines, *PROVIDERS, *ROLES, "rate_limited=2")
    # Each provider-role pair is one row, not a wrapped or cut cell.
    for p in PROVIDERS:
        for r in ROLES:
            assert any(line.split()[:2] == [p, r] for line in lines), (p, r)


@pytest.mark.parametrize("width", WIDTHS)
def test_config_check_keeps_ids_roles_and_key_status(
    width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``config check``: provider ids, roles and ``missing (VAR)`` whole at either width."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    console, buffer = _console(width)
    print_config(discover(str(ROOT / "config" / "multi-provider.yaml")), buffer, console=console)
    lines = _lines(buffer, width)
    _shows_whole(
        lines,
        "openai-gpt4o",
        "claude-sonnet",
        "gemini-flash",
        "coder",
        "reviewer",
        "planner",
        "clarifier",
    )
    text = " ".join(lines)
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        assert f"({name})" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_providers_check_keeps_ids_and_outcomes(width: int) -> None:
    """``providers check``: ids and outcomes whole; a long detail wraps instead."""
    results = [
        CheckResult(
            provider="openai-gpt4o-mini-eu-west",
            type="openai",
            outcome="auth_failed",
            detail="HTTP 401 invalid_api_key: Incorrect API key provided: sk-***. You can find"
            " your API key at https://platform.openai.com/account/api-keys.",
            elapsed=0.31,
        ),
        CheckResult(
            provider="claude-sonnet",
            type="anthropic",
            outcome="missing_key",
            detail="ANTHROPIC_API_KEY is not set; not called",
            elapsed=0.0,
        ),
        CheckResult(provider="sim", type="simulated", outcome="ok", detail="ok", elapsed=0.0),
    ]
    console, buffer = _console(width)
    render(results, buffer, console=console)
    lines = _lines(buffer, width)
    _shows_whole(lines, "openai-gpt4o-mini-eu-west", "claude-sonnet", "auth_failed", "missing_key")
    # The detail wraps (folding the URL if need be) but loses no character.
    detail = "".join(line[line.index("HTTP") :] if "HTTP" in line else line for line in lines)
    assert "platform.openai.com/account/api-keys." in detail.replace(" ", "")


def test_a_table_too_wide_for_any_column_set_turns_vertical() -> None:
    """When even the key columns do not fit, each row becomes a block; nothing is cut."""
    columns = [Column("provider", key=True), Column("role", key=True), Column("n", drop=1)]
    rows = [["a-provider-with-a-very-long-identifier", "a-role-with-a-long-name", "7"]]
    console, buffer = _console(40)
    print_table(console, columns, rows)
    assert buffer.getvalue().splitlines() == [
        "a-provider-with-a-very-long-identifier",
        "a-role-with-a-long-name",
        "  n 7",
    ]


def test_lesser_columns_give_way_first() -> None:
    """Too narrow for all: the highest drop rank goes first, key columns stay."""
    columns = [
        Column("id", key=True),
        Column("kept"),
        Column("second", drop=1),
        Column("first", drop=2),
    ]
    rows = [["provider-x", "1" * 10, "2" * 10, "3" * 10]]
    console, buffer = _console(45)
    print_table(console, columns, [[Text(c) if i else c for i, c in enumerate(rows[0])]])
    header = buffer.getvalue().splitlines()[0].split()
    assert header == ["id", "kept", "second"]
