"""``python -m runner config check [PATH]``: validate a config and show what it resolves to.

On success it prints, per role, the chain of providers tried in order with the
parameters each runs with, and per provider its model, endpoint, limits and
whether its key is set, then exits 0.  A bad config raises
:class:`~runner._errors.ConfigError`, which ``runner.cli._main.main`` prints (every
problem) with exit code 2.  Nothing here ever prints a key's value: a key is
shown as ``set``, ``missing`` or ``not needed`` with its variable's name.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, TextIO

from runner._errors import UsageError
from runner._registry import Registry, disabled_providers, stranded_message, stranded_roles
from runner.cli._main import notice
from runner.cli._tables import Column, print_table
from runner.config._load import MIGRATION_DOC, Loaded, discover
from runner.config._model import Config, ProviderConfig
from workers._parameters import Parameters
from workers._secrets import Secret, mask_url, scrub
from workers._settings import missing_key

if TYPE_CHECKING:
    from rich.console import Console

Table = tuple[Sequence[str], list[list[str]]]


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the config at ``args.path`` (or the discovered one) and print it resolved.

    A provider whose key variable is not set does not make the file invalid
    (the others still run), so the check passes and says which providers
    cannot run; with ``--strict`` that is an error (exit 2).
    """
    loaded = discover(getattr(args, "path", None), notice=notice)
    out = sys.stdout
    if out.isatty():
        _print_rich(loaded, out)
    else:
        out.write(render_plain(loaded))
    disabled = disabled_providers(loaded.config)
    if disabled and getattr(args, "strict", False):
        raise UsageError(f"--strict: {cannot_run(disabled)}")
    return 0


def key_status(provider: ProviderConfig, variable: str | None) -> str:
    """``set (VAR)``, ``missing (VAR)`` or ``not needed``; never the key itself."""
    missing = missing_key(provider)
    if missing is not None:
        return f"missing ({missing})"
    if provider.api_key:
        return f"set ({variable or 'in the file'})"
    # A simulated provider, or a server of the user's own (base_url) without a key.
    return "not needed"


def cannot_run(disabled: Mapping[str, str]) -> str:
    """One line: the providers left out for a missing key, and each one's variable."""
    count = len(disabled)
    named = ", ".join(f"{pid} ({variable} not set)" for pid, variable in disabled.items())
    return f"{count} {'provider cannot' if count == 1 else 'providers cannot'} run: {named}"


def availability_lines(config: Config) -> list[str]:
    """Which providers cannot run for a missing key, and which roles that leaves empty."""
    disabled = disabled_providers(config)
    if not disabled:
        return []
    lines = [cannot_run(disabled)]
    stranded = stranded_roles(config)
    if stranded:
        lines.append(f"submit and worker refuse to start: {stranded_message(config, stranded)}")
    return lines


def _seconds(value: float) -> str:
    return f"{value * 1000:g}ms" if 0 < value < 1 else f"{value:g}s"


