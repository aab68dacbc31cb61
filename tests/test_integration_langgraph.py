"""runner's workflows as LangGraph graphs: the same stages, prompts and providers.

asyncio only (LangGraph); simulated providers, fake time for the runner.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import runner
from runner import Runner, UsageError
from runner.config import MetricsConfig
from runner.integrations.langchain import RunnerChatModel, TaskFailedError
from runner.integrations.langgraph import default_workflow_graph, workflow_graph
from tests.dispatch_support import FakeTime, Scripts, make_config, open_runner, sim, simulated

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent

FAILING: dict[str, Any] = {"failure_rate": 1.0, "failure_codes": ("auth_failed",)}


def sent(scripts: Scripts) -> list[tuple[str, Any, Any, Any]]:
    """Every request the providers saw, without the task ids (which differ by design)."""
    return [(p, r.system, r.messages, r.parameters) for p, r in scripts.requests]


async def test_default_graph_picks_the_same_providers_and_prompts_as_run_workflow() -> None:
    """Stage by stage, the graph sends run_workflow's prompts to the same providers."""
    # coder's primary fails, so generation falls back: the graph must too.
    config = make_config(providers=(sim("a", **FAILING), sim("b"), sim("c"), sim("d")))
    scripts = Scripts()
    async with open_runner(config, providers=simulated(config, scripts)) as r:
        result = await r.run_workflow("default", input="A CLI that renames photos")
        by_workflow = sent(scripts)
        scripts.requests.clear()
        graph = default_workflow_graph(RunnerChatModel(runner=r))
        state = await graph.ainvoke({"input": "A CLI that renames photos"})
        by_graph = sent(scripts)
    assert result.status == "completed"
    assert result.stages is not None
    assert [(m.name, m.response_metadata["role"], m.response_metadata["provider"])
            for m in state["stages"]] == [
        (s.stage, s.role, s.provider) for s in result.stages
    ] == [
        ("clarification", "clarifier", "c"),
        ("planning", "planner", "d"),
        ("generation", "coder", "b"),
        ("review", "reviewer", "b"),
    ]  # fmt: skip
    assert by_graph == by_workflow
    assert [m.response_metadata["fallback_used"] for m in state["stages"]] == [
        False, False, True, False,
    ]  # fmt: skip
    assert state["output"] == result.output


async def test_a_graph_wide_role_does_not_move_the_stages() -> None:
    """configurable runner_role on the whole graph leaves each stage on its own role."""
    config = make_config()
    async with open_runner(config) as r:
        graph = default_workflow_graph(RunnerChatModel(runner=r))
        state = await graph.ainvoke(
            {"input": "x"}, config={"configurable": {"runner_role": "coder"}}
        )
    assert [m.response_metadata["role"] for m in state["stages"]] == [
        "clarifier", "planner", "coder", "reviewer",
    ]  # fmt: skip


async def test_a_failed_stage_raises_and_later_stages_do_not_run() -> None:
    """Planning fails on every provider: TaskFailedError, and no generation or review call."""
    config = make_config(providers=(sim("a"), sim("b"), sim("c"), sim("d", **FAILING)))
    scripts = Scripts()
    async with open_runner(config, providers=simulated(config, scripts)) as r:
        result = await r.run_workflow("default", input="x")
        scripts.requests.clear()
        with pytest.raises(TaskFailedError) as caught:
            await default_workflow_graph(RunnerChatModel(runner=r)).ainvoke({"input": "x"})
    assert result.error is not None
    assert (caught.value.code, caught.value.provider) == (result.error.code, "d")
    assert [p for p, _ in scripts.requests] == ["c", "d"]  # clarification, then planning


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "runner.yaml"
    path.write_text(
        """
version: 1
providers:
  - {id: sim-a, type: simulated, model: sim-a-1}
  - {id: sim-b, type: simulated, model: sim-b-1}
roles:
  planner: {provider: sim-a}
  coder: {provider: sim-b}
default_provider: sim-a
metrics: {store: none}
logging: {level: warning}
workflows:
  default:
    stages:
      - {name: plan, role: planner}
      - {name: code, role: coder, instruction: "Follow the plan."}
  solo:
    stages:
      - {name: only, role: coder}
""",
        encoding="utf-8",
    )
    return path


