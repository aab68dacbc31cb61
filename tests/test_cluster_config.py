"""The ``cluster:`` config section: defaults, durations, the environment, located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner._errors import ConfigError
from runner.cli._main import main
from runner.config._load import load_config_text

BASE = """\
providers:
  - id: a
    type: simulated
default_provider: a
"""


def test_no_section_is_one_machine() -> None:
    """Without a cluster section nothing changes: SQLite, as before."""
    config = load_config_text(BASE)
    assert not config.cluster.enabled
    assert config.cluster.lease == 30.0
    assert config.cluster.shared_limits is True


def test_section_with_database_and_durations() -> None:
    """A PostgreSQL URL enables cluster mode; the lease is a duration like any other."""
    config = load_config_text(
        BASE + "cluster:\n  database: postgresql://u:p@db:5432/runner\n  lease: 2m\n"
        "  shared_limits: false\n"
    )
    assert config.cluster.enabled
    assert config.cluster.database == "postgresql://u:p@db:5432/runner"
    assert config.cluster.lease == 120.0
    assert config.cluster.shared_limits is False


def test_empty_variable_means_one_machine() -> None:
    """``${RUNNER_DATABASE_URL:-}`` with the variable unset leaves cluster mode off."""
    config = load_config_text(BASE + "cluster:\n  database: ${RUNNER_DATABASE_URL:-}\n", environ={})
    assert not config.cluster.enabled
    config = load_config_text(
        BASE + "cluster:\n  database: ${RUNNER_DATABASE_URL:-}\n",
        environ={"RUNNER_DATABASE_URL": "postgres://h/db"},
    )
    assert config.cluster.enabled


def test_wrong_scheme_is_located_and_not_quoted() -> None:
    """A URL that is not PostgreSQL is reported at its line, without its (secret) value."""
    with pytest.raises(ConfigError) as info:
        load_config_text(
            BASE + "cluster:\n  database: ${URL}\n  lease: 0s\n",
            source="c.yaml",
            environ={"URL": "mysql://root:hunter2@h/db"},
        )
    text = str(info.value)
    assert "c.yaml:6:13: cluster.database: not a PostgreSQL URL (write postgresql://" in text
    assert "c.yaml:7:10: cluster.lease:" in text
    assert "hunter2" not in text


def test_unknown_field_is_named() -> None:
    """A misspelt field in the section lists the known ones."""
    with pytest.raises(
        ConfigError, match=r"cluster.leese: unknown field 'leese' \(did you mean 'lease'\?\)"
    ):
        load_config_text(BASE + "cluster:\n  leese: 30s\n")


def test_config_check_shows_the_cluster_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """config check says where tasks and events go, never printing the database password."""
    path = tmp_path / "c.yaml"
    path.write_text(BASE + "cluster:\n  database: postgresql://u:hunter2@db:5432/r\n  lease: 1m\n")
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cluster: postgresql://u:***@db:5432/r, lease 60s, shared limits" in out
    assert "metrics: the cluster database (spill file .runner/metrics.db.spill.jsonl)" in out
    assert "hunter2" not in out
