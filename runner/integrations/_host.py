"""A Runner served by an event loop in a thread of its own: :class:`RunnerHost`.

A chat model made by ``RunnerChatModel.from_config`` owns its Runner, and is
called from synchronous code (no loop at all), from LangChain's executor
threads and from any number of ``asyncio.run`` loops, one after another.  A
Runner belongs to the loop that entered it, so the owned one lives in a
daemon thread with its own loop, opened on first use, and every call reaches
it through an anyio :class:`~anyio.from_thread.BlockingPortal`.

The thread is a daemon so that an unclosed host cannot hold the interpreter
open at exit; ``weakref.finalize`` closes it (gracefully: running tasks get the
config's grace period) when the host is garbage-collected or at exit,
whichever comes first.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from concurrent.futures import Future

import anyio
from anyio.from_thread import BlockingPortal

from runner import Result, Runner, Task, UsageError

#: Seconds ``close()`` waits for the thread beyond the runner's grace period.
CLOSE_MARGIN = 5.0


async def run_task(runner: Runner, task: Task) -> Result:
    """``runner.run(task)``, as a plain function a portal or a token can call."""
    return await runner.run(task)


class _Serving:
    """A started host: the thread, its portal and its open Runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._ready: Future[BlockingPortal] = Future()
        self._thread = threading.Thread(
            target=anyio.run, args=(self._serve,), name="runner-host", daemon=True
        )
        self._thread.start()
        # Opening errors (a metrics database that cannot be opened, say) are
        # raised here, in the caller's thread.
        self.portal = self._ready.result()

    async def _serve(self) -> None:
        try:
            async with BlockingPortal() as portal, self.runner:
                self._ready.set_result(portal)
                await portal.sleep_until_stopped()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
                return
            raise

    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self) -> None:
        """Shut the Runner down (its grace period applies) and end the thread."""
        if not self._thread.is_alive():
            return
        if self.in_thread():
            # A finalizer run by the garbage collector inside the host's own
            # loop cannot wait for that loop: close from another thread.
            threading.Thread(target=self.stop, daemon=True).start()
            return
        try:
            self.portal.call(self.portal.stop)
        except RuntimeError:
            return  # the loop has already ended
        self._thread.join(self.runner.config.grace_period + CLOSE_MARGIN)


class RunnerHost:
    """One Runner, opened in its own thread on first use and closed with the host.

    ``runner`` is not open yet; the host opens it and nobody else may.  All
    methods are thread-safe; none may be called from the host's own thread.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._lock = threading.Lock()
        self._serving: _Serving | None = None
        self._finalizer: weakref.finalize[[], RunnerHost] | None = None
        self._closed = False

    def start(self) -> _Serving:
        """The serving thread, started (and the Runner opened) if need be."""
        with self._lock:
            if self._closed:
                raise UsageError("this model's runner is closed; make a new model")
            serving = self._serving
            if serving is None:
                serving = self._serving = _Serving(self.runner)
                self._finalizer = weakref.finalize(self, serving.stop)
            return serving

    @property
    def started(self) -> bool:
        return self._serving is not None

    def call(self, task: Task) -> Result:
        """Run ``task`` from synchronous code (blocks this thread, not the host)."""
        serving = self.start()
        if serving.in_thread():
            raise UsageError("a model's own runner cannot be called from inside its loop")
        return serving.portal.call(run_task, serving.runner, task)

    async def arun(self, task: Task) -> Result:
        """Run ``task`` from an asyncio loop; cancelling the caller cancels the task."""
        serving = self._serving
        if serving is None:
            # Opening the Runner touches files: not on the caller's loop.
            serving = await anyio.to_thread.run_sync(self.start)
        future = serving.portal.start_task_soon(run_task, serving.runner, task)
        # Cancelling the wrapper cancels ``future``, and the portal then
        # cancels runner.run(), which settles the task as cancelled.
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Shut the Runner down and end its thread; later calls raise UsageError."""
        with self._lock:
            self._closed = True
            finalizer = self._finalizer
        if finalizer is not None:
            finalizer()
