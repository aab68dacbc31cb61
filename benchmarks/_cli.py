"""The command line: ``python -m benchmarks [--full] [--only CASE ...] [--out PATH]``."""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

from benchmarks import CASE_MODULES
from benchmarks._harness import Case, Settings, print_table, run_cases, write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def load_case(name: str) -> Case:
    """The ``CASE`` of a case module (imported only when the case is asked for)."""
    module = importlib.import_module(CASE_MODULES[name])
    case: Case = module.CASE
    return case


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure runner against the performance targets of DESIGN.md.",
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
    args = parser.parse_args(argv)
    if args.repetitions is not None and args.repetitions < 1:
        parser.error("--repetitions must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the cases, print the table, write the JSON; 1 if a case failed, else 0.

    A missed target does not fail the run: the table and docs/benchmarks.md
    say so, and the figures are still worth having.
    """
    args = parse_args(argv)
    names = args.only or list(CASE_MODULES)
    cases = [load_case(name) for name in names]
    repetitions = args.repetitions or (9 if args.full else 5)
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as scratch:
        settings = Settings(full=args.full, repetitions=repetitions, scratch=scratch)
        report = run_cases(cases, settings)
    print_table(report)
    path = write_json(report, args.out)
    print(f"results written to {path}", file=sys.stderr)
    return 1 if any(c.status == "error" for c in report.cases) else 0