async def test_the_configs_own_workflows_become_graphs(tmp_path: Path) -> None:
    """A config that replaces ``default`` or adds workflows gets those stages as nodes."""
    async with Runner.from_config(write_config(tmp_path), log_stream=io.StringIO()) as r:
        model = RunnerChatModel(runner=r)
        default = await default_workflow_graph(model).ainvoke({"input": "x"})
        solo = await workflow_graph(model, "solo").ainvoke({"input": "x"})
        with pytest.raises(UsageError, match="unknown workflow 'nope'; known: default, solo"):
            workflow_graph(model, "nope")
    assert [(m.name, m.response_metadata["provider"]) for m in default["stages"]] == [
        ("plan", "sim-a"),
        ("code", "sim-b"),
    ]
    assert default["output"].startswith("[simulated sim-b-1] reply to: Follow the plan.")
    assert [m.name for m in solo["stages"]] == ["only"]


def test_the_graph_runs_from_synchronous_code_on_an_owned_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """graph.invoke with a from_config model: no event loop needed, nothing left in the cwd."""
    # Run where a default metrics store would land, so a test writing into
    # the repository's .runner/metrics.db (a developer's own figures) fails.
    monkeypatch.chdir(tmp_path)
    config = make_config(metrics=MetricsConfig(store="none"))
    t = FakeTime()
    options = {
        "providers": simulated(config, sleep=t.sleep),
        "log_stream": io.StringIO(),
        "clock": t.clock,
        "sleep": t.sleep,
    }
    with RunnerChatModel.from_config(config, runner_options=options) as model:
        state = default_workflow_graph(model).invoke({"input": "x"})
    assert [m.response_metadata["provider"] for m in state["stages"]] == ["c", "d", "a", "b"]
    assert list(tmp_path.iterdir()) == []


def test_workflows_and_stage_prompt_are_public() -> None:
    """Runner.workflows (read-only) and stage_prompt are what the graph is built from."""
    r = Runner.from_config(make_config())
    assert "stage_prompt" in runner.__all__
    assert [s.name for s in r.workflows["default"].stages] == [
        "clarification", "planning", "generation", "review",
    ]  # fmt: skip
    with pytest.raises(TypeError):
        r.workflows["mine"] = r.workflows["default"]  # type: ignore[index]


@pytest.mark.slow
def test_the_example_runs_offline(tmp_path: Path) -> None:
    """examples/langgraph_agent.py runs offline and prints metrics by role and by node."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and example
        [sys.executable, str(ROOT / "examples" / "langgraph_agent.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for stage, role in [("clarification", "clarifier"), ("planning", "planner"),
                        ("generation", "coder"), ("review", "reviewer")]:  # fmt: skip
        assert f"{stage:<14} {role:<10}" in out
    assert "fallback" in out
    assert "metrics by node:" in out
    assert "node:generation" in out
    assert (tmp_path / ".runner" / "langgraph-metrics.db").exists()


@pytest.mark.slow
def test_the_docs_example_runs_and_shows_the_fallback(tmp_path: Path) -> None:
    """docs/langgraph.md's first example prints what it says; the summaries by role and by
    tag (one row per node, one for the run's tag) show it."""
    doc = (ROOT / "docs" / "langgraph.md").read_text("utf-8")
    example = re.findall(r"```python\n(.*?)```", doc, re.DOTALL)[0]
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "langgraph.yaml", tmp_path / "examples")

    def run(*args: str) -> str:
        return subprocess.run(  # noqa: S603 - our own interpreter, code and CLI
            [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True,
            check=True, timeout=120,
        ).stdout  # fmt: skip

    assert run("-c", example).splitlines() == [
        "coder sim-careful 3 True",
        "reviewer sim-careful 1 False",
    ]
    summary = run(
        "-m", "runner", "metrics", "summary", "--config", "examples/langgraph.yaml",
        "--group-by", "role", "--format", "json",
    )  # fmt: skip
    rows = {row["role"]: row for row in json.loads(summary)}
    assert sorted(rows) == ["coder", "reviewer"]
    assert (rows["coder"]["requests"], rows["reviewer"]["requests"]) == (3, 1)
    assert rows["coder"]["errors"] == {"overloaded": 2}
    by_tag = run(
        "-m", "runner", "metrics", "summary", "--config", "examples/langgraph.yaml",
        "--group-by", "tag", "--format", "json",
    )  # fmt: skip
    assert [(r["tag"], r["requests"], r["errors"]) for r in json.loads(by_tag)] == [
        ("nightly", 4, {"overloaded": 2}),
        ("node:draft", 3, {"overloaded": 2}),
        ("node:review", 1, {}),
    ]
