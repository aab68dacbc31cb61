"""``python -m runner config check``: the resolved table, exit codes, and no secret shown."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from runner.cli._config import _print_rich
from runner.cli._main import main
from runner.config._load import BUNDLED_NOTICE, discover

ROOT = Path(__file__).resolve().parent.parent
MULTI = str(ROOT / "config" / "multi-provider.yaml")
SINGLE = str(ROOT / "config" / "single-provider.yaml")
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")
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


def test_multi_provider_without_keys_names_each_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the keys unset, exit 2 and name every missing variable, at its line."""
    assert main(["config", "check", MULTI]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "error: the config is not valid (3 problems):"
    assert [line.split(": ", 2)[:2] for line in lines[1:]] == [
        [f"  {MULTI}:14:14", "providers[0].api_key"],
        [f"  {MULTI}:24:14", "providers[1].api_key"],
        [f"  {MULTI}:31:14", "providers[2].api_key"],
    ]
    for name, line in zip(KEYS, lines[1:], strict=True):
        assert f"environment variable {name} is not set" in line


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


def test_rich_output_shows_status_not_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminal (rich) form shows the same key status and never the key."""
    for name in KEYS:
        monkeypatch.setenv(name, SECRET)
    buffer = io.StringIO()
    _print_rich(discover(MULTI), buffer, width=200)
    text = buffer.getvalue()
    assert "set (OPENAI_API_KEY)" in text
    assert "openai-gpt4o" in text
    assert SECRET not in text
