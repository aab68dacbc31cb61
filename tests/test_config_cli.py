"""``python -m runner config check``: the resolved table, exit codes, and no secret shown."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from runner.cli import main
from runner.cli._config import _print_rich
from runner.config._load import BUNDLED_NOTICE, discover

ROOT = Path(__file__).resolve().parent.parent
MULTI = str(ROOT / "config" / "multi-provider.yaml")
SINGLE = str(ROOT / "config" / "single-provider.yaml")
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")
SECRET = "sk-UNIQUE-4f1e9c2a7b"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*KEYS, "RUNNER_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_multi_provider_with_keys_prints_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the three keys set, the check passes and shows chains, parameters and key status."""
    for name in KEYS:
        monkeypatch.setenv(name, SECRET)
    assert main(["config", "check", MULTI]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"config: {MULTI} (version 1, multi-provider form): valid"
    assert lines[2:6] == [
        "providers:",
        "  ID             TYPE       MODEL              BASE_URL"
        "                   TIMEOUT  MAX_CONCURRENCY  API_KEY",
        "  openai-gpt4o   openai     gpt-4o             https://api.openai.com/v1"
        "  60s      16               set (OPENAI_API_KEY)",
        "  claude-sonnet  anthropic  claude-sonnet-4-6  (default)"
        "                  90s      8                set (ANTHROPIC_API_KEY)",
    ]
    assert "  coder             1  openai-gpt4o   temperature=0 max_tokens=1024" in lines
    assert "                    2  claude-sonnet  temperature=0 max_tokens=1024" in lines
    assert "  planner           1  claude-sonnet  temperature=0.2 max_tokens=1024" in lines
    assert "                    2  openai-gpt4o   temperature=0.1 max_tokens=1024" in lines
    assert "  (any other role)  1  gemini-flash   temperature=0.2 max_tokens=1024" in lines
    assert "default_provider: gemini-flash" in lines
    assert SECRET not in out


def test_unset_keys_pass_the_check_and_say_which_providers_cannot_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Unset key variables: exit 0, ``missing (VAR)`` per provider, one line naming them."""
    assert main(["config", "check", MULTI]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for provider, name in zip(
        ("openai-gpt4o", "claude-sonnet", "gemini-flash"), KEYS[:3], strict=True
    ):
        row = next(line for line in out.splitlines() if line.startswith(f"  {provider} "))
        assert row.endswith(f"missing ({name})")
    cannot = [line for line in out.splitlines() if "cannot run" in line]
    assert cannot == [
        "3 providers cannot run: openai-gpt4o (OPENAI_API_KEY not set), "
        "claude-sonnet (ANTHROPIC_API_KEY not set), gemini-flash (GEMINI_API_KEY not set)"
    ]
    assert (
        "submit and worker refuse to start: no provider has its key: "
        "set OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY" in out
    )


def test_one_missing_key_names_that_provider_and_the_roles_it_strands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With only Gemini's key unset, the chains mark it and only the stranded role is named."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    assert main(["config", "check", MULTI]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "1 provider cannot run: gemini-flash (GEMINI_API_KEY not set)" in lines
    assert "  (any other role)  1  gemini-flash (no key)  temperature=0.2 max_tokens=1024" in lines
    assert lines[-1] == (
        "submit and worker refuse to start: no provider with a key is left for the roles the"
        " config does not name (they run on default_provider gemini-flash): set GEMINI_API_KEY,"
        " or give those roles a provider whose key is set"
    )
    assert SECRET not in out


def test_strict_makes_a_missing_key_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--strict``: the same report, then exit 2 naming the providers without a key."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    assert main(["config", "check", "--strict", MULTI]) == 2
    out, err = capsys.readouterr()
    assert "missing (ANTHROPIC_API_KEY)" in out
    assert err == (
        "error: --strict: 1 provider cannot run: claude-sonnet (ANTHROPIC_API_KEY not set)\n"
    )
    for name in KEYS:
        monkeypatch.setenv(name, SECRET)
    assert main(["config", "check", "--strict", MULTI]) == 0


def test_a_key_set_but_empty_shows_as_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty key variable passes the check and shows as missing."""
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "x")
    monkeypatch.setenv("GEMINI_API_KEY", "")
    assert main(["config", "check", MULTI]) == 0
    assert "missing (GEMINI_API_KEY)" in capsys.readouterr().out


