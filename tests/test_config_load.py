"""Config loading: forms, expansion, durations, secrets and discovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import ConfigError, Parameters
from runner._registry import Registry
from runner.config._load import (
    BUNDLED,
    BUNDLED_NOTICE,
    bundled_text,
    discover_config,
    load_config,
    load_config_text,
)
from workers import Secret

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "sk-g"}

ONE = "providers:\n  - id: a\n    type: simulated\ndefault_provider: a\n"


def test_bundled_default_is_config_local() -> None:
    """The bundled config is byte for byte config/local.yaml."""
    assert bundled_text() == (ROOT / "config" / "local.yaml").read_text("utf-8")


def test_local_example_serves_the_four_roles_with_simulated_providers() -> None:
    """config/local.yaml needs no keys and names all four roles and a workflow."""
    config = load_config(ROOT / "config" / "local.yaml", environ={})
    assert set(config.roles) == {"coder", "reviewer", "planner", "clarifier"}
    assert {p.type for p in config.providers} == {"simulated"}
    assert (config.metrics.store, config.metrics.path) == ("sqlite", ".runner/metrics.db")
    assert [s.name for s in config.workflows["quick"].stages] == ["planning", "generation"]
    flaky = config.provider("sim-flaky")
    assert (flaky.retry_after, flaky.failure_rate) == (0.05, 0.2)
    assert config.source == str(ROOT / "config" / "local.yaml")


def test_multi_provider_example() -> None:
    """config/multi-provider.yaml gives each role its chain and takes keys from the environment."""
    config = load_config(ROOT / "config" / "multi-provider.yaml", environ=KEYS)
    registry = Registry.from_config(config)
    assert registry.chain("coder").provider_ids == ("openai-gpt4o", "claude-sonnet", "gemini-flash")
    assert registry.chain("reviewer").provider_ids == ("claude-sonnet", "gemini-flash")
    openai = config.provider("openai-gpt4o")
    assert openai.api_key == Secret("sk-o")
    assert openai.api_key is not None
    assert openai.api_key.source == "OPENAI_API_KEY"
    assert openai.timeout == 60.0
    assert config.retry.initial_delay == 0.5


def test_single_provider_form_is_one_provider_for_every_role() -> None:
    """The old form becomes one provider, named by its type, that is the default."""
    config = load_config(ROOT / "config" / "single-provider.yaml", environ=KEYS)
    (provider,) = config.providers
    assert (provider.id, provider.type, provider.model) == ("openai", "openai", "gpt-4o-mini")
    assert provider.parameters == Parameters(temperature=0.2, max_tokens=1024)
    assert config.default_provider == "openai"
    assert Registry.from_config(config).chain("coder").provider_ids == ("openai",)


def test_single_provider_form_keeps_run_wide_settings() -> None:
    """Top-level settings other than the provider's stay where they are."""
    config = load_config_text("provider: simulated\nconcurrency: 5\nretry: {max_attempts: 1}\n")
    assert (config.concurrency, config.retry.max_attempts) == (5, 1)
    assert config.providers[0].id == "simulated"


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), ("7d", 604800.0), ("45", 45.0)],
)
def test_durations(written: str, seconds: float) -> None:
    """Durations may be written with a unit; they are held as seconds."""
    config = load_config_text(ONE + f"cooldown: {{seconds: {written}}}\n")
    assert config.cooldown.seconds == seconds


def test_durations_as_plain_numbers() -> None:
    """A bare number is seconds, whole or fractional."""
    text = ONE.replace("type: simulated", "type: simulated\n    timeout: 2.5")
    assert load_config_text(text).providers[0].timeout == 2.5


def test_variables_expand_with_defaults_and_escapes() -> None:
    """${VAR}, ${VAR:-default} and $$ work in any string value."""
    text = (
        "providers:\n"
        "  - id: a\n    type: openai\n    model: ${MODEL:-gpt-4o}\n"
        "    base_url: http://${HOST}/v1\n"
        "    headers: {X-Cost: $$5}\n"
        "default_provider: a\n"
        "concurrency: ${CONCURRENCY:-8}\n"
        "grace_period: ${GRACE:-2m}\n"
    )
    config = load_config_text(text, environ={"HOST": "localhost:11434"})
    p = config.providers[0]
    assert (p.model, p.base_url, p.headers) == (
        "gpt-4o",
        "http://localhost:11434/v1",
        {"X-Cost": "$5"},
    )
    assert (config.concurrency, config.grace_period) == (8, 120.0)


