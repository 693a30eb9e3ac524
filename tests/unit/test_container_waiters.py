"""The exit waiters a SIGKILL's kill and a stop leave: none once the call has returned, answered or not.

The container service runs on its real store; the worker thread is replaced by a coroutine that plays
the part of ``_signal`` (refusing a container that is not running, or sending a signal nothing answers).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from muslin.engine import containers as containers_module
from muslin.engine.containers import Container, ContainerService
from muslin.engine.store import Store
from muslin.errors import Conflict

CID = "c0ffee" + "0" * 58


def service(tmp_path: Path, engine_call: Any) -> tuple[ContainerService, Store]:
    store = Store(tmp_path)
    c = Container(id=CID, name="web", created="now", image="busybox", image_id="sha256:x", config={},
                  host_config={}, network_mode="none")
    with store.transaction() as db:
        store.put_container(db, c.id, c.name, c.to_doc())
    config = SimpleNamespace(exec_root=tmp_path / "run", sandbox_root=tmp_path / "run" / "netns")
    return ContainerService(store, config, None, None, None, None, engine_call, None), store  # type: ignore[arg-type]


def test_a_sigkill_refused_leaves_no_waiter(tmp_path: Path) -> None:
    async def not_running(fn: Any, *args: Any) -> None:
        raise Conflict(f"Cannot kill container: web: Container {CID} is not running")

    containers, store = service(tmp_path, not_running)
    try:
        with pytest.raises(Conflict):
            asyncio.run(containers.kill("web", int(signal.SIGKILL)))
        assert containers._exit_waiters == {}
    finally:
        store.close()


def test_a_sigkill_not_answered_in_time_leaves_no_waiter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []

    async def signal_sent(fn: Any, ref: str, sig: int) -> None:
        sent.append(sig)  # the process lingers (D state): no exit comes

    monkeypatch.setattr(containers_module, "KILL_WAIT_SECONDS", 0.05)
    containers, store = service(tmp_path, signal_sent)
    try:
        asyncio.run(containers.kill("web", int(signal.SIGKILL)))
        assert sent == [int(signal.SIGKILL)]
        assert containers._exit_waiters == {}
    finally:
        store.close()


def test_an_answered_sigkill_leaves_no_waiter_and_keeps_the_others(tmp_path: Path) -> None:
    async def scenario(containers: ContainerService) -> tuple[int, bool]:
        other = containers.exit_future(CID)  # a `docker wait` of the same container

        async def exits(fn: Any, ref: str, sig: int) -> None:
            async def monitor() -> None:  # what _monitor does when the exit comes
                for fut in containers._exit_waiters.pop(CID, []):
                    fut.set_result(137)
            asyncio.get_running_loop().call_soon(asyncio.ensure_future, monitor())

        containers.engine_call = exits
        await containers.kill("web", int(signal.SIGKILL))
        return await other, CID in containers._exit_waiters

    containers, store = service(tmp_path, None)
    try:
        assert asyncio.run(scenario(containers)) == (137, False)
    finally:
        store.close()


def _runtime(running: bool, exit_code: int) -> SimpleNamespace:
    """A runtime whose run files say the container runs, or exited with ``exit_code``."""
    return SimpleNamespace(state=lambda cid: SimpleNamespace(running=running, exit_code=exit_code))


def test_a_wait_for_a_stopped_container_answers_its_exit_code_and_leaves_no_waiter(tmp_path: Path) -> None:
    containers, store = service(tmp_path, None)
    containers.runtime = _runtime(running=False, exit_code=3)  # type: ignore[assignment]

    async def scenario() -> int:
        return await (await containers.wait("web", "not-running"))

    try:
        assert asyncio.run(scenario()) == 3
        assert containers._exit_waiters == {}
    finally:
        store.close()


def test_a_wait_for_a_running_container_is_answered_by_its_exit(tmp_path: Path) -> None:
    containers, store = service(tmp_path, None)
    containers.runtime = _runtime(running=True, exit_code=0)  # type: ignore[assignment]

    async def scenario() -> int:
        waiting = await containers.wait("web", "not-running")
        for fut in containers._exit_waiters.pop(CID, []):  # what _monitor does when the exit comes
            fut.set_result(143)
        return await waiting

    try:
        assert asyncio.run(scenario()) == 143
    finally:
        store.close()
