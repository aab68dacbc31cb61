"""The command line: ``python -m benchmarks [--full] [--only CASE ...] [--out PATH]``.

Each case runs in a Python process of its own (``--child``, internal), so no
case inherits another's heap, threads or imports: LiteLLM alone leaves a
heap large enough that the garbage collector, walking it, slowed the next
case measured in the same process by a quarter.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from benchmarks import CASE_MODULES
from benchmarks._harness import (
    Case,
    CaseResult,
    Settings,
    log_to_stderr,
    print_table,
    run_case,
    run_cases,
    write_json,
)
from benchmarks._targets import evaluate_targets, print_targets

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latest.json"


def load_case(name: str) -> Case:
    """The ``CASE`` of a case module (imported only when the case is asked for)."""
    module = importlib.import_module(CASE_MODULES[name])
    case: Case = module.CASE
    return case


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure runner against the performance targets in docs/benchmarks.md.",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="more repetitions and the full-size data sets (1,000,000 events and lines)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(CASE_MODULES),
        metavar="CASE",
        help=f"run only these cases ({', '.join(CASE_MODULES)})",
    )
    parser.add_argument(
        "--repetitions",
        type=int,
        metavar="N",
        help="timed repetitions per measurement (default: 5 quick, 9 full)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="PATH",
        help="where to write the JSON results (default: benchmarks/results/latest.json)",
    )
    # Internal: run one case in this process and write its result to --out.
    parser.add_argument("--child", choices=list(CASE_MODULES), help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repetitions is not None and args.repetitions < 1:
        parser.error("--repetitions must be at least 1")
    return args


def run_in_child(case: Case, settings: Settings) -> CaseResult:
    """Run ``case`` in a fresh interpreter and read back its result."""
    out = Path(settings.scratch, f"{case.name}.result.json")
    command = [sys.executable, "-m", "benchmarks", "--child", case.name, "--out", str(out)]
    command += ["--repetitions", str(settings.repetitions), "--scratch", settings.scratch]
    if settings.full:
        command.append("--full")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, check=False)
    if out.is_file():
        return msgspec.json.decode(out.read_bytes(), type=CaseResult)
    return CaseResult(
        case=case.name,
        title=case.title,
        status="error",
        seconds=time.perf_counter() - started,
        note=f"the case's process exited {done.returncode} without a result",
    )


def child_main(args: argparse.Namespace) -> int:
    settings = Settings(full=args.full, repetitions=args.repetitions, scratch=args.scratch)
    result = run_case(load_case(args.child), settings, log=log_to_stderr)
    args.out.write_bytes(msgspec.json.encode(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the cases, print the table, write the JSON; 1 if a case failed, else 0.

    A missed target does not fail the run: the table and docs/benchmarks.md
    say so, and the figures are still worth having.
    """
    args = parse_args(argv)
    args.repetitions = args.repetitions or (9 if args.full else 5)
    if args.child:
        return child_main(args)
    cases = [load_case(name) for name in args.only or CASE_MODULES]
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as scratch:
        settings = Settings(full=args.full, repetitions=args.repetitions, scratch=scratch)
        report = run_cases(cases, settings, run_one=run_in_child)
    report = msgspec.structs.replace(report, targets=evaluate_targets(report))
    print_table(report)
    print_targets(report)
    path = write_json(report, args.out)
    print(f"results written to {path}", file=sys.stderr)
    return 1 if any(c.status == "error" for c in report.cases) else 0
