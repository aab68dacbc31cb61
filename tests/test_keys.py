"""Provider keys: needed only where used, found where users keep them.

A key variable that is not set disables that provider (and only it); hosted
providers without ``api_key`` read their SDK's usual variable, but only when
they talk to the official host; reading metrics needs no key at all.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runner import UsageError
from runner._registry import Registry, disabled_providers, stranded_roles
from runner.cli import main
from runner.cli._providers import check_providers
from runner.config._load import discover_metrics, load_config, load_config_text
from runner.metrics._jsonl import append_jsonl
from runner.metrics._sqlite import import_jsonl
from tests.fakes import FakeOpenAI
from tests.test_metrics_cli import event
from workers._settings import missing_key

ROOT = Path(__file__).resolve().parent.parent
MULTI = ROOT / "config" / "multi-provider.yaml"
SECRET = "sk-UNIQUE-8d1c77aa90"
KEY_NAMES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*KEY_NAMES, "RUNNER_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def _one(entry: str, environ: dict[str, str] | None = None) -> object:
    text = f"providers:\n  - {{id: p, {entry}}}\ndefault_provider: p\n"
    return load_config_text(text, environ=environ or {}).providers[0]


def test_an_unset_key_variable_loads_as_a_missing_key() -> None:
    """``api_key: ${VAR}`` with VAR unset: the file is valid and the provider lacks its key."""
    config = load_config(MULTI, environ={"OPENAI_API_KEY": SECRET})
    assert disabled_providers(config) == {
        "claude-sonnet": "ANTHROPIC_API_KEY",
        "gemini-flash": "GEMINI_API_KEY",
    }
    openai = config.provider("openai-gpt4o")
    assert missing_key(openai) is None
    assert openai.api_key is not None
    assert openai.api_key.reveal() == SECRET


def test_a_half_set_key_is_no_key() -> None:
    """A key built from two variables, one unset, is missing (never half a key)."""
    provider = _one(
        "type: openai, model: m, api_key: '${KEY_A}${KEY_B}'", {"KEY_A": "sk-first-half"}
    )
    assert missing_key(provider) == "KEY_B"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("entry", "environ", "source"),
    [
        ("type: openai, model: m", {"OPENAI_API_KEY": SECRET}, "OPENAI_API_KEY"),
        ("type: anthropic, model: m", {"ANTHROPIC_API_KEY": SECRET}, "ANTHROPIC_API_KEY"),
        ("type: google, model: m", {"GEMINI_API_KEY": SECRET}, "GEMINI_API_KEY"),
        ("type: google, model: m", {"GOOGLE_API_KEY": SECRET}, "GOOGLE_API_KEY"),
        (
            "type: google, model: m",
            {"GEMINI_API_KEY": SECRET, "GOOGLE_API_KEY": "sk-other"},
            "GEMINI_API_KEY",
        ),
        (
            "type: openai, model: m, base_url: 'https://api.openai.com/v1'",
            {"OPENAI_API_KEY": SECRET},
            "OPENAI_API_KEY",
        ),
    ],
)
def test_hosted_providers_without_api_key_read_the_sdk_variable(
    entry: str, environ: dict[str, str], source: str
) -> None:
    """No ``api_key`` on the official host: the SDK's variable, GEMINI_ before GOOGLE_."""
    provider = _one(entry, environ)
    key = provider.api_key  # type: ignore[attr-defined]
    assert key is not None
    assert (key.reveal(), key.source) == (SECRET, source)


