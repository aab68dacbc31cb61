"""``python -m runner providers check``: is every provider's key good?

Each provider's credentials are checked without generating text (the
models-list endpoints; the simulated provider has nothing to check), all in
parallel, each under the same deadline, so the whole check takes about as
long as the slowest provider.  Every outcome is one of:

==============  ==========================================================
``ok``          the provider accepted the key
``auth_failed`` 401, 403, or Gemini's 400 ``API_KEY_INVALID``
``unreachable`` connection refused, reset, or the host name did not resolve
``timeout``     no response within ``--timeout`` (or the provider's own, if shorter)
``missing_key`` its key variable is not set: not called at all
``error``       anything else; the detail starts with the error code
==============  ==========================================================

Details are scrubbed of every configured key before they are shown.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Literal, TextIO

import anyio
from msgspec import Struct

from runner._errors import ProviderError, UsageError
from runner.cli._tables import Column, print_table
from runner.config._model import Config, ProviderConfig
from workers._secrets import scrub
from workers._settings import missing_key

if TYPE_CHECKING:
    from rich.console import Console

Outcome = Literal["ok", "auth_failed", "unreachable", "timeout", "missing_key", "error"]

_OUTCOMES: Final[dict[str, Outcome]] = {
    "auth_failed": "auth_failed",
    "permission_denied": "auth_failed",
    "connection_error": "unreachable",
    "timeout": "timeout",
}
# Time before detail: details vary in length, so the times stay in one column.
_HEADERS: Final = ("PROVIDER", "TYPE", "OUTCOME", "TIME", "DETAIL")


class CheckResult(Struct, frozen=True, kw_only=True):
    """One provider's check: its outcome, a scrubbed detail and the seconds it took."""

    provider: str
    type: str
    outcome: Outcome
    detail: str
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


async def check_providers(
    config: Config,
    timeout: float,  # noqa: ASYNC109 - each provider's own deadline, reported as its outcome
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> list[CheckResult]:
    """Check every provider of ``config`` in parallel; results in config order.

    A caller's cancel scope could not do this: a provider that runs out of
    time is a ``timeout`` row while the others still report.
    """
    results: list[CheckResult | None] = [None] * len(config.providers)

    async def run(index: int, provider: ProviderConfig) -> None:
        results[index] = await check_provider(provider, timeout, clock=clock)

    async with anyio.create_task_group() as tg:
        for index, provider in enumerate(config.providers):
            tg.start_soon(run, index, provider)
    return [r for r in results if r is not None]


async def check_provider(
    config: ProviderConfig,
    timeout: float,  # noqa: ASYNC109 - see check_providers
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> CheckResult:
    """Check one provider's credentials within ``timeout`` seconds; never raises.

    The provider's own ``timeout`` applies too, as it does to every attempt:
    the deadline is the shorter of the two, and it is the only one (adapters
    set none of their own), so the detail always names the one that ran out.
    """
    from workers._factory import open_provider

    start = clock()
    outcome: Outcome
    variable = missing_key(config)
    if variable is not None:
        return CheckResult(
            provider=config.id,
            type=config.type,
            outcome="missing_key",
            detail=f"{variable} is not set; not called",
            elapsed=0.0,
        )
    try:
        provider = open_provider(config)
    except Exception as exc:  # a config the adapter refuses is a failed check, not a crash
        outcome, detail = "error", f"cannot open the provider: {exc}"
    else:
        limit = min(timeout, config.timeout)
        try:
            with anyio.move_on_after(limit) as scope:
                await provider.check_credentials()
            if scope.cancelled_caught:
                outcome, detail = "timeout", f"no response within {limit:g} s"
            else:
                outcome = "ok"
                detail = "nothing to check" if config.type == "simulated" else "key accepted"
        except ProviderError as exc:
            outcome = _OUTCOMES.get(exc.code, "error")
            detail = exc.message if outcome != "error" else f"{exc.code}: {exc.message}"
        except Exception as exc:  # one broken adapter must not hide the others' results
            outcome, detail = "error", f"{type(exc).__name__}: {exc}"
        finally:
            with anyio.CancelScope(shield=True):
                await provider.aclose()
    return CheckResult(
        provider=config.id,
        type=config.type,
        outcome=outcome,
        detail=scrub(detail, [config.api_key]),
        elapsed=clock() - start,
    )


_COLUMNS: Final = (
    Column("PROVIDER", key=True),
    Column("TYPE", drop=2),
    Column("OUTCOME", key=True),
    Column("TIME", justify="right", drop=1),
    Column("DETAIL", wrap=True),
)


def render(
    results: Sequence[CheckResult],
    out: TextIO,
    *,
    rich: bool | None = None,
    console: Console | None = None,
) -> None:
    """Print the results table: rich on a terminal, plain aligned text otherwise."""
    use_rich = console is not None or (out.isatty() if rich is None else rich)
    rows: list[tuple[str, ...]] = [
        (r.provider, r.type, r.outcome, f"{r.elapsed:.2f}s", r.detail) for r in results
    ]
    summary = _summary(results)
    if use_rich:
        from rich.console import Console
        from rich.text import Text

        console = console or Console(file=out, highlight=False)
        print_table(
            console,
            _COLUMNS,
            [
                [
                    Text(cell, style=("green" if row[2] == "ok" else "red") if i == 2 else "")
                    for i, cell in enumerate(row)
                ]
                for row in rows
            ],
        )
        console.print(Text(summary))
        return
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(_HEADERS)]
    for row in [_HEADERS, *rows]:
        cells = [
            *(c.ljust(w) for c, w in zip(row[:3], widths, strict=False)),
            row[3].rjust(widths[3]),
        ]
        print("  ".join([*cells, row[4]]).rstrip(), file=out)
    print(summary, file=out)


def _summary(results: Sequence[CheckResult]) -> str:
    """``all 3 providers ok``, or how many failed and how many were not called."""
    total = len(results)
    failed = sum(not r.ok for r in results)
    if not failed:
        return f"all {total} {'provider' if total == 1 else 'providers'} ok"
    missing = sum(r.outcome == "missing_key" for r in results)
    called = failed - missing
    parts = []
    if called:
        parts.append(f"{called} of {total} {'provider' if total == 1 else 'providers'} failed")
    if missing:
        parts.append(
            f"{missing} {'has' if missing == 1 else 'have'} no key"
            if called
            else f"{missing} of {total} {'provider has' if total == 1 else 'providers have'} no key"
        )
    return ", ".join(parts)


def cmd_providers_check(args: argparse.Namespace) -> int:
    """``providers check [--config P] [--timeout S]``: exit 0 if every check passed, else 1."""
    from runner.cli._main import notice
    from runner.config._load import discover_config

    timeout: float = args.timeout
    if not timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    config = discover_config(args.config, notice=notice)
    results = anyio.run(check_providers, config, timeout)
    render(results, sys.stdout)
    return 0 if all(r.ok for r in results) else 1
