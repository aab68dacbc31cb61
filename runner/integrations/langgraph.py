"""runner's workflows as LangGraph graphs: :func:`default_workflow_graph`.

::

    model = RunnerChatModel.from_config("runner.yaml")
    graph = default_workflow_graph(model)
    state = graph.invoke({"input": "A CLI that renames photos by EXIF date"})
    state["output"]                                  # the review
    [m.response_metadata["provider"] for m in state["stages"]]

The graph is the workflow ``runner.run_workflow("default", ...)`` runs (the
config's own ``default`` if it has one): one node per stage, in order, each
calling the model with the stage's role and the prompt runner's workflow
gives that stage (its instruction, the input, every earlier output under its
own heading).  So each stage picks the provider the workflow's stage would.
A stage whose task fails raises TaskFailedError and later stages do not run.

Needs the ``langgraph`` extra (``pip install 'runner[langgraph]'``).
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Annotated, Any, NotRequired, TypedDict

try:
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.runnables import RunnableConfig, RunnableLambda
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.state import CompiledStateGraph
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "runner.integrations.langgraph needs LangGraph; install the extra: "
        "pip install 'runner[langgraph]'"
    ) from exc

from runner import UsageError, stage_prompt
from runner.integrations.langchain import ROLE_KEY, RunnerChatModel

if TYPE_CHECKING:
    from runner.config._model import StageConfig

__all__ = ["WorkflowInput", "WorkflowState", "default_workflow_graph", "workflow_graph"]


class WorkflowInput(TypedDict):
    """What a workflow graph is invoked with."""

    input: str


class WorkflowState(TypedDict):
    """A workflow graph's state: the input, each finished stage, the last output."""

    input: str
    #: One AIMessage per finished stage, in order; its ``name`` is the stage.
    stages: Annotated[list[AIMessage], operator.add]
    #: The latest stage's output (the workflow's output once it has finished).
    output: NotRequired[str]


WorkflowGraph = CompiledStateGraph[WorkflowState, None, WorkflowInput, WorkflowState]


def default_workflow_graph(model: RunnerChatModel) -> WorkflowGraph:
    """runner's ``default`` workflow over ``model``'s Runner, as a compiled graph."""
    return workflow_graph(model, "default")


def workflow_graph(model: RunnerChatModel, name: str) -> WorkflowGraph:
    """Workflow ``name`` of ``model``'s Runner (its config's or the default), compiled."""
    definition = model.runner.workflows.get(name)
    if definition is None:
        known = ", ".join(sorted(model.runner.workflows))
        raise UsageError(f"unknown workflow {name!r}; known: {known}")
    builder = StateGraph(WorkflowState, input_schema=WorkflowInput)
    previous = START
    for stage in definition.stages:
        builder.add_node(stage.name, _stage_node(model, stage))
        builder.add_edge(previous, stage.name)
        previous = stage.name
    builder.add_edge(previous, END)
    return builder.compile(name=f"runner-workflow-{name}")


def _stage_node(
    model: RunnerChatModel, stage: StageConfig
) -> RunnableLambda[WorkflowState, dict[str, Any]]:
    stage_model = model.with_role(stage.role)

    def call_config(config: RunnableConfig) -> RunnableConfig:
        # The stage's role is part of the workflow: a graph-wide runner_role
        # must not move every stage to one role.
        return {**config, "configurable": {**config.get("configurable", {}), ROLE_KEY: stage.role}}

    def prompt(state: WorkflowState) -> list[HumanMessage]:
        earlier = [(m.name or "", m.text) for m in state["stages"]]
        return [HumanMessage(stage_prompt(stage, state["input"], earlier))]

    def update(answer: AIMessage) -> dict[str, Any]:
        named = answer.model_copy(update={"name": stage.name})
        return {"stages": [named], "output": named.text}

    def run(state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        return update(stage_model.invoke(prompt(state), call_config(config)))

    async def arun(state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        return update(await stage_model.ainvoke(prompt(state), call_config(config)))

    return RunnableLambda(run, afunc=arun, name=stage.name)