def test_no_key_anywhere_names_every_variable_tried() -> None:
    """A Gemini provider with neither variable set is missing both, named in order."""
    provider = _one("type: google, model: m")
    assert missing_key(provider) == "GEMINI_API_KEY or GOOGLE_API_KEY"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "base_url",
    ["http://localhost:11434/v1", "https://proxy.example.com/v1", "http://api.openai.com/v1"],
)
def test_a_key_from_the_environment_is_never_given_to_a_custom_base_url(base_url: str) -> None:
    """A base_url of the user's own (or plain http) gets no key from the environment."""
    provider = _one(f"type: openai, model: m, base_url: '{base_url}'", {"OPENAI_API_KEY": SECRET})
    assert provider.api_key is None  # type: ignore[attr-defined]
    assert missing_key(provider) is None  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_the_environment_key_is_not_sent_to_a_compatible_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end: OPENAI_API_KEY set, a local server as base_url: no Authorization header."""
    from runner._api import Runner
    from runner._task import Task

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    async with FakeOpenAI(api_key=None) as fake:
        text = (
            "providers:\n"
            f"  - {{id: local, type: openai, model: {fake.models[0]},"
            f" base_url: '{fake.base_url}'}}\n"
            "default_provider: local\nmetrics: {store: none}\n"
        )
        config = load_config_text(text)
        async with Runner(config) as runner:
            result = await runner.run(Task(prompt="hi"))
    assert result.status == "completed"
    assert fake.requests
    assert all("authorization" not in {k.lower() for k in r.headers} for r in fake.requests)


def test_chains_skip_a_provider_without_its_key() -> None:
    """The registry leaves a keyless provider out of every chain it was in."""
    config = load_config(MULTI, environ={"OPENAI_API_KEY": SECRET, "GEMINI_API_KEY": SECRET})
    registry = Registry.from_config(config)
    assert registry.disabled == {"claude-sonnet": "ANTHROPIC_API_KEY"}
    assert registry.chain("coder").provider_ids == ("openai-gpt4o", "gemini-flash")
    assert registry.chain("reviewer").provider_ids == ("gemini-flash",)
    assert registry.chain("planner").provider_ids == ("openai-gpt4o", "gemini-flash")


def test_a_role_with_no_provider_left_is_refused_by_name() -> None:
    """Only when some role has no provider left does building the registry fail, naming it."""
    config = load_config(MULTI, environ={"OPENAI_API_KEY": SECRET, "ANTHROPIC_API_KEY": SECRET})
    assert list(stranded_roles(config)) == [None]
    with pytest.raises(UsageError) as info:
        Registry.from_config(config)
    assert str(info.value) == (
        "no provider with a key is left for the roles the config does not name (they run on"
        " default_provider gemini-flash): set GEMINI_API_KEY, or give those roles a provider"
        " whose key is set"
    )


@pytest.mark.anyio
async def test_providers_check_reports_missing_key_without_calling() -> None:
    """A keyless provider is ``missing_key`` (not called); the others are still checked."""
    async with FakeOpenAI() as fake:
        text = (
            "providers:\n"
            "  - {id: claude, type: anthropic, model: m, base_url: 'http://127.0.0.1:9',"
            " api_key: '${ANTHROPIC_API_KEY}'}\n"
            "  - {id: sim, type: simulated}\n"
            "default_provider: sim\n"
        )
        config = load_config_text(text, environ={})
        config = config.__class__(
            providers=(*config.providers, fake.provider_config()), default_provider="sim"
        )
        results = await check_providers(config, 5)
    assert [(r.provider, r.outcome, r.detail) for r in results] == [
        ("claude", "missing_key", "ANTHROPIC_API_KEY is not set; not called"),
        ("sim", "ok", "nothing to check"),
        ("fake-openai", "ok", "key accepted"),
    ]
    assert [r.path for r in fake.requests] == ["/v1/models"]


def test_providers_check_command_exits_1_on_a_missing_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command line shows the missing_key rows and exits 1 (no network needed)."""
    assert main(["providers", "check", "--config", str(MULTI), "--timeout", "1"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["openai-gpt4o", "openai", "missing_key"]
    assert lines[-1] == "3 of 3 providers have no key"


@pytest.fixture
def metrics_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with .runner/metrics.db holding 60 events, as after a run."""
    seed = tmp_path / "seed.jsonl"
    append_jsonl(seed, [event(n) for n in range(60)])
    (tmp_path / ".runner").mkdir()
    import_jsonl(tmp_path / ".runner" / "metrics.db", seed)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_metrics_summary_needs_no_provider_key(
    metrics_cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``metrics summary --config config/multi-provider.yaml`` with no key set: exit 0."""
    assert main(["metrics", "summary", "--config", str(MULTI), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert sum(row["requests"] for row in json.loads(out)) == 60
    assert main(["metrics", "export", "--config", str(MULTI), "--format", "jsonl"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 60


def test_metrics_read_only_the_metrics_section(
    metrics_cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mistakes outside ``metrics:`` do not stop metrics commands; mistakes inside it do."""
    config = metrics_cwd / "half-written.yaml"
    config.write_text(
        "providers:\n  - {id: x, type: nope}\nconcurrency: ${RUNNER_CONCURRENCY}\n"
        "metrics: {store: sqlite, path: .runner/metrics.db}\n"
    )
    assert main(["metrics", "summary", "--config", str(config), "--format", "json"]) == 0
    capsys.readouterr()
    config.write_text("metrics: {store: sqlite, paht: x.db}\n")
    assert main(["metrics", "summary", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}:1:26: metrics.paht: unknown field 'paht' (did you mean 'path'?)" in err


def test_discover_metrics_defaults_without_a_section(tmp_path: Path) -> None:
    """A config with no metrics section reads the default store."""
    path = tmp_path / "c.yaml"
    shutil.copy(MULTI, path)
    path.write_text(
        path.read_text().replace("metrics: {store: sqlite, path: .runner/metrics.db}\n", "")
    )
    source, metrics = discover_metrics(str(path), environ={})
    assert (source, metrics.store, metrics.path) == (str(path), "sqlite", ".runner/metrics.db")