def _parameters(parameters: Parameters) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in parameters.as_dict().items())


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(repr(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def provider_table(loaded: Loaded) -> Table:
    """One row per provider: what it is, where it connects and whether its key is set."""
    headers = ("ID", "TYPE", "MODEL", "BASE_URL", "TIMEOUT", "MAX_CONCURRENCY", "API_KEY")
    rows = [
        [
            p.id,
            p.type,
            p.model,
            mask_url(p.base_url) if p.base_url else "(default)",
            _seconds(p.timeout),
            str(p.max_concurrency),
            key_status(p, loaded.key_variables.get(p.id)),
        ]
        for p in loaded.config.providers
    ]
    return headers, rows


def role_table(config: Config) -> Table:
    """One row per provider of each role's chain, in the order they are tried.

    A provider without its key is shown as ``(no key)``: runs skip it.
    """
    registry = Registry.from_config(config, keep_disabled=True)
    disabled = disabled_providers(config)
    rows: list[list[str]] = []
    chains = [(role, registry.chain(role)) for role in registry.roles()]
    chains.append(("(any other role)", registry.chain(None)))
    for role, chain in chains:
        for i, route in enumerate(chain.routes):
            pid = route.provider.id
            rows.append(
                [
                    role if i == 0 else "",
                    str(i + 1),
                    f"{pid} (no key)" if pid in disabled else pid,
                    _parameters(route.parameters) or "(provider defaults)",
                ]
            )
    return ("ROLE", "#", "PROVIDER", "PARAMETERS"), rows


def settings_lines(config: Config) -> list[str]:
    """The run-wide settings, one line each."""
    r, c = config.retry, config.cooldown
    lines = [
        f"default_provider: {config.default_provider}",
        f"concurrency: {config.concurrency} tasks in flight; "
        f"grace period {_seconds(config.grace_period)}",
        f"retry: {r.max_attempts} attempts per provider, backoff {_seconds(r.initial_delay)}"
        f" to {_seconds(r.max_delay)} (jitter {_seconds(r.jitter)}), "
        f"retry-after honoured up to {_seconds(r.max_retry_after)}",
        f"cooldown: {c.failures} consecutive failures -> {_seconds(c.seconds)} out of selection",
        _metrics_line(config),
        f"logging: {config.logging.level}, {config.logging.format}",
        *_cluster_line(config),
    ]
    for name, workflow in config.workflows.items():
        stages = " -> ".join(f"{s.name} ({s.role})" for s in workflow.stages)
        lines.append(f"workflow {name}: {stages}")
    return lines


def migration_note(loaded: Loaded) -> list[str]:
    """How to move a single-provider config to the multi-provider form."""
    if not loaded.single_provider:
        return []
    p = loaded.config.providers[0]
    key = loaded.key_variables.get(p.id)
    return [
        f"note: this file uses the single-provider form (provider: {p.type} at the top level);",
        "  it still works, with one provider for every role. To give roles their own",
        "  providers and fallbacks, move it to the multi-provider form:",
        f"    providers: [{{id: {p.id}, type: {p.type}, model: {p.model}"
        + (f", api_key: ${{{key}}}" if key else "")
        + "}]",
        f"    default_provider: {p.id}",
        f"  then add roles: and more providers. Step by step: {MIGRATION_DOC}",
    ]


def _aligned(table: Table) -> list[str]:
    headers, rows = table
    widths = [max(len(r[i]) for r in [list(headers), *rows]) for i in range(len(headers))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *rows]
    ]


def render_plain(loaded: Loaded) -> str:
    """The whole report as aligned plain text (what pipes and tests see)."""
    config = loaded.config
    lines = [_headline(loaded), ""]
    lines += ["providers:", *_aligned(provider_table(loaded)), ""]
    lines += ["roles (providers tried in order):", *_aligned(role_table(config)), ""]
    lines += settings_lines(config)
    lines += availability_lines(config)
    note = migration_note(loaded)
    if note:
        lines += ["", *note]
    # Keys are only ever shown as a status, but a key pasted into another field
    # (a model name, a URL) would otherwise be printed as written.
    return scrub("\n".join(lines) + "\n", _secrets(config))


def _headline(loaded: Loaded) -> str:
    config = loaded.config
    form = "single-provider form" if loaded.single_provider else "multi-provider form"
    return f"config: {config.source} (version {config.version}, {form}): valid"


def _secrets(config: Config) -> list[Secret | None]:
    return [*(p.api_key for p in config.providers), config.worker.auth_token]


#: The provider table's columns on a terminal: what gives way first when it is narrow.
_PROVIDER_COLUMNS: Final = (
    Column("ID", key=True),
    Column("TYPE", drop=3),
    Column("MODEL", wrap=True),
    Column("BASE_URL", wrap=True, drop=4),
    Column("TIMEOUT", justify="right", drop=2),
    Column("MAX_CONCURRENCY", justify="right", drop=5),
    # Wrapped, never cut: "missing (GEMINI_A…" would hide the answer.
    Column("API_KEY", wrap=True),
)
_ROLE_COLUMNS: Final = (
    Column("ROLE", key=True),
    Column("#", justify="right", drop=1),
    Column("PROVIDER", key=True),
    Column("PARAMETERS", wrap=True),
)


def _print_rich(loaded: Loaded, out: TextIO, *, console: Console | None = None) -> None:
    from rich.console import Console
    from rich.text import Text

    config = loaded.config
    secrets = _secrets(config)
    console = console or Console(file=out, highlight=False)
    console.print(Text(_headline(loaded)))
    for title, columns, (_, rows) in (
        ("providers", _PROVIDER_COLUMNS, provider_table(loaded)),
        ("roles (providers tried in order)", _ROLE_COLUMNS, role_table(config)),
    ):
        console.print()
        print_table(
            console, columns, [[scrub(cell, secrets) for cell in row] for row in rows], title=title
        )
    console.print()
    for line in [*settings_lines(config), *availability_lines(config)]:
        console.print(Text(scrub(line, secrets)))
    note = migration_note(loaded)
    if note:
        console.print()
        for line in note:
            console.print(Text(scrub(line, secrets)))


def _cluster_line(config: Config) -> list[str]:
    """The cluster section in one line (its URL without the password), if it is on."""
    cluster = config.cluster
    if not cluster.database:
        return []
    from runner.cluster._pool import redact

    limits = "shared limits" if cluster.shared_limits else "limits per worker"
    return [f"cluster: {redact(cluster.database)}, lease {_seconds(cluster.lease)}, {limits}"]


def _metrics_line(config: Config) -> str:
    m = config.metrics
    if m.store == "none":
        return "metrics: none"
    if config.cluster.database:
        return f"metrics: the cluster database (spill file {m.path}.spill.jsonl)"
    return f"metrics: {m.store} at {m.path}"
