"""Workflows: stages run in order, each a task of its own.

The default workflow is clarification (clarifier) -> planning (planner) ->
generation (coder) -> review (reviewer); a ``workflows:`` section of the
config adds named ones or replaces ``default``.  Stage ``s`` of workflow task
``w`` is the plain task ``w/s`` with the stage's role; its prompt is the
stage instruction, the workflow input and every earlier stage's output, each
under its own heading.

A workflow is a coroutine that submits one stage and waits for it: it holds
no worker slot itself, so any number of workflows can wait on their stages
without starving the pool.  It runs under the same
:meth:`~runner._supervise.Supervisor.supervise` as a plain task, and its own
status (pending -> running -> terminal) moves through the same supervisor.  A stage that does not
complete ends the workflow (``failed``, the message naming the stage, or
``cancelled``) and later stages do not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import anyio

from runner._context import TaskExecutionContext, new_context
from runner._errors import ShuttingDown
from runner._task import ErrorInfo, Result, Task
from runner.config._model import Config, StageConfig, WorkflowConfig

if TYPE_CHECKING:
    from runner._dispatcher import Dispatcher
    from runner._registry import Registry
    from runner._supervise import Supervisor

#: Seconds a cancelled workflow waits for its running stage to settle.
STAGE_SETTLE_DEADLINE: Final = 5.0

DEFAULT_WORKFLOW: Final = WorkflowConfig(
    stages=(
        StageConfig(
            name="clarification",
            role="clarifier",
            instruction=(
                "Clarify the request below: list the open questions and the assumptions "
                "you make, then restate the request precisely."
            ),
        ),
        StageConfig(
            name="planning",
            role="planner",
            instruction="Write a short, ordered implementation plan for the clarified request.",
        ),
        StageConfig(
            name="generation",
            role="coder",
            instruction="Carry out the plan: write the code, complete and runnable.",
        ),
        StageConfig(
            name="review",
            role="reviewer",
            instruction=(
                "Review the generated code against the request and the plan; "
                "list defects and the fix for each."
            ),
        ),
    )
)


def known_workflows(config: Config) -> dict[str, WorkflowConfig]:
    """Every workflow a task may name: ``default`` plus the config's (which may replace it)."""
    return {"default": DEFAULT_WORKFLOW, **config.workflows}


def stage_prompt(stage: StageConfig, input: str, earlier: Sequence[tuple[str, str]]) -> str:
    """The prompt of ``stage``: its instruction, the input, then earlier outputs, labelled."""
    parts = [stage.instruction] if stage.instruction else []
    parts.append(f"## Input\n\n{input}")
    parts.extend(f"## Output of stage '{name}'\n\n{output}" for name, output in earlier)
    return "\n\n".join(parts)


async def run_workflow(
    dispatcher: Dispatcher,
    registry: Registry,
    ctx: TaskExecutionContext,
    definition: WorkflowConfig,
) -> None:
    """Run the stages of workflow ``ctx`` in order, supervised like a plain task."""
    if ctx.result is not None:
        return  # cancelled before this coroutine started
    ctx.stage_roles = tuple((s.name, s.role) for s in definition.stages)

    async def body(ctx: TaskExecutionContext) -> None:
        await _stages(dispatcher, registry, ctx, definition)

    await dispatcher.supervisor.supervise(ctx, body)


async def _stages(
    dispatcher: Dispatcher,
    registry: Registry,
    ctx: TaskExecutionContext,
    definition: WorkflowConfig,
) -> None:
    supervisor = dispatcher.supervisor
    done: list[Result] = []
    ctx.stage_results = done
    stage_ctx: TaskExecutionContext | None = None
    # The workflow's own scope: handle.cancel() cancels it, and the running
    # stage is cancelled with it (below).
    scope = ctx.scope = anyio.CancelScope()
    try:
        with scope:
            supervisor.record(ctx, "running")
            ctx.started_at = dispatcher.now()
            earlier: list[tuple[str, str]] = []
            for stage in definition.stages:
                task = Task(
                    id=f"{ctx.id}/{stage.name}",
                    role=stage.role,
                    prompt=stage_prompt(stage, ctx.task.input or "", earlier),
                    system=ctx.task.system,
                    parameters=ctx.task.parameters,
                    # A stage's metric events are the workflow task's events.
                    tags=ctx.task.tags,
                )
                stage_ctx = new_context(
                    task,
                    task.id or stage.name,
                    registry.chain(stage.role),
                    now=dispatcher.now(),
                    wall=dispatcher.wall_now(),
                )
                try:
                    await dispatcher.enqueue(stage_ctx)
                except ShuttingDown:
                    supervisor.end_cancelled(
                        ctx, f"shut down before stage {stage.name!r} could start"
                    )
                    return
                result = await dispatcher.wait(stage_ctx)
                done.append(result)
                if result.status != "completed":
                    _end_early(supervisor, ctx, stage.name, result)
                    return
                earlier.append((stage.name, result.output or ""))
            supervisor.record(ctx, "completed", provider=done[-1].provider)
            return
    except anyio.get_cancelled_exc_class():
        # Cancelled from outside: the stage is settled before the workflow.
        with anyio.move_on_after(STAGE_SETTLE_DEADLINE, shield=True):
            await _settle_stage(dispatcher, stage_ctx, done)
        raise
    finally:
        ctx.scope = None
    # Only a cancel of this workflow's own scope lands here.
    with anyio.move_on_after(STAGE_SETTLE_DEADLINE, shield=True):
        await _settle_stage(dispatcher, stage_ctx, done)
    supervisor.end_cancelled(ctx)


async def _settle_stage(
    dispatcher: Dispatcher, stage_ctx: TaskExecutionContext | None, done: list[Result]
) -> None:
    """Cancel the stage in flight, if any, and keep its (cancelled) Result."""
    if stage_ctx is not None and stage_ctx.result is None:
        dispatcher.request_cancel(stage_ctx)
        done.append(await dispatcher.wait(stage_ctx))


def _end_early(
    supervisor: Supervisor, ctx: TaskExecutionContext, stage: str, result: Result
) -> None:
    error = result.error
    if result.status == "cancelled":
        supervisor.end_cancelled(ctx, f"stage {stage!r} was cancelled")
        return
    ctx.error = ErrorInfo(
        code=error.code if error is not None else "unknown",
        message=f"stage {stage!r} failed: {error.message if error is not None else 'no result'}",
        provider=result.provider,
        retryable=error.retryable if error is not None else None,
    )
    supervisor.record(ctx, "failed", provider=result.provider, error_code=ctx.error.code)
