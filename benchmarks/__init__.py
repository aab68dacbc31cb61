"""runner's benchmark suite: ``make bench`` (quick) or ``python -m benchmarks --full``.

Layout: ``_harness`` (repetitions, statistics, machine info, table, JSON),
``_cli`` (the command line), ``_fixtures`` (configs and helpers the cases
share) and one module per case, each exposing ``CASE``.  Results go to
``benchmarks/results/latest.json``; ``docs/benchmarks.md`` explains them.
"""

from __future__ import annotations

#: Every case, in the order it runs: its name and the module holding its ``CASE``.
CASE_MODULES: dict[str, str] = {
    "selection": "benchmarks.selection",
    "dispatch": "benchmarks.dispatch",
    "litellm": "benchmarks.litellm_compare",
    "http": "benchmarks.http_compare",
    "scaling": "benchmarks.scaling",
    "metrics_writer": "benchmarks.metrics_writer",
    "metrics_summary": "benchmarks.metrics_summary",
    "metrics_migrate": "benchmarks.metrics_migrate",
    "submit_memory": "benchmarks.submit_memory",
    "cluster": "benchmarks.cluster",
}

__all__ = ["CASE_MODULES"]
