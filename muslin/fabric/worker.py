"""The agent's kernel thread: an Executor of one daemon thread that runs calls in the order they came.

pyroute2's synchronous handle runs an event loop of its own on the thread that made it, so every kernel call
of the agent runs on this one thread, never on the agent's event loop. The thread is a daemon, unlike a
ThreadPoolExecutor's worker (which the interpreter joins at exit): a call stuck in the kernel or on a daemon
such as BIRD delays a stopping agent only as long as its shutdown chooses to wait, and never holds it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_Call = tuple[Future, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class KernelThread(Executor):
    def __init__(self, name: str = "kernel") -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if self._closed:
            raise RuntimeError("the kernel thread is shut down")
        future: Future = Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; with cancel_futures, the queued ones are cancelled (the running one cannot be)."""
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    call = self._calls.get_nowait()
                except queue.Empty:
                    break
                if call is not None:
                    call[0].cancel()
        self._calls.put(None)
        if wait:
            self._thread.join()

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued: its caller has gone
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller, as ThreadPoolExecutor does
                future.set_exception(exc)
            else:
                future.set_result(result)
