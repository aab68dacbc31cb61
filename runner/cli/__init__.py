"""``python -m runner``: the command line, the only layer that prints.

``_main`` parses arguments and decides exit codes; each subcommand lives in its
own module (``_submit``, ``_submit_remote``, ``_worker``, ``_config``,
``_providers``, ``_metrics``) and is imported only when it runs.  ``main`` is
the public entry point (``main(argv) -> exit code``; the ``runner`` script).
"""

from __future__ import annotations

from runner.cli._main import main

__all__ = ["main"]
