"""Workflows: stages in order, each a task; prompts carry earlier outputs; failures named.

Pure core: asyncio and trio, simulated providers, fake time.
"""

from __future__ import annotations

from collections import Counter

import anyio
import anyio.lowlevel
import pytest

from runner import Task
from runner._workflow import DEFAULT_WORKFLOW, stage_prompt
from runner.config import StageConfig, WorkflowConfig
from runner.metrics import MemorySink
from tests.dispatch_support import FakeTime, Gate, Scripts, make_config, open_runner, simulated
from workers.simulated import Fault

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_default_workflow_runs_four_stages_in_order() -> None:
    """clarification -> planning -> generation -> review, each on its role's provider."""
    config = make_config()
    scripts = Scripts()
    sink = MemorySink()
    t = FakeTime()
    async with open_runner(
        config, providers=simulated(config, scripts, t.sleep), time=t, sink=sink
    ) as runner:
        result = await runner.run_workflow(input="A CLI that renames photos", id="w1")
    assert result.status == "completed"
    assert result.workflow == "default"
    assert result.stages is not None
    assert [(s.stage, s.role, s.provider, s.status) for s in result.stages] == [
        ("clarification", "clarifier", "c", "completed"),
        ("planning", "planner", "d", "completed"),
        ("generation", "coder", "a", "completed"),
        ("review", "reviewer", "b", "completed"),
    ]
    assert [r.task_id for _, r in scripts.requests] == [
        "w1/clarification", "w1/planning", "w1/generation", "w1/review",
    ]  # fmt: skip
    assert result.output == result.stages[-1].output
    assert result.provider == "b"
    assert result.attempts == 4
    assert result.usage is not None
    assert result.usage.input_tokens == sum(e.input_tokens for e in sink.events)
    assert result.usage.output_tokens == sum(e.output_tokens for e in sink.events)
    assert [h.status for h in result.history] == ["pending", "running", "completed"]


async def test_each_stage_prompt_carries_input_and_earlier_outputs() -> None:
    """A stage's prompt holds its instruction, the input and every earlier stage's output."""
    config = make_config()
    scripts = Scripts()
    async with open_runner(config, providers=simulated(config, scripts)) as runner:
        result = await runner.run_workflow(input="photo renamer", id="w1")
    assert result.stages is not None
    prompts = [r.messages[-1].content for _, r in scripts.requests]
    for i, prompt in enumerate(prompts):
        assert (DEFAULT_WORKFLOW.stages[i].instruction or "") in prompt
        assert "## Input\n\nphoto renamer" in prompt
        for earlier in result.stages[:i]:
            assert f"## Output of stage '{earlier.stage}'\n\n{earlier.output}" in prompt
    assert "Output of stage" not in prompts[0]


def test_stage_prompt_layout() -> None:
    """The prompt is instruction, then input, then labelled earlier outputs, in that order."""
    stage = StageConfig(name="review", role="reviewer", instruction="Review it.")
    text = stage_prompt(stage, "the input", [("planning", "P"), ("generation", "G")])
    assert text == (
        "Review it.\n\n## Input\n\nthe input\n\n## Output of stage 'planning'\n\nP"
        "\n\n## Output of stage 'generation'\n\nG"
    )


async def test_failed_stage_fails_the_workflow_and_names_it() -> None:
    """A stage that fails ends the workflow failed, names the stage, skips later stages."""
    config = make_config()
    scripts = Scripts()
    scripts.plan("d", "w1/planning", Fault(code="content_filtered"))
    async with open_runner(config, providers=simulated(config, scripts)) as runner:
        result = await runner.run_workflow(input="x", id="w1")
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.code == "content_filtered"
    assert result.error.message == "stage 'planning' failed: simulated content_filtered"
    assert result.error.provider == "d"
    assert result.stages is not None
    assert [(s.stage, s.status) for s in result.stages] == [
        ("clarification", "completed"),
        ("planning", "failed"),
    ]
    assert result.output is None
    assert {r.task_id for _, r in scripts.requests} == {"w1/clarification", "w1/planning"}


