"""Side by side with LiteLLM: per-task overhead of runner versus ``litellm.Router``.

Both sides run the same number of tasks at the same concurrency, in the same
process and event loop, in interleaved repetitions (the order alternates, so
neither side always runs on a warmer or cooler machine):

* runner: ``run_many`` over a role chain of three zero-latency simulated
  providers, with the SQLite metrics writer on (a fresh database each time);
  the clock includes opening the runner and the final metrics flush;
* LiteLLM: ``Router.acompletion`` over three deployments of one model name
  with ``mock_response``, so no HTTP is made; a pool of workers the size of
  runner's concurrency pulls from one task list.

LiteLLM is told to use its bundled model cost map
(``LITELLM_LOCAL_MODEL_COST_MAP``) and has telemetry off, so it never
reaches for the network.  The case is skipped when litellm is not installed
(``pip install -e '.[compare]'``).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio

from benchmarks._fixtures import require_runner, run_timed, sim_config
from benchmarks._harness import Case, Metric, Settings, Skip, Target

CONCURRENCY = 64
DEPLOYMENTS = 3
MODEL = "bench-model"


def import_litellm() -> Any:
    """Import litellm with its network-reaching features off; skip when it is missing."""
    # Must be set before the import: litellm reads it when it loads its cost map.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    try:
        import litellm  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise Skip(
            "litellm is not installed; install the compare extra: pip install -e '.[compare]'"
        ) from exc
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm.callbacks = []
    return litellm


def make_router(litellm: Any) -> Any:
    """A Router over three deployments of one model name, all answering from ``mock_response``."""
    model_list = [
        {
            "model_name": MODEL,
            "litellm_params": {
                "model": "openai/gpt-4o-mini",
                "api_key": "sk-fake-benchmark-key",
                "mock_response": "ok",
            },
            "model_info": {"id": f"deployment-{i}"},
        }
        for i in range(DEPLOYMENTS)
    ]
    return litellm.Router(model_list=model_list)


async def litellm_timed(router: Any, count: int) -> float:
    """``count`` acompletion calls through ``CONCURRENCY`` workers; wall seconds."""
    todo: Iterator[int] = iter(range(count))
    answered = 0

    async def worker() -> None:
        nonlocal answered
        for i in todo:
            response = await router.acompletion(
                model=MODEL,
                messages=[{"role": "user", "content": f"Write function number {i}."}],
                mock_response="ok",
            )
            if response.choices[0].message.content == "ok":
                answered += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(CONCURRENCY):
            tg.start_soon(worker)
    elapsed = time.perf_counter() - started
    if answered != count:
        raise RuntimeError(f"litellm answered {answered} of {count} calls")
    return elapsed


async def interleaved(
    router: Any, count: int, repetitions: int, scratch: str
) -> tuple[list[float], list[float]]:
    """Warm both sides up, then alternate them; µs per task for each repetition."""
    runs = 0

    async def runner_once() -> float:
        nonlocal runs
        runs += 1
        db = Path(scratch, f"litellm-compare-{runs}.db")
        config = sim_config(providers=DEPLOYMENTS, concurrency=CONCURRENCY, db_path=db)
        return await run_timed(config, count, prefix=f"r{runs}")

    async def settle() -> None:
        # LiteLLM finishes its logging in background tasks and threads after
        # each call returns; let them run now rather than inside the other
        # side's timing (right after a LiteLLM pass runner measured up to 7x
        # slower without this).  Collecting garbage here, untimed, keeps one
        # side's garbage from being collected on the other side's clock.
        await anyio.sleep(0.5)
        gc.collect()

    await runner_once()
    await litellm_timed(router, min(count, 500))
    await settle()
    ours: list[float] = []
    theirs: list[float] = []
    for rep in range(repetitions):
        order = ("runner", "litellm") if rep % 2 == 0 else ("litellm", "runner")
        for side in order:
            if side == "runner":
                ours.append(await runner_once() / count * 1e6)
            else:
                theirs.append(await litellm_timed(router, count) / count * 1e6)
            await settle()
    return ours, theirs


def run(settings: Settings) -> Sequence[Metric]:
    require_runner()
    litellm = import_litellm()
    count = 5_000 if settings.full else 2_000
    router = make_router(litellm)
    ours, theirs = anyio.run(
        interleaved, router, count, settings.repetitions, settings.scratch, backend="asyncio"
    )
    ratios = [t / o for o, t in zip(ours, theirs, strict=True)]
    version = metadata.version("litellm")
    note = f"{count:,} tasks, concurrency {CONCURRENCY}, same process, interleaved"
    return [
        Metric(name="runner µs/task (sqlite metrics)", unit="µs", samples=ours, note=note),
        Metric(name="litellm Router µs/task", unit="µs", samples=theirs, note=f"litellm {version}"),
        Metric(
            name="ratio litellm/runner",
            unit="x",
            samples=ratios,
            target=Target(op=">=", value=20, text="runner at least 20x lower overhead"),
            note="per interleaved pair",
        ),
    ]


CASE = Case(name="litellm", title="runner vs litellm.Router(mock_response)", run=run)
