"""submit and worker on the command line: unknown roles, strict_roles, keyless providers.

Run through ``runner.cli._main.main`` (as ``python -m runner`` does), with
stderr captured: what a person sees is the test.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from runner import Notice, Result, Runner, Task
from runner.cli import main
from runner.config import load_config_text

CONFIG = """\
providers:
  - {id: sim-a, type: simulated, model: a-1}
  - {id: sim-b, type: simulated, model: b-1}
roles:
  coder: {provider: sim-a}
default_provider: sim-b
metrics: {store: none}
logging: {level: info}
workflows:
  odd:
    stages:
      - {name: one, role: coder}
      - {name: two, role: poet}
"""

KEYLESS = """\
providers:
  - {id: cloud, type: openai, model: gpt-4o, base_url: "http://127.0.0.1:9/v1",
     api_key: "${FC_TEST_UNSET_KEY}"}
  - {id: sim, type: simulated}
roles:
  coder: {provider: cloud, fallbacks: [sim]}
default_provider: sim
metrics: {store: none}
"""

STRANDED = """\
providers:
  - {id: cloud, type: openai, model: gpt-4o, base_url: "http://127.0.0.1:9/v1",
     api_key: "${FC_TEST_UNSET_KEY}"}
  - {id: sim, type: simulated}
roles:
  coder: {provider: sim}
  reviewer: {provider: cloud}
default_provider: cloud
metrics: {store: none}
"""


@pytest.fixture(autouse=True)
def _unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FC_TEST_UNSET_KEY", raising=False)


def _results(path: Path) -> dict[str, Result]:
    decoder = msgspec.json.Decoder(Result)
    return {r.id: r for r in (decoder.decode(line) for line in path.read_bytes().splitlines())}


def _run(tmp_path: Path, config: str, lines: list[str], *extra: str) -> tuple[int, Path]:
    (tmp_path / "runner.yaml").write_text(config)
    (tmp_path / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.jsonl"
    code = main(
        [
            "submit",
            str(tmp_path / "tasks.jsonl"),
            "--config",
            str(tmp_path / "runner.yaml"),
            "--out",
            str(out),
            *extra,
        ]
    )
    return code, out


def test_an_unknown_role_is_said_once_per_role(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three 'translator' tasks and one 'poet': one warning each, saying where they run."""
    lines = [
        *(f'{{"id": "t{i}", "role": "translator", "prompt": "x"}}' for i in range(3)),
        '{"id": "p", "role": "poet", "prompt": "x"}',
        '{"id": "c", "role": "coder", "prompt": "x"}',
    ]
    code, out = _run(tmp_path, CONFIG, lines)
    assert code == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "role '" in line]
    assert sorted(warnings) == [
        "warning: role 'poet' is not in the config: its tasks run on the default provider sim-b",
        "warning: role 'translator' is not in the config: its tasks run on the default"
        " provider sim-b",
    ]
    assert {r.provider for r in _results(out).values() if r.role != "coder"} == {"sim-b"}


def test_per_attempt_lines_only_with_v_or_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """logging: info in the config is not enough: attempt lines need -v (stderr) or --log."""
    lines = ['{"id": "c", "role": "coder", "prompt": "x"}']
    assert _run(tmp_path, CONFIG, lines)[0] == 0
    assert "status=running" not in capsys.readouterr().err
    assert _run(tmp_path, CONFIG, lines, "-v")[0] == 0
    err = capsys.readouterr().err
    assert "task_id=c" in err
    assert "status=running" in err
    log = tmp_path / "logs" / "run.log"
    assert _run(tmp_path, CONFIG, lines, "--log", str(log))[0] == 0
    assert "status=running" not in capsys.readouterr().err
    assert "task_id=c" in log.read_text()
    assert "status=completed" in log.read_text()


def test_strict_roles_rejects_tasks_of_unknown_roles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """strict_roles: true: an unknown role, or a workflow stage's, is rejected as unknown_role."""
    lines = [
        '{"id": "t", "role": "translator", "prompt": "x"}',
        '{"id": "c", "role": "coder", "prompt": "x"}',
        '{"id": "w", "workflow": "odd", "input": "x"}',
        '{"id": "d", "prompt": "no role: the default provider"}',
    ]
    code, out = _run(tmp_path, CONFIG + "strict_roles: true\n", lines)
    assert code == 1
    results = _results(out)
    assert {k: r.status for k, r in results.items()} == {
        "t": "rejected",
        "c": "completed",
        "w": "rejected",
        "d": "completed",
    }
    assert results["t"].error is not None
    assert (results["t"].error.code, results["t"].error.message) == (
        "unknown_role",
        "unknown role 'translator' (strict_roles is on; known: coder)",
    )
    assert results["w"].error is not None
    assert results["w"].error.code == "unknown_role"
    assert "'poet'" in results["w"].error.message
    assert "is not in the config" not in capsys.readouterr().err


def test_a_keyless_provider_is_disabled_with_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its key variable unset: one warning naming provider and variable; the chain skips it."""
    lines = [f'{{"id": "c{i}", "role": "coder", "prompt": "x"}}' for i in range(5)]
    code, out = _run(tmp_path, KEYLESS, lines)
    assert code == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [
        "warning: provider cloud is disabled: FC_TEST_UNSET_KEY is not set"
        " (its roles use the rest of their chains)"
    ]
    results = _results(out)
    assert {r.provider for r in results.values()} == {"sim"}
    assert all(r.attempts == 1 and not r.fallback_used for r in results.values())


def test_a_role_left_without_a_provider_is_exit_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 only when some role has nothing left: the warning, then the roles, no results."""
    code, out = _run(tmp_path, STRANDED, ['{"role": "coder", "prompt": "x"}'])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "warning: provider cloud is disabled: FC_TEST_UNSET_KEY is not set"
        " (its roles use the rest of their chains)",
        "error: no provider with a key is left for role reviewer and the roles the config does"
        " not name (they run on default_provider cloud): set FC_TEST_UNSET_KEY, or give those"
        " roles a provider whose key is set",
    ]
    assert not out.exists()


def test_the_worker_refuses_to_start_the_same_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``worker`` with a role left without a provider: exit 2 before it listens."""
    (tmp_path / "runner.yaml").write_text(STRANDED)
    assert main(["worker", "--config", str(tmp_path / "runner.yaml"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "error: no provider with a key is left for role reviewer" in err
    assert "listening" not in err


@pytest.mark.anyio
async def test_the_python_api_tells_notices_to_on_notice() -> None:
    """Runner(on_notice=...) gets a disabled provider and each unknown role once."""
    seen: list[Notice] = []
    config = load_config_text(KEYLESS, environ={})
    async with Runner(config, on_notice=seen.append) as runner:
        for _ in range(3):
            await runner.run(Task(role="poet", prompt="x"))
        await runner.run(Task(role="coder", prompt="x"))
    assert [(n.kind, n.provider, n.role) for n in seen] == [
        ("provider_disabled", "cloud", None),
        ("unknown_role", None, "poet"),
    ]