def test_keys_are_secrets_that_remember_their_variable() -> None:
    """api_key and worker.auth_token become Secrets; empty means none."""
    text = (
        "providers:\n"
        "  - {id: a, type: openai, model: m, api_key: '${KEY}'}\n"
        "  - {id: b, type: openai, model: m, api_key: literal-key, base_url: 'http://h/v1'}\n"
        "  - {id: c, type: openai, model: m, api_key: '${EMPTY:-}', base_url: 'http://h/v1'}\n"
        "default_provider: a\n"
        "worker: {auth_token: '${TOKEN}'}\n"
    )
    config = load_config_text(text, environ={"KEY": "sk-1", "TOKEN": "tok"})
    a, b, c = config.providers
    assert isinstance(a.api_key, Secret)
    assert a.api_key.source == "KEY"
    assert a.api_key.reveal() == "sk-1"
    assert isinstance(b.api_key, Secret)
    assert b.api_key.source is None
    assert c.api_key is None
    assert config.worker.auth_token == Secret("tok")
    assert "sk-1" not in repr(config)


def test_stop_may_be_one_string_or_a_list() -> None:
    """stop written as a string is a one-item tuple; a list becomes a tuple."""
    text = (
        ONE
        + "defaults: {stop: '###'}\nroles:\n  coder: {provider: a, parameters: {stop: [x, y]}}\n"
    )
    config = load_config_text(text)
    assert config.defaults.stop == ("###",)
    assert config.roles["coder"].parameters.stop == ("x", "y")


def test_anchors_merge_keys_and_extension_keys() -> None:
    """Top-level x- keys hold anchors that providers can merge."""
    text = (
        "x-sim: &sim {type: simulated, latency_ms: {mean: 5}}\n"
        "providers:\n  - {<<: *sim, id: a}\n  - {<<: *sim, id: b, latency_ms: {mean: 9}}\n"
        "default_provider: a\n"
    )
    a, b = load_config_text(text).providers
    assert (a.type, a.latency_ms.mean, b.latency_ms.mean) == ("simulated", 5.0, 9.0)


def test_hosted_providers_need_a_model() -> None:
    """An openai, anthropic or google provider without a model says which to add."""
    with pytest.raises(ConfigError) as info:
        load_config_text("providers:\n  - id: a\n    type: google\ndefault_provider: a\n")
    (p,) = info.value.problems
    assert (p.path, p.line, p.column) == ("providers[0]", 2, 5)
    assert p.message == "provider type google needs a model"
    assert p.hint == "add model:, for example model: gemini-2.5-flash"


def test_source_names_where_the_config_came_from() -> None:
    """Config.source is the name given to the text."""
    assert load_config_text(ONE, source="mine.yaml").source == "mine.yaml"


def test_discover_prefers_the_explicit_path(tmp_path: Path) -> None:
    """--config wins over $RUNNER_CONFIG."""
    mine = tmp_path / "mine.yaml"
    mine.write_text(ONE)
    config = discover_config(str(mine), environ={"RUNNER_CONFIG": str(tmp_path / "no.yaml")})
    assert config.source == str(mine)


def test_discover_uses_runner_config_variable(tmp_path: Path) -> None:
    """Without --config, $RUNNER_CONFIG names the file."""
    mine = tmp_path / "env.yaml"
    mine.write_text(ONE)
    assert discover_config(None, environ={"RUNNER_CONFIG": str(mine)}).source == str(mine)


def test_discover_says_a_missing_runner_config_came_from_the_variable(tmp_path: Path) -> None:
    """A missing file named by $RUNNER_CONFIG says so."""
    with pytest.raises(ConfigError) as info:
        discover_config(None, environ={"RUNNER_CONFIG": str(tmp_path / "gone.yaml")})
    (p,) = info.value.problems
    assert p.hint == "it was named by $RUNNER_CONFIG"


def test_discover_finds_runner_yaml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """./runner.yaml is used when neither --config nor $RUNNER_CONFIG is given."""
    (tmp_path / "runner.yaml").write_text(ONE)
    monkeypatch.chdir(tmp_path)
    notices: list[str] = []
    assert discover_config(None, environ={}, notice=notices.append).source == "runner.yaml"
    assert notices == []


def test_discover_falls_back_to_the_bundled_config_with_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing to find, the bundled simulated config is used and stderr says so."""
    monkeypatch.chdir(tmp_path)
    notices: list[str] = []
    config = discover_config(None, environ={}, notice=notices.append)
    assert config.source == BUNDLED
    assert notices == [BUNDLED_NOTICE]
    assert BUNDLED_NOTICE == (
        "no config given: using the bundled simulated config (config/local.yaml); "
        "pass --config or set RUNNER_CONFIG"
    )
