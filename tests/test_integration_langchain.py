"""RunnerChatModel: runner as a LangChain chat model.

asyncio only: LangChain's async machinery (abatch, executors) is asyncio's.
Simulated providers, fake time for the runner.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import RetryPolicy

from runner import Message, Parameters, Runner, RunnerError, UsageError
from runner._task_check import MAX_TAGS
from runner.cli._main import main
from runner.config import MetricsConfig
from runner.integrations.langchain import (
    RunnerChatModel,
    TaskFailedError,
    UnsupportedInputError,
    task_tags,
)
from tests.dispatch_support import (
    FakeTime,
    Gate,
    Scripts,
    make_config,
    open_runner,
    sim,
    simulated,
)
from workers import CompletionRequest
from workers.simulated import Fault, Success

pytestmark = pytest.mark.anyio


class Events:
    """A metrics sink that keeps every event (any object with ``async send``)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def send(self, event: Any) -> None:
        self.events.append(event)


class FailFirstTask(Scripts):
    """Every attempt of the first task seen fails with ``code``; later tasks succeed."""

    def __init__(self, code: Any) -> None:
        super().__init__()
        self.code = code
        self.task_ids: list[str] = []

    def script_for(self, provider: str) -> Callable[[CompletionRequest], Fault | Success | None]:
        def script(request: CompletionRequest) -> Fault | Success | None:
            self.requests.append((provider, request))
            if request.task_id not in self.task_ids:
                self.task_ids.append(request.task_id)
            return Fault(code=self.code) if request.task_id == self.task_ids[0] else None

        return script


async def until(predicate: Callable[[], bool]) -> None:
    """Let other tasks (and threads) run until ``predicate()`` holds, for at most 5 s."""
    with anyio.fail_after(5):
        while not predicate():
            await anyio.lowlevel.checkpoint()


def one_node_graph(node: Callable[..., Any]) -> Any:
    builder = StateGraph(MessagesState)
    builder.add_node("write", node)
    builder.add_edge(START, "write")
    builder.add_edge("write", END)
    return builder.compile()


async def test_messages_map_to_runner_messages() -> None:
    """System messages become the system prompt; human/AI turns keep their order."""
    config = make_config()
    scripts = Scripts()
    async with open_runner(config, providers=simulated(config, scripts)) as runner:
        model = RunnerChatModel(runner=runner, role="coder")
        await model.ainvoke(
            [
                SystemMessage("Be brief."),
                HumanMessage("Write a parser."),
                AIMessage("Here it is."),
                ChatMessage(role="user", content=[{"type": "text", "text": "Now "}, "test it."]),
                SystemMessage("Use pytest."),
            ]
        )
    [(_, request)] = scripts.requests
    assert request.system == "Be brief.\n\nUse pytest."
    assert request.messages == (
        Message(role="user", content="Write a parser."),
        Message(role="assistant", content="Here it is."),
        Message(role="user", content="Now test it."),
    )