async def test_named_workflows_from_config_and_default_override() -> None:
    """The config's workflows: section adds named workflows and may replace `default`."""
    config = make_config(
        workflows={
            "quick": WorkflowConfig(
                stages=(StageConfig(name="draft", role="coder", instruction="Draft it."),)
            ),
            "default": WorkflowConfig(stages=(StageConfig(name="only", role="reviewer"),)),
        }
    )
    async with open_runner(config) as runner:
        quick = await runner.run_workflow("quick", input="x")
        default = await runner.run(Task(workflow="default", input="y"))
        unknown = await runner.run_workflow("nope", input="z")
    assert quick.stages is not None
    assert [(s.stage, s.provider) for s in quick.stages] == [("draft", "a")]
    assert default.stages is not None
    assert [(s.stage, s.provider) for s in default.stages] == [("only", "b")]
    assert unknown.status == "rejected"
    assert unknown.error is not None
    assert unknown.error.code == "invalid_task"
    assert unknown.error.message == "unknown workflow 'nope'; known: default, quick"


async def test_many_workflows_run_concurrently_without_deadlock() -> None:
    """Twenty workflows on one worker slot all finish: a workflow holds no slot itself."""
    config = make_config(concurrency=1)
    async with open_runner(config) as runner:
        results = [
            r
            async for r in runner.run_many(
                Task(id=f"w{i}", workflow="default", input=f"job {i}") for i in range(20)
            )
        ]
    assert sorted(r.id for r in results) == sorted(f"w{i}" for i in range(20))
    assert all(r.status == "completed" for r in results)
    assert all(r.stages is not None and len(r.stages) == 4 for r in results)


async def test_workflows_are_independent() -> None:
    """One workflow failing does not touch another running at the same time."""
    config = make_config()
    scripts = Scripts()
    scripts.plan("a", "bad/generation", Fault(code="bad_request"))
    scripts.plan("b", "bad/generation", Fault(code="bad_request"))
    scripts.plan("c", "bad/generation", Fault(code="bad_request"))
    scripts.plan("d", "bad/generation", Fault(code="bad_request"))
    async with open_runner(config, providers=simulated(config, scripts)) as runner:
        results = {
            r.id: r
            async for r in runner.run_many(
                [
                    Task(id="bad", workflow="default", input="x"),
                    Task(id="good", workflow="default", input="y"),
                ]
            )
        }
    assert results["bad"].status == "failed"
    assert results["good"].status == "completed"


async def test_cancelling_a_workflow_cancels_its_running_stage() -> None:
    """handle.cancel() on a workflow ends it and its running stage as cancelled."""
    config = make_config()
    counts: Counter[str] = Counter()
    gates = {pid: Gate(p, counts, Counter()) for pid, p in simulated(config).items()}
    gates["d"].hold = anyio.Event()  # planning never answers
    sink = MemorySink()
    async with open_runner(config, providers=gates, sink=sink) as runner:
        handle = await runner.submit(Task(id="w1", workflow="default", input="x"))
        while gates["d"].started == 0:
            await anyio.lowlevel.checkpoint()
        assert handle.status() == "running"
        await handle.cancel()
    result = await handle
    assert result.status == "cancelled"
    assert result.stages is not None
    assert [(s.stage, s.status) for s in result.stages] == [
        ("clarification", "completed"),
        ("planning", "cancelled"),
    ]
    assert [h.status for h in result.history] == ["pending", "running", "cancelled"]
    assert [e.error_code for e in sink.events if e.task_id == "w1/planning"] == ["cancelled"]


async def test_workflow_moves_are_logged_with_its_name() -> None:
    """The workflow's own moves appear in the log with its name; stages with their role."""
    import io

    from tests.dispatch_support import log_lines

    log = io.StringIO()
    async with open_runner(make_config(), log=log) as runner:
        await runner.run_workflow(input="secret input text", id="w1")
    lines = log_lines(log)
    own = [(ln["status"], ln.get("workflow")) for ln in lines if ln["task_id"] == "w1"]
    assert own == [("running", "default"), ("completed", "default")]
    stage = [ln for ln in lines if ln["task_id"] == "w1/review"]
    assert [(ln["role"], ln["provider"], ln["status"]) for ln in stage] == [
        ("reviewer", "b", "running"),
        ("reviewer", "b", "completed"),
    ]
    assert "secret input text" not in log.getvalue()
