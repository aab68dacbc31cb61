"""runner under LangGraph, offline: per-node roles, fallbacks, then metrics by role and node.

    pip install 'runner[langgraph]'
    python examples/langgraph_agent.py

Uses examples/langgraph.yaml (simulated providers: no keys, no network) and
writes .runner/langgraph-metrics.db in the working directory.  See
docs/langgraph.md.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from runner import Runner
from runner.integrations.langchain import RunnerChatModel
from runner.integrations.langgraph import default_workflow_graph

CONFIG = Path(__file__).with_name("langgraph.yaml")


def show(name: str, message: AIMessage) -> None:
    meta = message.response_metadata
    tokens = message.usage_metadata["total_tokens"] if message.usage_metadata else 0
    fallback = "  (fallback)" if meta["fallback_used"] else ""
    print(
        f"{name:<14} {meta['role']:<10} {meta['provider']:<12} "
        f"attempts={meta['attempts']} tokens={tokens}{fallback}"
    )


def draft_and_review(model: RunnerChatModel) -> Any:
    """A graph of your own: each node picks its role with with_role()."""
    coder, reviewer = model.with_role("coder"), model.with_role("reviewer")

    async def draft(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await coder.ainvoke(state["messages"])]}

    async def review(state: MessagesState) -> dict[str, Any]:
        code = state["messages"][-1].text
        return {"messages": [await reviewer.ainvoke(f"Review this code:\n\n{code}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("draft", draft)
    builder.add_node("review", review)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_edge("review", END)
    return builder.compile()


async def main() -> None:
    async with Runner.from_config(CONFIG) as runner:
        model = RunnerChatModel(runner=runner)

        print("runner's default workflow as a graph:")
        state = await default_workflow_graph(model).ainvoke(
            {"input": "A CLI that renames photos by EXIF date"}
        )
        for message in state["stages"]:
            show(message.name or "?", message)

        print("\na graph of your own:")
        state = await draft_and_review(model).ainvoke(
            {"messages": [HumanMessage("Write a function that parses ISO 8601 durations.")]}
        )
        for name, message in zip(["draft", "review"], state["messages"][1:], strict=True):
            assert isinstance(message, AIMessage)
            show(name, message)


def metrics_by_role_and_node() -> None:
    """What runner's metrics CLI says about every provider attempt above."""
    print("\nmetrics by role:", flush=True)
    command = [sys.executable, "-m", "runner", "metrics", "summary", "--config", str(CONFIG)]
    subprocess.run([*command, "--group-by", "role"], check=True)  # noqa: S603 - our own CLI
    # Each call's task carries its graph node as the tag node:<name>.
    print("\nmetrics by node:", flush=True)
    subprocess.run([*command, "--group-by", "tag"], check=True)  # noqa: S603 - our own CLI


if __name__ == "__main__":
    asyncio.run(main())  # leaving the runner flushes its metric events
    metrics_by_role_and_node()
