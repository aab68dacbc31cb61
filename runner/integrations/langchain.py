"""runner as a LangChain chat model: :class:`RunnerChatModel`.

::

    async with Runner.from_config("runner.yaml") as runner:
        model = RunnerChatModel(runner=runner, role="coder")
        answer = await model.ainvoke("Write a haiku about retries.")
        answer.response_metadata["provider"]        # who served it, after fallbacks

    model = RunnerChatModel.from_config("runner.yaml", role="coder")   # owns a Runner
    answer = model.invoke("...")                     # from synchronous code too

Each call is one runner task for the model's role, so routing, fallback,
retries, limits and metric events are runner's.  The role comes from
``configurable["runner_role"]`` when the call's config has one, else from the
model (``RunnerChatModel(role=...)`` or :meth:`RunnerChatModel.with_role`),
else runner's default provider serves it.  What runner cannot honour (tool
messages, tools, multimodal content, unknown keywords) raises
:class:`UnsupportedInputError` rather than being dropped; a task that does not
complete raises :class:`TaskFailedError`.

Needs the ``langgraph`` extra (``pip install 'runner[langgraph]'``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, Self

import anyio
import anyio.lowlevel
import msgspec

try:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.language_models import BaseChatModel, LanguageModelInput
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        BaseMessage,
        ChatMessage,
        HumanMessage,
        SystemMessage,
    )
    from langchain_core.messages.ai import UsageMetadata
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
    from langchain_core.tools import BaseTool
    from pydantic import PrivateAttr
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "runner.integrations.langchain needs LangChain; install the extra: "
        "pip install 'runner[langgraph]'"
    ) from exc

from runner import Message, Parameters, Result, Runner, RunnerError, Task, UsageError
from runner._task_check import MAX_TAG_LENGTH, MAX_TAGS, tags_problem
from runner.integrations._host import RunnerHost, run_task

if TYPE_CHECKING:
    from runner.config._model import Config

__all__ = [
    "RunnerChatModel",
    "TaskFailedError",
    "UnsupportedInputError",
    "task_tags",
]

#: The ``configurable`` key that picks the role of one call.
ROLE_KEY: Final = "runner_role"
#: Call keywords that become task parameters.
PARAMETER_KEYS: Final = frozenset({"temperature", "max_tokens", "stop", "top_p", "seed"})
#: Internal keywords from the invoke overrides to ``_agenerate``/``_astream``.
_CALL_ROLE: Final = "runner_role"
_CALL_TAGS: Final = "runner_tags"
#: LangChain's own positional tags (``seq:step:2``, ``graph:step:5``...) change
#: with the shape of the chain, so they would split one node into many groups.
_NOISY_TAG_PREFIXES: Final = ("seq:step:", "graph:step:", "map:key:", "langsmith:")


class TaskFailedError(RunnerError):
    """A model call whose runner task did not complete.

    ``code`` is the task's error code (``rate_limited``, ``auth_failed``,
    ``cancelled``...), ``provider`` the provider of its last attempt,
    ``retryable`` whether trying again may help, and ``result`` the whole
    Result (history, attempts).  A LangGraph ``RetryPolicy`` can retry on it:
    ``retry_on=lambda e: isinstance(e, TaskFailedError) and e.retryable``.
    """

    def __init__(self, result: Result) -> None:
        error = result.error
        self.result = result
        self.task_id = result.id
        self.status = result.status
        self.code = error.code if error is not None else "unknown"
        self.provider = (error.provider if error is not None else None) or result.provider
        self.retryable = bool(error.retryable) if error is not None else False
        message = error.message if error is not None else "no error recorded"
        who = f" on {self.provider}" if self.provider else ""
        super().__init__(f"task {result.id} {result.status}{who}: {self.code}: {message}")


class UnsupportedInputError(UsageError, ValueError):
    """A message, content block, tool or keyword that runner cannot honour.

    Also a ValueError, so LangGraph's default retry policy does not retry it.
    """


class RunnerChatModel(BaseChatModel):
    """A LangChain chat model whose every call is a runner task for ``role``.

    ``runner`` is a Runner the caller has open (``async with``), or, for a
    model made by :meth:`from_config`, the Runner the model owns.  The
    parameter fields are the model's defaults; call keywords (``invoke(...,
    temperature=0)`` or ``bind``) override them, and both override the
    config's role and provider parameters.
    """

    runner: Runner
    role: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None

    # The model's own Runner (from_config), shared with its copies.
    _host: RunnerHost | None = PrivateAttr(default=None)
    # The event loop of a given runner, so invoke() from a worker thread (how
    # LangGraph runs synchronous nodes of an async graph) can reach it.
    _token: anyio.lowlevel.EventLoopToken | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._token = _current_token()

    @classmethod
    def from_config(
        cls,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        role: str | None = None,
        runner_options: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Self:
        """A model that owns a Runner for ``config`` (a path, a Config or ``None``).

        The Runner is opened on first use, in a thread of its own, and shut
        down by :meth:`close`, when the model and its copies are
        garbage-collected, or at exit.  ``runner_options`` go to
        ``Runner.from_config`` (``metrics=``, ``providers=``, ...); ``fields``
        are the model's (``temperature=0``...).
        """
        options = dict(runner_options or {})
        host = RunnerHost(Runner.from_config(config, **options))
        model = cls(runner=host.runner, role=role, **fields)
        model._host = host
        return model

    # -- choosing the role ----------------------------------------------------------

    def with_role(self, role: str | None) -> Self:
        """The same model (same Runner, same defaults) for another role."""
        return self.model_copy(update={"role": role})

    # -- closing --------------------------------------------------------------------

    def close(self) -> None:
        """Shut down the Runner this model owns (a given runner is left alone)."""
        if self._host is not None:
            self._host.close()

    async def aclose(self) -> None:
        """:meth:`close`, without blocking the loop while running tasks finish."""
        if self._host is not None:
            await anyio.to_thread.run_sync(self._host.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- LangChain's entry points: read role and tags from the call's config ---------

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return super().invoke(input, config, stop=stop, **self._with_call(config, kwargs))

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **self._with_call(config, kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        yield from super().stream(input, config, stop=stop, **self._with_call(config, kwargs))

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        call = self._with_call(config, kwargs)
        async for chunk in super().astream(input, config, stop=stop, **call):
            yield chunk

    def _with_call(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        full = ensure_config(config)
        role = full.get("configurable", {}).get(ROLE_KEY, self.role)
        return {**kwargs, _CALL_ROLE: role, _CALL_TAGS: task_tags(full)}

    # -- what BaseChatModel asks of a subclass --------------------------------------

    @property
    def _llm_type(self) -> str:
        return "runner"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"role": self.role, **self._defaults()}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Always raises: runner's providers are called without tools."""
        raise UnsupportedInputError(
            "runner does not pass tools to providers; "
            "bind_tools and with_structured_output are not supported"
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        task = self._task(messages, stop, kwargs)
        return _chat_result(_completed(self._run_sync(task)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        task = self._task(messages, stop, kwargs)
        return _chat_result(_completed(await self._run(task)))

    # runner does not stream yet: a stream is the whole answer as one chunk,
    # marked last, so ``astream`` and LangGraph's "messages" mode get a real
    # AIMessageChunk with the usage and metadata on it.

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        task = self._task(messages, stop, kwargs)
        yield _one_chunk(_completed(self._run_sync(task)))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        task = self._task(messages, stop, kwargs)
        yield _one_chunk(_completed(await self._run(task)))

    # -- running the task -----------------------------------------------------------

    def _defaults(self) -> dict[str, Any]:
        fields = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def _task(
        self, messages: Sequence[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Task:
        call = dict(kwargs)
        role = call.pop(_CALL_ROLE, self.role)
        tags = call.pop(_CALL_TAGS, ())
        call.pop("stream", None)  # LangChain's own switch, decided before we are called
        unknown = sorted(set(call) - PARAMETER_KEYS)
        if unknown:
            known = ", ".join(sorted(PARAMETER_KEYS))
            raise UnsupportedInputError(
                f"runner cannot honour {', '.join(map(repr, unknown))}; "
                f"the parameters it passes on are {known}"
            )
        if stop is not None:
            call["stop"] = stop
        return Task(
            role=role,
            messages=to_messages(messages),
            parameters=_parameters({**self._defaults(), **call}),
            tags=tags or None,
        )

    async def _run(self, task: Task) -> Result:
        if self._host is not None:
            return await self._host.arun(task)
        if self._token is None:
            self._token = _current_token()
        return await self.runner.run(task)

    def _run_sync(self, task: Task) -> Result:
        if self._host is not None:
            return self._host.call(task)
        if _current_token() is not None:
            raise UsageError(
                "invoke() would block the event loop this runner needs; use ainvoke() in async code"
            )
        try:
            return anyio.from_thread.run(run_task, self.runner, task, token=self._token)
        except (anyio.NoEventLoopError, anyio.RunFinishedError) as exc:
            raise UsageError(
                "invoke() has no way to reach this runner's event loop: make the model "
                "inside that loop (or use ainvoke), or use RunnerChatModel.from_config"
            ) from exc


# -- mapping --------------------------------------------------------------------------


def to_messages(messages: Sequence[BaseMessage]) -> tuple[Message, ...]:
    """LangChain messages as runner messages; anything else raises UnsupportedInputError."""
    out: list[Message] = []
    for i, m in enumerate(messages):
        role = _role_of(m, i)
        out.append(Message(role=role, content=_text_of(m, i)))
    if not any(m.role != "system" for m in out):
        raise UnsupportedInputError("the messages have no human or AI message to answer")
    return tuple(out)


MessageRole = Literal["system", "user", "assistant"]
#: ChatMessage roles runner can send, under both spellings LangChain uses.
_CHAT_ROLES: Final[Mapping[str, MessageRole]] = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
}


def _role_of(m: BaseMessage, i: int) -> MessageRole:
    if isinstance(m, SystemMessage):
        return "system"
    if isinstance(m, HumanMessage):
        return "user"
    if isinstance(m, AIMessage):
        if m.tool_calls or m.invalid_tool_calls:
            raise UnsupportedInputError(
                f"message {i} is an AI message with tool calls; runner does not pass tools"
            )
        return "assistant"
    if isinstance(m, ChatMessage):
        role = _CHAT_ROLES.get(m.role)
        if role is None:
            raise UnsupportedInputError(
                f"message {i} has role {m.role!r}, which runner cannot send"
            )
        return role
    raise UnsupportedInputError(
        f"message {i} is a {type(m).__name__} ({m.type!r}); runner sends only "
        "system, human and AI messages"
    )


def _text_of(m: BaseMessage, i: int) -> str:
    content = m.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        else:
            kind = block.get("type", "unknown")
            raise UnsupportedInputError(
                f"message {i} has a {kind!r} content block; runner sends text only"
            )
    return "".join(parts)


def _parameters(values: dict[str, Any]) -> Parameters | None:
    if not values:
        return None
    try:
        return msgspec.convert(values, Parameters)
    except msgspec.ValidationError as exc:
        raise UnsupportedInputError(f"invalid parameter: {exc}") from exc


def task_tags(config: RunnableConfig) -> tuple[str, ...]:
    """The tags a call's task carries: run name, LangGraph node, then LangChain tags.

    ``run:<run_name>`` and ``node:<langgraph_node>`` come first; LangChain's
    positional tags (``seq:step:N``, ``graph:step:N``...) are left out, since
    they name a position rather than a piece of work.  Each tag is stripped
    and cut to MAX_TAG_LENGTH characters, repeats and tags a task may not
    carry (a control character, a ``|``) are dropped, and at most MAX_TAGS
    are kept, so a graph's tags never get its task rejected.
    """
    candidates: list[str] = []
    run_name = config.get("run_name")
    if isinstance(run_name, str):
        candidates.append(f"run:{run_name.strip()}")
    node = (config.get("metadata") or {}).get("langgraph_node")
    if isinstance(node, str):
        candidates.append(f"node:{node.strip()}")
    candidates.extend(
        tag.strip()
        for tag in config.get("tags") or ()
        if isinstance(tag, str) and not tag.startswith(_NOISY_TAG_PREFIXES)
    )
    out: dict[str, None] = {}
    for tag in candidates:
        short = tag[:MAX_TAG_LENGTH]
        if short and not short.endswith(":") and tags_problem((short,)) is None:
            out[short] = None
    return tuple(out)[:MAX_TAGS]


def _completed(result: Result) -> Result:
    if result.status != "completed":
        raise TaskFailedError(result)
    return result


def _usage(result: Result) -> UsageMetadata:
    usage = result.usage
    if usage is None:
        return UsageMetadata(input_tokens=0, output_tokens=0, total_tokens=0)
    return UsageMetadata(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )


def response_metadata(result: Result) -> dict[str, Any]:
    """What ``AIMessage.response_metadata`` says about the task behind it."""
    return {
        "provider": result.provider,
        "model": result.model,
        # LangChain's own key for the model, which LangSmith reads.
        "model_name": result.model,
        "role": result.role,
        "attempts": result.attempts,
        "fallback_used": result.fallback_used,
        "finish_reason": result.finish_reason,
        "cost_usd": result.cost_usd,
        "latency_ms": result.latency_ms,
        "task_id": result.id,
    }


def _chat_result(result: Result) -> ChatResult:
    message = AIMessage(
        content=result.output or "",
        usage_metadata=_usage(result),
        response_metadata=response_metadata(result),
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


def _one_chunk(result: Result) -> ChatGenerationChunk:
    chunk = AIMessageChunk(
        content=result.output or "",
        usage_metadata=_usage(result),
        response_metadata=response_metadata(result),
        chunk_position="last",
    )
    return ChatGenerationChunk(message=chunk)


def _current_token() -> anyio.lowlevel.EventLoopToken | None:
    """This thread's event loop, if one runs here.

    In an executor thread LangChain copies the caller's context, so anyio may
    take the thread for an asyncio one and fail with a plain RuntimeError
    rather than NoEventLoopError.
    """
    try:
        return anyio.lowlevel.current_token()
    except RuntimeError:
        return None
