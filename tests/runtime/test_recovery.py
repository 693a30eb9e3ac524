"""Containers outlive the daemon that started them; a restarted daemon takes them back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from muslin.runtime import Runtime, shim_processes

from .conftest import collect

pytestmark = pytest.mark.root

# A daemon that starts a container and then dies without a word (SIGKILL: no cleanup of any kind).
CRASHING_DAEMON = """
import asyncio, os, signal, sys
from pathlib import Path
from muslin.runtime import ContainerSpec, ImageStore, Runtime

rt = Runtime(Path(sys.argv[1]), Path(sys.argv[2]), ImageStore(Path(sys.argv[3])))
rt.create(ContainerSpec(id=sys.argv[4], image="busybox", netns_path=sys.argv[5],
                        args=["sh", "-c", "echo started; while :; do sleep 0.05; done"]))
if sys.argv[6] == "start":
    rt.start(sys.argv[4])
else:
    asyncio.run(rt.attach(sys.argv[4]))  # a shim now waits for the start
os.kill(os.getpid(), signal.SIGKILL)
"""


def start_and_crash(runtime: Runtime, busybox_store, netns_path: str, last_step: str = "start") -> str:
    cid = uuid.uuid4().hex
    daemon = subprocess.run([sys.executable, "-c", CRASHING_DAEMON, str(runtime.root), str(runtime.state_root),
                             str(busybox_store.root), cid, netns_path, last_step], capture_output=True, timeout=60)
    assert daemon.returncode == -signal.SIGKILL, daemon.stderr.decode()
    # The dead daemon's shim spawner notices its stdin closing and leaves by itself (the shims it
    # forked share its command line, but they work in their state directories, it in /).
    deadline = time.monotonic() + 5
    while spawners(runtime) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert spawners(runtime) == []
    return cid


def spawners(runtime: Runtime) -> list[int]:
    found = []
    for pid in shim_processes(runtime.state_root):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == "/":
                found.append(pid)
        except OSError:
            pass
    return found


def wait_logged(runtime: Runtime, cid: str, text: bytes) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(text in e.data for e in runtime.logs(cid)):
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never logged")


def test_container_survives_its_daemon_and_is_taken_back(runtime: Runtime, busybox_store, netns_path) -> None:
    cid = start_and_crash(runtime, busybox_store, netns_path)
    (found,) = runtime.recover()
    assert (found.id, found.running, found.exited) == (cid, True, False)
    state = runtime.state(cid)
    assert (state.status, state.started_at) == ("running", found.started_at)
    assert state.shim_pid and os.path.exists(f"/proc/{state.pid}")
    wait_logged(runtime, cid, b"started")

    async def take_over() -> None:
        exec_id = runtime.exec_create(cid, ["echo", "still here"])
        stream = await runtime.exec_start(exec_id)
        assert await collect(stream) == (b"still here\n", b"")
        attached = await runtime.attach(cid)
        waiter = await runtime.exit_waiter(cid)
        assert await runtime.stop(cid, timeout=0.2) is True
        assert await waiter.wait() == 137  # sh as pid 1 ignores SIGTERM
        await collect(attached)
        assert attached.exit_code == 137

    asyncio.run(take_over())
    assert runtime.state(cid).status == "exited"


def test_a_dead_shim_is_settled_on_recovery(runtime: Runtime, busybox_store, netns_path) -> None:
    cid = start_and_crash(runtime, busybox_store, netns_path)
    wait_logged(runtime, cid, b"started")
    state = runtime.state(cid)
    container_pid = state.pid
    os.kill(state.shim_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while runtime.state(cid).shim_pid and time.monotonic() < deadline:
        time.sleep(0.02)
    (found,) = runtime.recover()
    assert (found.running, found.exited, found.exit_code) == (False, True, 255)
    state = runtime.state(cid)
    assert (state.status, state.exit_code) == ("exited", 255)
    assert "shim" in state.error
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{container_pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{container_pid}"), "the orphaned container still runs"


def test_a_created_container_waits_for_the_next_daemon(runtime: Runtime, busybox_store, netns_path) -> None:
    cid = start_and_crash(runtime, busybox_store, netns_path, last_step="attach")
    (found,) = runtime.recover()
    assert (found.running, found.started_at) == (False, 0)
    state = runtime.state(cid)
    assert (state.status, bool(state.shim_pid)) == ("created", True)

    async def start_now() -> None:
        attached = await runtime.attach(cid)
        await asyncio.to_thread(runtime.start, cid)
        assert (await asyncio.wait_for(attached.read(), 10)) == ("stdout", b"started\n")
        assert await runtime.stop(cid, timeout=0) is True

    asyncio.run(start_now())


def test_recovery_clears_what_an_interrupted_delete_left(runtime: Runtime) -> None:
    (runtime.state_root / "f").mkdir()
    (runtime.state_root / "f" / "shim.json").write_text("{}")
    (runtime.root / "containers" / "half-made").mkdir()
    assert runtime.recover() == []
    assert sorted(p.name for p in runtime.state_root.iterdir()) == ["runc"]
    assert list((runtime.root / "containers").iterdir()) == []