def test_single_provider_form_says_how_to_migrate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old form passes and points to the multi-provider form and the guide."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert main(["config", "check", SINGLE]) == 0
    out = capsys.readouterr().out
    assert f"config: {SINGLE} (version 1, single-provider form): valid" in out
    assert (
        "    providers: [{id: openai, type: openai, model: gpt-4o-mini, "
        "api_key: ${OPENAI_API_KEY}}]\n    default_provider: openai\n"
    ) in out
    assert "Step by step: docs/migration.md" in out
    assert SECRET not in out


def test_no_path_uses_the_bundled_config_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a path or runner.yaml, the bundled simulated config is checked with a notice."""
    monkeypatch.chdir(tmp_path)
    assert main(["config", "check"]) == 0
    out, err = capsys.readouterr()
    assert err == BUNDLED_NOTICE + "\n"
    assert out.startswith("config: <bundled> (version 1, multi-provider form): valid\n")
    assert "  sim-fast     simulated" in out
    assert "not needed" in out


def test_missing_file_exits_2_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file is one clear line, exit 2, no traceback."""
    missing = tmp_path / "nope.yaml"
    assert main(["config", "check", str(missing)]) == 2
    assert capsys.readouterr().err == (
        "error: the config is not valid (1 problem):\n"
        f"  {missing}: cannot read the config: no such file "
        "(check the path, or pass --config PATH / set RUNNER_CONFIG)\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", ": the file is empty"),
        ("- a\n", ":1:1: the config must be a mapping of fields, got a list"),
        ("a: [1\n", ":2:1: YAML syntax error: expected ',' or ']'"),
    ],
)
def test_unusable_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    """Empty, non-mapping and unparsable files each give one problem and exit 2."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the config is not valid (1 problem):\n")
    assert f"  {path}{message}" in err
    assert "Traceback" not in err


def test_a_secret_never_appears_in_output_alongside_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key value, from the environment or the file, appears in no output of a failed check."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n"
        "  - {id: a, type: openai, api_key: '${OPENAI_API_KEY}', timeout: '${OPENAI_API_KEY}'}\n"
        f"  - {{id: b, type: anthropic, api_key: {SECRET}, model: 5}}\n"
        f"  - {{id: c, type: google, api_key: [{SECRET}]}}\n"
        "  - {id: d, type: openai, model: '${OPENAI_API_KEY}',"
        " max_concurrency: '${OPENAI_API_KEY}'}\n"
        "roles: {coder: {provider: nope, fallbacks: [a, a]}}\n"
        "default_provider: a\n"
        "worker: {auth_token: '${MISSING_TOKEN}'}\n"
    )
    assert main(["config", "check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "(9 problems)" in err
    assert SECRET not in out
    assert SECRET not in err
    assert SECRET[:10] not in err


def test_a_key_pasted_into_another_field_is_scrubbed_from_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even a key misused as a model name is not printed by a passing check."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  - {id: a, type: openai, api_key: '${OPENAI_API_KEY}',"
        " model: '${OPENAI_API_KEY}'}\ndefault_provider: a\n"
    )
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "set (OPENAI_API_KEY)" in out
    assert SECRET not in out


def test_a_password_in_a_base_url_is_masked_in_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """user:password@ in base_url (basic auth) is shown as ***@ by config check."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  - {id: local, type: openai, model: m,"
        " base_url: 'http://me:hunter2-pw@localhost:8000/v1'}\ndefault_provider: local\n"
    )
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "http://***@localhost:8000/v1" in out
    assert "hunter2" not in out


def test_rich_output_shows_status_not_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminal (rich) form shows the same key status and never the key."""
    for name in KEYS:
        monkeypatch.setenv(name, SECRET)
    buffer = io.StringIO()
    _print_rich(discover(MULTI), buffer, console=Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "set (OPENAI_API_KEY)" in text
    assert "openai-gpt4o" in text
    assert SECRET not in text
