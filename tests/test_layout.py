"""The package layout a newcomer relies on: both packages import alone, arrows point down."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runner.metrics._sqlite import prepare_database


@pytest.mark.parametrize("module", ["workers", "runner"])
def test_package_imports_first_in_a_fresh_interpreter(module: str) -> None:
    """`import workers` and `import runner` each work as the first import."""
    proc = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_workers_alone_loads_nothing_of_runner() -> None:
    """A custom provider needs only `workers`: importing it loads no runner module."""
    code = (
        "import sys, workers, workers.openai, workers.anthropic, workers.google, "
        "workers.simulated\n"
        "print(sorted(m for m in sys.modules if m == 'runner' or m.startswith('runner.')))"
    )
    proc = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_provider_error_is_a_runner_error() -> None:
    """One error tree: what adapters raise is caught by `except runner.RunnerError`."""
    import runner
    import workers

    assert issubclass(workers.ProviderError, runner.RunnerError)
    assert runner.ProviderError is workers.ProviderError


@pytest.mark.parametrize("package", ["runner", "runner.config", "runner.metrics"])
def test_every_exported_name_resolves_and_matches_its_module(package: str) -> None:
    """Each name in a package's __all__ loads on first use, from the module its map names."""
    import importlib

    pkg = importlib.import_module(package)
    exports: dict[str, str] = pkg._EXPORTS
    assert pkg.__all__ == sorted(pkg.__all__)
    assert set(pkg.__all__) == set(exports)
    for name in pkg.__all__:
        module = importlib.import_module(exports[name])
        assert getattr(pkg, name) is getattr(module, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = pkg.nope


def test_reading_metrics_does_not_load_the_dispatcher() -> None:
    """`metrics summary --help` loads neither the dispatcher nor structlog (start-up time)."""
    code = (
        "import sys\n"
        "from runner.cli._main import main\n"
        "try:\n"
        "    main(['metrics', 'summary', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('runner._dispatcher', 'structlog', 'aiohttp', 'httptools',"
        " 'runner._api')"
        " if m in sys.modules))"
    )
    proc = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_sqlite_summary_loads_no_cluster_client(tmp_path: Path) -> None:
    """`metrics summary --db FILE` loads neither asyncpg nor multiprocessing (start-up time)."""
    db = tmp_path / "m.db"
    prepare_database(db)
    code = (
        "import sys\n"
        "from runner.cli._main import main\n"
        f"assert main(['metrics', 'summary', '--db', {str(db)!r}]) == 0\n"
        "print(sorted(m for m in ('asyncpg', 'runner.cluster._pool', 'multiprocessing')"
        " if m in sys.modules))"
    )
    proc = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_nothing_below_the_cli_prints() -> None:
    """Library code reports through its return values, errors or the log; only runner.cli prints."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offenders: list[str] = []
    for package in ("runner", "workers"):
        for path in sorted((root / package).rglob("*.py")):
            if path.is_relative_to(root / "runner" / "cli"):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            offenders.extend(
                f"{path.relative_to(root)}:{node.lineno}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            )
    assert offenders == []
