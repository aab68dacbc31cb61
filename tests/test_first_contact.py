"""What a new user runs first, as the README and docs/ show it.

The README's Python program is extracted and run as written (from a copy of
the repository's config/, so nothing is written here); the ``runner``
console script behaves as ``python -m runner``; and every command line shown
in a code block of README.md and docs/ is one the parser accepts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.cli._main import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"```(?P<lang>[a-z]*)\n(?P<body>.*?)```", re.DOTALL)
_COMMAND = re.compile(r"^(?:\$ )?(?:\.venv/bin/runner|runner|(?:\.venv/bin/)?python -m runner)\s")


def _blocks(path: Path, lang: str | None = None) -> list[str]:
    return [
        m["body"]
        for m in _BLOCK.finditer(path.read_text("utf-8"))
        if lang is None or m["lang"] == lang
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_the_readme_python_program_runs_as_written(tmp_path: Path) -> None:
    """The README's 'From Python' block, run as a script on config/local.yaml, completes."""
    [program] = [b for b in _blocks(README, "python") if "Runner.from_config" in b]
    assert 'Runner.from_config("config/local.yaml")' in program
    shutil.copytree(ROOT / "config", tmp_path / "config")
    script = tmp_path / "readme.py"
    script.write_text(program)
    done = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("completed sim-flaky ") or lines[0].startswith("completed ")
    assert sum(line.endswith(" completed") for line in lines) == 3
    assert lines[-1] == "completed ['clarification', 'planning', 'generation', 'review']"
    assert "Traceback" not in done.stderr


def _script() -> Path:
    script = Path(sys.executable).with_name("runner")
    assert script.exists(), f"the console script is not installed next to {sys.executable}"
    return script


@pytest.mark.slow
def test_the_runner_script_works_like_python_m_runner(tmp_path: Path) -> None:
    """``runner config check`` and ``runner submit`` give what ``python -m runner`` gives."""
    config = str(ROOT / "config" / "local.yaml")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "role": "coder", "prompt": "x"}\n{"id": "b", "promt": "x"}\n')
    outcomes = []
    for head in ([str(_script())], [sys.executable, "-m", "runner"]):
        check = subprocess.run(  # noqa: S603 (our own interpreter and script)
            [*head, "config", "check", config],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
        )
        submit = subprocess.run(  # noqa: S603 (our own interpreter and script)
            [*head, "submit", str(tasks), "--config", config, "--out", str(tmp_path / "r.jsonl")],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
        )
        outcomes.append((check.returncode, check.stdout, submit.returncode))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == 0
    assert outcomes[0][2] == 1  # the misspelt line is rejected
    usage = subprocess.run(  # noqa: S603 (our own script)
        [str(_script()), "--help"], capture_output=True, text=True, timeout=50, check=False
    )
    assert usage.stdout.startswith("usage: runner ")


def _commands() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for body in _blocks(path):
            for line in body.splitlines():
                line = line.strip()
                if _COMMAND.match(line):
                    found.append((path.name, line))
    return found


def test_the_docs_show_commands_people_can_paste() -> None:
    """README.md's commands run as pasted (``.venv/bin/runner``), and every one parses."""
    commands = _commands()
    readme = [line for name, line in commands if name == "README.md"]
    assert readme, "the README shows no command"
    assert all(line.startswith(".venv/bin/runner ") for line in readme), readme
    parser = build_parser("runner")
    for name, line in commands:
        words = shlex.split(line.removeprefix("$ "), comments=True)
        words = words[3:] if words[0].endswith("python") else words[1:]
        for i, word in enumerate(words):
            if word in (">", "|", "<", "&&", "&"):  # the shell's part of the line
                words = words[:i]
                break
        if "[" in line or "FILE" in words or "P" in words:
            continue  # a synopsis, not a command
        try:
            parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"{name}: the parser refuses {line!r}")