@pytest.mark.parametrize(
    ("messages", "kwargs", "says"),
    [
        ([ToolMessage("42", tool_call_id="c1")], {}, "ToolMessage"),
        (
            [AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "c1"}]), HumanMessage("go")],
            {},
            "tool calls",
        ),
        (
            [HumanMessage([{"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}])],
            {},
            "'image_url' content block",
        ),
        ([ChatMessage(role="tool", content="x")], {}, "role 'tool'"),
        ([SystemMessage("Only a system prompt.")], {}, "no human or AI message"),
        ([HumanMessage("hi")], {"tools": [{"name": "f"}]}, "'tools'"),
        ([HumanMessage("hi")], {"logprobs": True}, "'logprobs'"),
        ([HumanMessage("hi")], {"temperature": 5}, "invalid parameter"),
    ],
)
async def test_what_runner_cannot_honour_is_an_error(
    messages: list[BaseMessage], kwargs: dict[str, Any], says: str
) -> None:
    """Tool messages, tool calls, images, unknown keywords: an error, and nothing is sent."""
    config = make_config()
    scripts = Scripts()
    async with open_runner(config, providers=simulated(config, scripts)) as runner:
        model = RunnerChatModel(runner=runner, role="coder")
        with pytest.raises(UnsupportedInputError, match=says) as caught:
            await model.ainvoke(messages, **kwargs)
    assert isinstance(caught.value, RunnerError)
    assert isinstance(caught.value, ValueError)  # LangGraph's default retry skips it
    assert scripts.requests == []


async def test_tools_cannot_be_bound() -> None:
    """bind_tools and with_structured_output refuse at once instead of ignoring the tools."""
    config = make_config()
    async with open_runner(config) as runner:
        model = RunnerChatModel(runner=runner)
        with pytest.raises(UnsupportedInputError, match="tools"):
            model.bind_tools([{"name": "f", "description": "d", "parameters": {}}])
        with pytest.raises(UnsupportedInputError, match="tools"):
            model.with_structured_output({"title": "T", "type": "object", "properties": {}})


async def test_parameters_from_fields_bind_and_call() -> None:
    """Model fields < bound < call-time keywords, and all become the task's parameters."""
    config = make_config()
    scripts = Scripts()
    async with open_runner(config, providers=simulated(config, scripts)) as runner:
        model = RunnerChatModel(runner=runner, role="coder", temperature=0.3, max_tokens=100)
        bound = model.bind(top_p=0.9, seed=1)
        await bound.ainvoke("hi", temperature=0.5, seed=7, stop=["END"])
        await model.ainvoke("again")
    [(_, first), (_, second)] = scripts.requests
    assert first.parameters == Parameters(
        temperature=0.5, max_tokens=100, top_p=0.9, seed=7, stop=("END",)
    )
    assert second.parameters == Parameters(temperature=0.3, max_tokens=100)


async def test_answer_carries_usage_and_metadata() -> None:
    """The AIMessage has the output, token usage, and who served it at what cost."""
    config = make_config()
    events = Events()
    async with open_runner(config, sink=events) as runner:  # type: ignore[arg-type]
        model = RunnerChatModel(runner=runner, role="coder")
        answer = await model.ainvoke("Write a haiku about retries.")
    [event] = events.events
    assert isinstance(answer, AIMessage)
    assert answer.content == "[simulated model-a] reply to: Write a haiku about retries."
    assert answer.usage_metadata == {
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "total_tokens": event.input_tokens + event.output_tokens,
    }
    meta = answer.response_metadata
    assert meta["cost_usd"] == pytest.approx(
        (event.input_tokens * 1.0 + event.output_tokens * 2.0) / 1e6
    )
    assert meta["latency_ms"] >= 0
    assert {k: v for k, v in meta.items() if k not in ("cost_usd", "latency_ms")} == {
        "provider": "a",
        "model": "model-a",
        "model_name": "model-a",
        "role": "coder",
        "attempts": 1,
        "fallback_used": False,
        "finish_reason": "stop",
        "task_id": event.task_id,
    }


async def test_role_per_call_through_with_role_and_configurable() -> None:
    """with_role picks another chain on the same runner; configurable runner_role wins."""
    config = make_config()
    async with open_runner(config) as runner:
        coder = RunnerChatModel(runner=runner, role="coder")
        reviewer = coder.with_role("reviewer")
        planner_cfg: RunnableConfig = {"configurable": {"runner_role": "planner"}}
        answers = [
            await coder.ainvoke("x"),
            await reviewer.ainvoke("x"),
            await coder.ainvoke("x", config=planner_cfg),
            await reviewer.ainvoke("x", config=planner_cfg),
            await coder.with_role(None).ainvoke("x"),
        ]
    assert [(a.response_metadata["role"], a.response_metadata["provider"]) for a in answers] == [
        ("coder", "a"),
        ("reviewer", "b"),
        ("planner", "d"),
        ("planner", "d"),
        ("default", "d"),  # no role: the default provider
    ]
    assert coder.role == "coder"
    assert reviewer.runner is runner


async def test_roles_per_graph_node() -> None:
    """In a graph, each node's role comes from with_role, or from the graph's configurable."""
    config = make_config()
    async with open_runner(config) as runner:
        model = RunnerChatModel(runner=runner)

        def node_for(role: str) -> Callable[..., Any]:
            node_model = model.with_role(role)

            async def node(state: MessagesState) -> dict[str, Any]:
                return {"messages": [await node_model.ainvoke(state["messages"][:1])]}

            return node

        builder = StateGraph(MessagesState)
        builder.add_node("plan", node_for("planner"))
        builder.add_node("code", node_for("coder"))
        builder.add_edge(START, "plan")
        builder.add_edge("plan", "code")
        builder.add_edge("code", END)
        graph = builder.compile()
        state = await graph.ainvoke({"messages": [HumanMessage("A CLI")]})
        forced = await graph.ainvoke(
            {"messages": [HumanMessage("A CLI")]},
            config={"configurable": {"runner_role": "reviewer"}},
        )
    assert [m.response_metadata["provider"] for m in state["messages"][1:]] == ["d", "a"]
    assert [m.response_metadata["provider"] for m in forced["messages"][1:]] == ["b", "b"]


async def test_fallback_shows_in_response_metadata() -> None:
    """A primary that fails hands over to the fallback, and the metadata says so."""
    config = make_config(
        providers=(
            sim("a", failure_rate=1.0, failure_codes=("auth_failed",)),
            sim("b"),
            sim("c"),
            sim("d"),
        )
    )
    async with open_runner(config) as runner:
        answer = await RunnerChatModel(runner=runner, role="coder").ainvoke("x")
    meta = answer.response_metadata
    assert (meta["provider"], meta["attempts"], meta["fallback_used"]) == ("b", 2, True)


async def test_failed_task_raises_with_code_and_provider_through_a_graph() -> None:
    """When the whole chain fails, the graph raises TaskFailedError naming code and provider."""
    failing = {"failure_rate": 1.0, "failure_codes": ("auth_failed",)}
    config = make_config(providers=tuple(sim(p, **failing) for p in "abcd"))
    async with open_runner(config) as runner:
        model = RunnerChatModel(runner=runner, role="coder")

        async def node(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        with pytest.raises(TaskFailedError) as caught:
            await one_node_graph(node).ainvoke({"messages": [HumanMessage("x")]})
    error = caught.value
    assert isinstance(error, RunnerError)
    assert (error.status, error.code, error.provider, error.retryable) == (
        "failed", "auth_failed", "d", False,
    )  # fmt: skip
    assert error.result.attempts == 4  # a, b, c, then the default provider d
    assert "auth_failed" in str(error)


@pytest.mark.parametrize(("code", "tasks"), [("rate_limited", 2), ("auth_failed", 1)])
async def test_langgraph_retry_policy_retries_only_retryable_failures(
    code: str, tasks: int
) -> None:
    """A RetryPolicy keyed on TaskFailedError.retryable runs a new task only when it may help."""
    config = make_config(providers=(sim("a"), sim("d")), roles={})
    scripts = FailFirstTask(code)
    async with open_runner(config, providers=simulated(config, scripts)) as runner:
        model = RunnerChatModel(runner=runner)

        async def node(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        builder = StateGraph(MessagesState)
        builder.add_node(
            "write",
            node,
            retry_policy=RetryPolicy(
                max_attempts=2,
                initial_interval=0.001,
                jitter=False,
                retry_on=lambda e: isinstance(e, TaskFailedError) and e.retryable,
            ),
        )
        builder.add_edge(START, "write")
        graph = builder.compile()
        if tasks == 2:
            state = await graph.ainvoke({"messages": [HumanMessage("x")]})
            assert state["messages"][-1].response_metadata["task_id"] == scripts.task_ids[1]
        else:
            with pytest.raises(TaskFailedError, match="auth_failed"):
                await graph.ainvoke({"messages": [HumanMessage("x")]})
    assert len(scripts.task_ids) == tasks


async def test_cancelling_the_graph_cancels_the_task() -> None:
    """Cancelling a graph mid-call cancels the runner task and records the cut attempt."""
    config = make_config()
    events = Events()
    gates = {pid: Gate(p, Counter(), Counter()) for pid, p in simulated(config).items()}
    gates["a"].hold = anyio.Event()  # never set: the call runs until cancelled
    async with open_runner(config, providers=gates, sink=events) as runner:  # type: ignore[arg-type]
        model = RunnerChatModel(runner=runner, role="coder")

        async def node(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        graph = one_node_graph(node)
        async with anyio.create_task_group() as tg:
            tg.start_soon(graph.ainvoke, {"messages": [HumanMessage("x")]})
            await until(lambda: gates["a"].started > 0)
            tg.cancel_scope.cancel()
        stats = runner.statistics()
    assert (stats.cancelled, stats.running, stats.completed) == (1, 0, 0)
    assert [(e.provider, e.error_code) for e in events.events] == [("a", "cancelled")]


async def test_abatch_runs_concurrently_within_the_provider_limit() -> None:
    """abatch submits every input; the provider's max_concurrency bounds the calls in flight."""
    config = make_config(providers=(sim("a", max_concurrency=2), sim("b"), sim("c"), sim("d")))
    peaks: Counter[str] = Counter()
    gates = {pid: Gate(p, Counter(), peaks) for pid, p in simulated(config).items()}
    hold = gates["a"].hold = anyio.Event()
    answers: list[AIMessage] = []
    async with open_runner(config, providers=gates) as runner:
        model = RunnerChatModel(runner=runner, role="coder")

        async def batch() -> None:
            answers.extend(await model.abatch([f"q{i}" for i in range(6)]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(batch)
            await until(lambda: gates["a"].started == 2)
            await anyio.sleep(0.05)
            assert gates["a"].started == 2  # the other four wait for the provider
            hold.set()
    assert peaks["a"] == 2
    assert [a.content for a in answers] == [f"[simulated model-a] reply to: q{i}" for i in range(6)]


async def test_astream_yields_the_whole_answer_as_one_chunk() -> None:
    """Until runner streams, astream gives one last chunk with the usage and metadata."""
    config = make_config()
    async with open_runner(config) as runner:
        model = RunnerChatModel(runner=runner, role="reviewer")
        chunks = [c async for c in model.astream("Review this.")]
    [chunk] = chunks
    assert isinstance(chunk, AIMessageChunk)
    assert chunk.chunk_position == "last"
    assert chunk.content == "[simulated model-b] reply to: Review this."
    assert chunk.response_metadata["provider"] == "b"
    assert chunk.usage_metadata is not None
    assert chunk.usage_metadata["total_tokens"] > 0


async def test_langgraph_messages_stream_gets_the_answer_chunk() -> None:
    """stream_mode="messages" yields the model's one chunk, metadata and all, from the node."""
    config = make_config()
    async with open_runner(config) as runner:
        model = RunnerChatModel(runner=runner, role="coder")

        async def node(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        streamed = [
            (chunk, meta["langgraph_node"])
            async for chunk, meta in one_node_graph(node).astream(
                {"messages": [HumanMessage("x")]}, stream_mode="messages"
            )
        ]
    [(chunk, node_name)] = streamed
    assert node_name == "write"
    assert chunk.content == "[simulated model-a] reply to: x"
    assert chunk.response_metadata["provider"] == "a"


async def test_sync_node_in_an_async_graph_reaches_the_runner() -> None:
    """invoke() from LangGraph's executor thread runs on the runner's loop."""
    config = make_config()
    async with open_runner(config) as runner:
        model = RunnerChatModel(runner=runner, role="planner")

        def node(state: MessagesState) -> dict[str, Any]:
            return {"messages": [model.invoke(state["messages"])]}

        state = await one_node_graph(node).ainvoke({"messages": [HumanMessage("x")]})
        # On the loop's own thread invoke() would wait for the loop it blocks.
        with pytest.raises(UsageError, match="ainvoke"):
            model.invoke("x")
    assert state["messages"][-1].response_metadata["provider"] == "d"


def owned_model(config: Any, events: Events, **fields: Any) -> RunnerChatModel:
    t = FakeTime()
    options = {
        "providers": simulated(config, sleep=t.sleep),
        "metrics": events,
        "clock": t.clock,
        "sleep": t.sleep,
        "log_stream": io.StringIO(),
    }
    return RunnerChatModel.from_config(config, runner_options=options, **fields)


def test_from_config_model_works_from_synchronous_code() -> None:
    """from_config opens its own runner on first use: invoke and batch with no loop running."""
    config = make_config()
    events = Events()
    with owned_model(config, events, role="coder") as model:
        assert model.runner.statistics().completed == 0  # nothing opened yet
        first = model.invoke("x")
        more = model.batch(["y", "z"])
        review = model.with_role("reviewer").invoke("r")
        [chunk] = model.stream("s")
    assert [m.response_metadata["provider"] for m in [first, *more, review]] == ["a"] * 3 + ["b"]
    assert chunk.content == "[simulated model-a] reply to: s"
    assert len(events.events) == 5  # one runner served them all, copies included
    with pytest.raises(UsageError, match="closed"):
        model.invoke("after close")


def test_from_config_model_serves_several_event_loops() -> None:
    """The owned runner outlives an asyncio.run loop, so the next loop can use it too."""
    config = make_config()
    model = owned_model(config, Events(), role="coder")
    try:
        for _ in range(2):
            answer = asyncio.run(model.ainvoke("x"))
            assert answer.response_metadata["provider"] == "a"
    finally:
        model.close()


def test_cancelling_a_call_cancels_the_owned_runners_task() -> None:
    """Cancelling ainvoke on a from_config model cancels the task in the model's runner."""
    config = make_config()
    events = Events()
    gates = {pid: Gate(p, Counter(), Counter()) for pid, p in simulated(config).items()}
    gates["a"].hold = anyio.Event()
    model = RunnerChatModel.from_config(
        config,
        role="coder",
        runner_options={"providers": gates, "metrics": events, "log_stream": io.StringIO()},
    )

    async def call_and_cancel() -> None:
        call = asyncio.ensure_future(model.ainvoke("x"))
        await until(lambda: gates["a"].started > 0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await until(lambda: model.runner.statistics().cancelled == 1)

    try:
        asyncio.run(call_and_cancel())
    finally:
        model.close()
    assert [(e.provider, e.error_code) for e in events.events] == [("a", "cancelled")]


def host_threads() -> int:
    return sum(t.name == "runner-host" for t in threading.enumerate())


def test_an_owned_runner_closes_when_the_model_is_collected() -> None:
    """Dropping the model and its copies shuts its runner down and ends its thread."""
    before = host_threads()
    model = owned_model(make_config(), Events(), role="coder")
    copy = model.with_role("reviewer")
    model.invoke("x")
    assert host_threads() == before + 1
    del model
    gc.collect()
    assert host_threads() == before + 1  # the copy still uses it
    del copy
    gc.collect()
    assert host_threads() == before


@pytest.mark.slow
def test_an_owned_runner_is_closed_at_exit(tmp_path: Path) -> None:
    """A from_config model left open flushes its metric events when the program exits."""
    (tmp_path / "runner.yaml").write_text(
        "providers: [{id: sim, type: simulated, model: sim-1}]\n"
        "default_provider: sim\n"
        "metrics: {store: sqlite, path: metrics.db}\n",
        encoding="utf-8",
    )
    code = (
        "from runner.integrations.langchain import RunnerChatModel\n"
        "model = RunnerChatModel.from_config('runner.yaml')\n"
        "print(model.invoke('x').response_metadata['provider'])\n"
    )

    def run(*args: str) -> str:
        return subprocess.run(  # noqa: S603 - our own interpreter, code and CLI
            [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True,
            check=True, timeout=60,
        ).stdout  # fmt: skip

    assert run("-c", code) == "sim\n"
    summary = json.loads(run("-m", "runner", "metrics", "summary", "--format", "json"))
    assert [(row["provider"], row["requests"]) for row in summary] == [("sim", 1)]


def test_task_tags_collects_run_name_node_and_tags() -> None:
    """Run name and node first, LangChain's step tags dropped, each tag short, no repeats."""
    config: RunnableConfig = {
        "run_name": "summarise",
        "metadata": {"langgraph_node": "review", "langgraph_step": 3},
        "tags": ["seq:step:2", "team-a", "graph:step:3", "team-a", " ", "x" * 100],
    }
    assert task_tags(config) == ("run:summarise", "node:review", "team-a", "x" * 64)
    assert task_tags({}) == ()
    assert len(task_tags({"tags": [f"t{i}" for i in range(40)]})) == MAX_TAGS


async def test_tags_from_a_langchain_run_reach_the_metric_events() -> None:
    """The node, run name and graph tags are on every metric event of the call's task.

    A tag the task check would refuse (a ``|``, a control character) is dropped
    rather than getting the call rejected.
    """
    events = Events()
    config = make_config()
    async with open_runner(config, sink=events) as runner:  # type: ignore[arg-type]
        model = RunnerChatModel(runner=runner, role="coder")

        async def node(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        await one_node_graph(node).ainvoke(
            {"messages": [HumanMessage("x")]}, config={"tags": ["nightly", "a|b", "c\nd"]}
        )
        await model.ainvoke("y", config={"run_name": "direct"})
    assert [e.tags for e in events.events] == [("node:write", "nightly"), ("run:direct",)]


class FirstPlanFails(Scripts):
    """The first attempt on provider d (the planner's only provider) is overloaded."""

    def script_for(self, provider: str) -> Callable[[CompletionRequest], Fault | Success | None]:
        def script(request: CompletionRequest) -> Fault | Success | None:
            self.requests.append((provider, request))
            if provider == "d" and sum(p == "d" for p, _ in self.requests) == 1:
                return Fault(code="overloaded")
            return None

        return script


async def test_metrics_summary_groups_a_graphs_calls_by_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After two runs of a plan -> code graph, ``metrics summary --group-by tag`` has one row
    per node and one for the graph tag given at invoke, with every attempt counted."""
    db = tmp_path / "metrics.db"
    config = make_config(metrics=MetricsConfig(store="sqlite", path=str(db)))
    time = FakeTime()
    providers = simulated(config, FirstPlanFails(), sleep=time.sleep)
    async with Runner.from_config(
        config, providers=providers, clock=time.clock, sleep=time.sleep, log_stream=io.StringIO()
    ) as runner:
        model = RunnerChatModel(runner=runner)
        planner, coder = model.with_role("planner"), model.with_role("coder")

        async def plan(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await planner.ainvoke(state["messages"])]}

        async def code(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await coder.ainvoke(state["messages"])]}

        builder = StateGraph(MessagesState)
        builder.add_node("plan", plan)
        builder.add_node("code", code)
        builder.add_edge(START, "plan")
        builder.add_edge("plan", "code")
        builder.add_edge("code", END)
        graph = builder.compile()
        await graph.ainvoke({"messages": [HumanMessage("A CLI")]}, config={"tags": ["nightly"]})
        await graph.ainvoke({"messages": [HumanMessage("A parser")]})
    argv = ["metrics", "summary", "--group-by", "tag", "--format", "json", "--db", str(db)]
    assert await anyio.to_thread.run_sync(main, argv) == 0
    rows = json.loads(capsys.readouterr().out)
    # Run 1 (nightly): plan overloaded then answered (2 attempts), code 1; run 2: 1 and 1.
    assert [(r["tag"], r["requests"], r["failures"], r["errors"]) for r in rows] == [
        ("nightly", 3, 1, {"overloaded": 1}),
        ("node:code", 2, 0, {}),
        ("node:plan", 3, 1, {"overloaded": 1}),
    ]
    argv = ["metrics", "summary", "--group-by", "tag,role", "--tag", "node:plan", "--db", str(db)]
    assert await anyio.to_thread.run_sync(main, argv) == 0
    table = [line.split()[:3] for line in capsys.readouterr().out.splitlines()]
    assert table == [
        ["role", "tag", "requests"],
        ["planner", "nightly", "2"],
        ["planner", "node:plan", "3"],
    ]


def test_a_given_runner_must_be_open() -> None:
    """A model over a runner nobody opened says how to open it."""
    model = RunnerChatModel(runner=Runner.from_config(make_config()), role="coder")
    with pytest.raises(UsageError, match="not open"):
        asyncio.run(model.ainvoke("x"))


@pytest.mark.slow
def test_without_the_extra_the_core_imports_and_the_integration_says_what_to_install() -> None:
    """Blocking langchain_core/langgraph: runner imports; the integration names the extra."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["langchain_core"] = None
        sys.modules["langgraph"] = None
        import runner, runner.integrations
        for name in ("runner.integrations.langchain", "runner.integrations.langgraph"):
            try:
                __import__(name)
            except ImportError as exc:
                print(name, "->", exc)
            else:
                print(name, "imported")
        """
    )
    out = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.splitlines() == [
        f"runner.integrations.{mod} -> runner.integrations.{mod} needs {pkg}; "
        "install the extra: pip install 'runner[langgraph]'"
        for mod, pkg in (("langchain", "LangChain"), ("langgraph", "LangGraph"))
    ]
    plain = subprocess.run(
        [sys.executable, "-c", "import sys, runner; print(sorted(m for m in sys.modules "
         "if m.split('.')[0] in ('langchain_core', 'langgraph')))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert plain.strip() == "[]"
