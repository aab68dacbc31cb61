"""``python -m runner``: argument parsing and the one place exit codes are decided.

Each subcommand's work lives in its own module and is imported only when that
subcommand runs, so ``config check`` does not pay for aiohttp or SQLite.
Exit codes: 0 all done; 1 a task failed or was rejected, or a check failed;
2 usage or config error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import cast

import stamina.instrumentation

from runner._errors import ConfigError, UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: 128 + SIGPIPE: what a shell reports for a command whose reader went away.
EXIT_BROKEN_PIPE = 141

Command = Callable[[argparse.Namespace], int]


def notice(text: str) -> None:
    """A one-line notice on stderr (the config in use was not named, say)."""
    print(text, file=sys.stderr)


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="P", help="config file (else $RUNNER_CONFIG, ./runner.yaml)")


def _add_filters(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument(
        "--db", metavar="P", help="metrics database or postgresql:// URL (default: the config's)"
    )
    p.add_argument("--provider", metavar="ID", help="only this provider")
    p.add_argument("--role", metavar="R", help="only this role")
    p.add_argument(
        "--tag",
        metavar="T",
        action="append",
        default=[],
        help="only events of tasks carrying this tag (repeat: every tag given)",
    )
    p.add_argument("--since", metavar="T", help="ISO 8601 time or a span such as 15m, 2h, 7d")
    p.add_argument("--until", metavar="T", help="ISO 8601 time or a span such as 15m, 2h, 7d")


def program_name() -> str:
    """``runner`` when run as the console script, else ``python -m runner``."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "runner" if invoked in ("runner", "runner.exe") else "python -m runner"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or program_name(),
        description="Run LLM tasks by role across providers, with retries, fallback and metrics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("submit", help="run a JSONL tasks file (locally, or on a worker with --url)")
    p.add_argument(
        "file", metavar="FILE", help="tasks file, one JSON task per line ('-' for stdin)"
    )
    _add_config(p)
    p.add_argument(
        "--out", metavar="P", default="results.jsonl", help="results file, '-' for stdout"
    )
    p.add_argument("--concurrency", metavar="N", type=int, help="tasks in flight at once")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the per-attempt log lines on stderr (above the bar)",
    )
    p.add_argument("--log", metavar="FILE", help="write the per-attempt log lines to FILE")
    p.add_argument("--url", metavar="URL", help="send the tasks to a running worker instead")
    p.add_argument("--token", metavar="T", help="worker bearer token (default: $RUNNER_TOKEN)")
    p.set_defaults(handler="runner.cli._submit:cmd_submit")

    p = sub.add_parser("worker", help="serve the HTTP API until SIGTERM/SIGINT")
    _add_config(p)
    p.add_argument("--host", metavar="H", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", metavar="N", type=int, help="port (default 8787)")
    p.set_defaults(handler="runner.cli._worker:cmd_worker")

    p = sub.add_parser("config", help="config commands")
    csub = p.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    c = csub.add_parser("check", help="validate a config and print the resolved roles")
    c.add_argument("path", metavar="P", nargs="?", help="config file (else discovery)")
    c.add_argument(
        "--strict", action="store_true", help="a provider whose key is not set is an error"
    )
    c.set_defaults(handler="runner.cli._config:cmd_config_check")

    p = sub.add_parser("providers", help="provider commands")
    psub = p.add_subparsers(dest="providers_command", metavar="COMMAND", required=True)
    c = psub.add_parser("check", help="check every provider's credentials in parallel")
    _add_config(c)
    c.add_argument("--timeout", metavar="S", type=float, default=10.0, help="seconds per check")
    c.set_defaults(handler="runner.cli._providers:cmd_providers_check")

    p = sub.add_parser("metrics", help="read and move metric events")
    msub = p.add_subparsers(dest="metrics_command", metavar="COMMAND", required=True)
    c = msub.add_parser("summary", help="per provider and role: requests, latency, tokens, cost")
    _add_filters(c)
    c.add_argument(
        "--group-by",
        metavar="G",
        default="provider,role",
        help="provider, role, tag or several, comma-separated (default provider,role)",
    )
    c.add_argument("--format", choices=["table", "json", "csv"], default="table")
    c.set_defaults(handler="runner.cli._metrics:cmd_summary")
    c = msub.add_parser("export", help="every matching event as csv, json or jsonl")
    _add_filters(c)
    c.add_argument("--format", choices=["csv", "json", "jsonl"], default="jsonl")
    c.add_argument("--output", metavar="P", help="file to write (default stdout)")
    c.set_defaults(handler="runner.cli._metrics:cmd_export")
    c = msub.add_parser(
        "migrate", help="import a JSONL metrics store into SQLite or a cluster database"
    )
    c.add_argument("file", metavar="FILE.jsonl")
    _add_config(c)
    c.add_argument("--db", metavar="P", help="target database (default: the config's)")
    c.set_defaults(handler="runner.cli._metrics:cmd_migrate")
    return parser


def _resolve(spec: str) -> Command:
    module, _, name = spec.partition(":")
    return cast(Command, getattr(importlib.import_module(module), name))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (never raise for bad input)."""
    args = build_parser().parse_args(argv)
    # stamina logs every scheduled retry through structlog's default logger,
    # which prints to stdout, where results may go (--out -).  The metrics
    # writer says itself what its retries came to (a spill), on stderr.
    stamina.instrumentation.set_on_retry_hooks(())
    try:
        return _resolve(args.handler)(args)
    except ConfigError as exc:
        count = len(exc.problems)
        noun = "problem" if count == 1 else "problems"
        print(f"error: the config is not valid ({count} {noun}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem.render()}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (``metrics export | head``): stop
        # quietly.  Python flushes stdout again at exit, which would print a
        # second error, so stdout is pointed at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
