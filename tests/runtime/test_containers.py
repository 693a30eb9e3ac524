"""Containers run by runc through their shims: output, exit codes, TTYs, exec, signals, logs, cleanup."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from muslin.errors import Conflict, NotModified
from muslin.runtime import (ContainerSpec, LogFilter, NoSuchContainer, NoSuchImage, NotRunning, Runtime,
                                   StartFailed)
from muslin.runtime.errors import InvalidArgument
from muslin.kernel import netns

from .conftest import collect, read_until

pytestmark = pytest.mark.root


def new_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def spec(netns_path: str | None, *args: str, **kw) -> ContainerSpec:
    return ContainerSpec(id=kw.pop("id", None) or new_id(), image=kw.pop("image", "busybox"), args=list(args),
                         netns_path=netns_path, **kw)


async def run_attached(rt: Runtime, s: ContainerSpec) -> tuple[bytes, bytes, int]:
    """As `docker run` does it: create, attach, wait, start; then collect until exit."""
    rt.create(s)
    stream = await rt.attach(s.id)
    waiter = await rt.exit_waiter(s.id, next_run=True)
    await asyncio.to_thread(rt.start, s.id)
    out, err = await collect(stream)
    code = await asyncio.wait_for(waiter.wait(), 10)
    assert stream.exit_code == code
    return out, err, code


def test_attach_before_start_gets_every_byte_and_the_exit_code(runtime: Runtime, netns_path: str) -> None:
    async def main() -> None:
        for _ in range(5):  # `docker run --rm busybox echo hi` must print hi every time
            s = spec(netns_path, "echo", "hi")
            assert await run_attached(runtime, s) == (b"hi\n", b"", 0)
            await asyncio.to_thread(runtime.delete, s.id)
        s = spec(netns_path, "sh", "-c", "echo out; echo err >&2; exit 3")
        out, err, code = await run_attached(runtime, s)
        assert (out, err, code) == (b"out\n", b"err\n", 3)
        state = runtime.state(s.id)
        assert (state.status, state.running, state.exit_code, state.pid) == ("exited", False, 3, 0)
        assert state.created_at <= state.started_at <= state.finished_at

    asyncio.run(main())


def test_container_gets_its_namespaces_hostname_and_etc_files(runtime: Runtime, netns_path: str) -> None:
    s = spec(netns_path, "sh", "-c",
             "readlink /proc/self/ns/net; hostname; cat /etc/hosts /etc/resolv.conf; echo pid=$$; ip -o link",
             hosts="127.0.0.1 localhost\n10.0.0.5 me\n", resolv_conf="nameserver 10.0.0.1\n")
    out, err, code = asyncio.run(run_attached(runtime, s))
    lines = out.decode().splitlines()
    assert code == 0, err
    assert lines[0] == f"net:[{os.stat(netns_path).st_ino}]"
    assert lines[1] == s.id[:12]
    assert lines[2:5] == ["127.0.0.1 localhost", "10.0.0.5 me", "nameserver 10.0.0.1"]
    assert lines[5] == "pid=1"  # its own pid namespace
    assert [line.split(":")[1].strip() for line in lines[6:]] == ["lo"]  # only what the engine put there


HOST_NETWORK_SCRIPT = """
import asyncio, sys
from pathlib import Path
from muslin.runtime import ContainerSpec, ImageStore, Runtime

async def main():
    rt = Runtime(Path(sys.argv[1]), Path(sys.argv[2]), ImageStore(Path(sys.argv[3])))
    rt.create(ContainerSpec(id=sys.argv[4], image="busybox", args=["readlink", "/proc/self/ns/net"]))
    stream = await rt.attach(sys.argv[4])
    await asyncio.to_thread(rt.start, sys.argv[4])
    while (chunk := await stream.read()) is not None:
        sys.stdout.write(chunk[1].decode())
    rt.close()

asyncio.run(main())
"""


def test_host_network_shares_the_daemons_namespace(runtime: Runtime, busybox_store, make_netns, tmp_path) -> None:
    # "Host" is the namespace muslind runs in; a daemon started inside a test namespace stands in for it.
    daemon_ns = netns.path_for(make_netns("mrt-"))
    cid = new_id()
    out = subprocess.run(["nsenter", f"--net={daemon_ns}", sys.executable, "-c", HOST_NETWORK_SCRIPT,
                          str(runtime.root), str(runtime.state_root), str(busybox_store.root), cid],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == f"net:[{os.stat(daemon_ns).st_ino}]"
    assert runtime.state(cid).exit_code == 0


def test_logs_are_kept_without_any_attacher(runtime: Runtime, netns_path: str) -> None:
    async def main() -> None:
        s = spec(netns_path, "sh", "-c", "echo one; echo two >&2; printf 'no newline'")
        runtime.create(s)
        waiter = await runtime.exit_waiter(s.id, next_run=True)
        await asyncio.to_thread(runtime.start, s.id)
        assert await asyncio.wait_for(waiter.wait(), 10) == 0
        assert await runtime.wait_exit(s.id, next_run=False) == 0  # not running: answered at once
        entries = runtime.logs(s.id)
        assert [(e.stream, e.data) for e in entries] == [
            ("stdout", b"one\n"), ("stderr", b"two\n"), ("stdout", b"no newline")]
        assert all(e.time.endswith("Z") and abs(e.timestamp - time.time()) < 60 for e in entries)
        assert [e.data for e in runtime.logs(s.id, LogFilter(tail=1))] == [b"no newline"]
        assert [e.data for e in runtime.logs(s.id, LogFilter(stdout=False))] == [b"two\n"]
        assert runtime.logs(s.id, LogFilter(since=time.time() + 60)) == []
        followed = [e.data async for e in runtime.follow_logs(s.id, LogFilter(tail=2))]
        assert followed == [b"two\n", b"no newline"]

    asyncio.run(main())


def test_follow_logs_streams_until_the_container_exits(runtime: Runtime, netns_path: str) -> None:
    async def main() -> list[bytes]:
        s = spec(netns_path, "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done")
        runtime.create(s)
        await asyncio.to_thread(runtime.start, s.id)
        return [e.data async for e in runtime.follow_logs(s.id)]

    assert asyncio.run(asyncio.wait_for(main(), 10)) == [b"1\n", b"2\n", b"3\n"]


def test_tty_session_is_interactive_and_resizable(runtime: Runtime, netns_path: str) -> None:
    async def main() -> None:
        s = spec(netns_path, tty=True, open_stdin=True, console_size=(20, 70))  # the image's CMD: sh
        runtime.create(s)
        stream = await runtime.attach(s.id, stdin=True, stdin_once=True)
        exit_code = await runtime.exit_waiter(s.id, next_run=True)
        stream.write(b"stty size\n")  # typed before the start: kept until the pty exists
        await asyncio.to_thread(runtime.start, s.id)
        await read_until(stream, b"20 70\r\n")  # and sized from the start
        runtime.resize(s.id, 33, 101)
        stream.write(b"tty; stty size; echo $TERM\n")
        seen = await read_until(stream, b"xterm\r\n")
        assert b"/dev/pts/0\r\n33 101\r\n" in seen  # a pty: CRLF line ends
        stream.write(b"exit 42\n")
        await collect(stream)
        assert await exit_code.wait() == 42
        logged = b"".join(e.data for e in runtime.logs(s.id))
        assert b"33 101" in logged and all(e.stream == "stdout" for e in runtime.logs(s.id))

    asyncio.run(main())


def test_stdin_once_closes_the_containers_stdin(runtime: Runtime, netns_path: str) -> None:
    async def main() -> None:
        s = spec(netns_path, "sh", "-c", "cat; echo done", open_stdin=True)
        runtime.create(s)
        stream = await runtime.attach(s.id, stdin=True, stdin_once=True)
        await asyncio.to_thread(runtime.start, s.id)
        stream.write(b"piped\n")
        await stream.drain()
        stream.close_stdin()
        assert await collect(stream) == (b"piped\ndone\n", b"")
        assert stream.exit_code == 0

    asyncio.run(main())


def test_exec_runs_in_the_container_with_exit_codes(runtime: Runtime, netns_path: str) -> None:
    async def main() -> None:
        s = spec(netns_path, "sh", "-c", "echo ready > /tmp/flag; sleep 30")
        runtime.create(s)
        await asyncio.to_thread(runtime.start, s.id)
        eid = runtime.exec_create(s.id, ["sh", "-c", "cat /tmp/flag; echo oops >&2; hostname; exit 7"])
        assert runtime.exec_inspect(eid).running is False and runtime.exec_inspect(eid).exit_code is None
        stream = await runtime.exec_start(eid)
        assert stream is not None
        assert await collect(stream) == (b"ready\n" + s.id[:12].encode() + b"\n", b"oops\n")
        assert stream.exit_code == 7
        info = runtime.exec_inspect(eid)
        assert (info.running, info.exit_code, info.container_id) == (False, 7, s.id)
        with pytest.raises(Conflict):
            await runtime.exec_start(eid)

        missing = runtime.exec_create(s.id, ["no-such-program"])
        with pytest.raises(StartFailed) as failed:
            await runtime.exec_start(missing)
        assert failed.value.exit_code == 126 and "no-such-program" in failed.value.message
        assert runtime.exec_inspect(missing).exit_code == 126

        piped = runtime.exec_create(s.id, ["cat"], stdin=True)
        stream = await runtime.exec_start(piped)
        stream.write(b"through stdin\n")
        stream.close_stdin()
        assert await collect(stream) == (b"through stdin\n", b"")

        shell = runtime.exec_create(s.id, ["sh"], tty=True, stdin=True, env=["GREETING=hello", "HOSTNAME=other"],
                                    workdir="/tmp", console_size=(5, 60))
        stream = await runtime.exec_start(shell)
        stream.write(b"stty size\n")
        await read_until(stream, b"5 60\r\n")
        runtime.exec_resize(shell, 12, 34)
        stream.write(b"stty size; pwd; echo $GREETING $HOSTNAME; exit 3\n")
        out, _ = await collect(stream)
        assert b"12 34\r\n/tmp\r\nhello other\r\n" in out and stream.exit_code == 3
        assert runtime.logs(s.id) == []  # exec output is not the container's log

    asyncio.run(main())


def test_stop_signals_then_kills(runtime: Runtime, netns_path: str) -> None:
    async def main() -> None:
        polite = spec(netns_path, "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done")
        stubborn = spec(netns_path, "sleep", "30")  # pid 1 without a handler: SIGTERM does nothing
        for s in (polite, stubborn):
            runtime.create(s)
            await asyncio.to_thread(runtime.start, s.id)
        await asyncio.sleep(0.2)  # let the shell install its trap
        assert await runtime.stop(polite.id, timeout=10) is True
        assert runtime.state(polite.id).exit_code == 0
        began = time.monotonic()
        assert await runtime.stop(stubborn.id, timeout=0.5) is True
        assert time.monotonic() - began >= 0.5  # it waited the grace period before SIGKILL
        assert runtime.state(stubborn.id).exit_code == 137
        assert await runtime.stop(stubborn.id) is False
        with pytest.raises(NotRunning):
            runtime.kill(stubborn.id, signal.SIGTERM)

    asyncio.run(main())


def test_kill_delivers_any_signal(runtime: Runtime, netns_path: str) -> None:
    async def main() -> None:
        s = spec(netns_path, "sh", "-c", "trap 'exit 10' USR1; echo armed; while :; do sleep 0.05; done")
        runtime.create(s)
        stream = await runtime.attach(s.id)
        await asyncio.to_thread(runtime.start, s.id)
        await read_until(stream, b"armed")
        waiter = await runtime.exit_waiter(s.id)
        runtime.kill(s.id, signal.SIGUSR1)
        assert await asyncio.wait_for(waiter.wait(), 10) == 10
        stream.close()

    asyncio.run(main())


def test_restart_runs_again_and_keeps_the_log(runtime: Runtime, netns_path: str) -> None:
    async def main() -> None:
        s = spec(netns_path, "sh", "-c", "echo run; sleep 30")
        runtime.create(s)
        first_pid = await asyncio.to_thread(runtime.start, s.id)
        with pytest.raises(NotModified):
            runtime.start(s.id)
        second_pid = await runtime.restart(s.id, timeout=0)
        assert second_pid != first_pid
        assert runtime.state(s.id).running and runtime.state(s.id).pid == second_pid
        await read_until_logged(runtime, s.id, 2)
        assert [e.data for e in runtime.logs(s.id)] == [b"run\n", b"run\n"]

    asyncio.run(main())


async def read_until_logged(rt: Runtime, cid: str, count: int) -> None:
    for _ in range(200):
        if len(rt.logs(cid)) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"log has {len(rt.logs(cid))} entries, wanted {count}")


def test_start_failure_reports_dockers_exit_code_and_leaves_created(runtime: Runtime, netns_path: str) -> None:
    s = spec(netns_path, "no-such-program")
    runtime.create(s)
    with pytest.raises(StartFailed) as failed:
        runtime.start(s.id)
    assert failed.value.exit_code == 127
    assert "no-such-program" in failed.value.message
    state = runtime.state(s.id)
    assert (state.status, state.exit_code) == ("created", 127) and "no-such-program" in state.error
    assert runtime.logs(s.id) == []  # runc's complaint is not the container's output


def test_bad_input_is_refused_and_changes_nothing(runtime: Runtime, netns_path: str, tmp_path) -> None:
    with pytest.raises(NoSuchImage, match="No such image: nothere:latest"):
        runtime.create(spec(netns_path, "true", image="nothere:latest"))
    with pytest.raises(InvalidArgument):
        runtime.create(spec(netns_path, "true", id="../escape"))
    with pytest.raises(InvalidArgument):
        runtime.create(spec(str(tmp_path / "no-netns"), "true"))
    with pytest.raises(InvalidArgument):
        runtime.create(spec(netns_path, "true", user="nosuchuser"))
    with pytest.raises(InvalidArgument):
        runtime.create(spec(netns_path, "true", workdir="relative"))
    assert runtime.list() == []
    s = spec(netns_path, "true")
    runtime.create(s)
    with pytest.raises(Conflict):
        runtime.create(s)
    with pytest.raises(NoSuchContainer):
        runtime.state(new_id())
    with pytest.raises(NotRunning):
        runtime.exec_create(s.id, ["true"])


def test_user_and_workdir_apply(runtime: Runtime, netns_path: str) -> None:
    s = spec(netns_path, "sh", "-c", "id -u; id -g; pwd; echo $HOSTNAME $FOO", user="nobody", workdir="/tmp",
             env=["FOO=bar"])
    out, _, code = asyncio.run(run_attached(runtime, s))
    assert code == 0
    assert out.decode().split() == ["65534", "65534", "/tmp", s.id[:12], "bar"]


def test_delete_refuses_running_and_force_kills(runtime: Runtime, netns_path: str, tmp_path) -> None:
    async def main() -> None:
        s = spec(netns_path, "sleep", "30")
        runtime.create(s)
        await asyncio.to_thread(runtime.start, s.id)
        with pytest.raises(Conflict):
            runtime.delete(s.id)
        assert runtime.state(s.id).running
        shim_pid = runtime.state(s.id).shim_pid
        await asyncio.to_thread(runtime.delete, s.id, True)
        with pytest.raises(NoSuchContainer):
            runtime.state(s.id)
        assert not os.path.exists(f"/proc/{shim_pid}/cwd") or os.readlink(f"/proc/{shim_pid}/cwd") == "/"

        created = spec(netns_path, "true")
        runtime.create(created)
        await runtime.attach(created.id)  # a shim waits for a start that never comes
        runtime.delete(created.id)

    asyncio.run(main())


def test_a_wait_racing_a_delete_leaves_no_shim(runtime: Runtime, netns_path: str) -> None:
    """`docker run`'s next-exit wait spawns a shim off the engine's worker; a delete of the same container
    at the same moment must either stop that shim or make the wait fail, never leave a shim behind
    (the runtime fixture checks that no process outlives its container)."""
    async def one_round() -> None:
        s = spec(netns_path, "true")
        runtime.create(s)
        waited, deleted = await asyncio.gather(runtime.exit_waiter(s.id, next_run=True),
                                               asyncio.to_thread(runtime.delete, s.id), return_exceptions=True)
        assert deleted is None
        if isinstance(waited, BaseException):
            assert isinstance(waited, NoSuchContainer), waited
        else:
            waited.cancel()
        with pytest.raises(NoSuchContainer):
            runtime.state(s.id)

    async def main() -> None:
        for _ in range(12):
            await one_round()

    asyncio.run(main())


def test_containers_are_listed(runtime: Runtime, netns_path: str) -> None:
    a, b = spec(netns_path, "true"), spec(netns_path, "true")
    runtime.create(a)
    runtime.create(b)
    runtime.start(b.id)
    assert sorted(s.id for s in runtime.list()) == sorted([a.id, b.id])
    (image_id, user), = runtime.images_in_use().items()
    assert image_id == runtime.state(a.id).image_id and user in (a.id, b.id)


def test_a_flood_of_output_reaches_both_the_attacher_and_the_log(runtime: Runtime, netns_path: str) -> None:
    s = spec(netns_path, "sh", "-c", "seq 1 20000; seq 1 500 >&2")
    out, err, code = asyncio.run(run_attached(runtime, s))
    expected = "".join(f"{i}\n" for i in range(1, 20001)).encode()
    assert (out, err, code) == (expected, "".join(f"{i}\n" for i in range(1, 501)).encode(), 0)
    logged = runtime.logs(s.id)
    assert b"".join(e.data for e in logged if e.stream == "stdout") == expected
    assert len(logged) == 20500


def test_containers_run_side_by_side(runtime: Runtime, netns_path: str) -> None:
    async def main() -> list[tuple[bytes, bytes, int]]:
        specs = [spec(netns_path, "sh", "-c", f"echo {i}; exit {i}") for i in range(6)]
        return await asyncio.gather(*(run_attached(runtime, s) for s in specs))

    assert asyncio.run(main()) == [(f"{i}\n".encode(), b"", i) for i in range(6)]


def test_tty_input_larger_than_the_pty_buffer_goes_through(runtime: Runtime, netns_path: str) -> None:
    # The pty master is both read (output) and written (stdin): a write that blocks must not break either.
    script = "head -c 200000 >/dev/null; echo got-typed; stty raw -echo; echo raw; head -c 300000 | wc -c"
    s = spec(netns_path, "sh", "-c", script, tty=True, open_stdin=True)

    async def main() -> None:
        runtime.create(s)
        stream = await runtime.attach(s.id, stdin=True)
        waiter = await runtime.exit_waiter(s.id, next_run=True)
        stream.write((b"x" * 99 + b"\n") * 2000)  # typed ahead of the start: far more than a pty holds
        await asyncio.to_thread(runtime.start, s.id)
        assert b"got-typed" in await read_until(stream, b"raw\n")
        stream.write(b"y" * 300000)  # pasted into the running session
        await stream.drain()
        assert b"300000" in await read_until(stream, b"300000")
        await collect(stream)
        assert await asyncio.wait_for(waiter.wait(), 10) == 0

    asyncio.run(main())
    state = runtime.state(s.id)
    assert (state.status, state.exit_code) == ("exited", 0) and state.started_at > 0


def test_stdin_is_buffered_only_so_far_then_the_sender_waits(runtime: Runtime, netns_path: str) -> None:
    s = spec(netns_path, "sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; wc -c", open_stdin=True)
    size = 8 * 1024 * 1024

    async def main() -> bytes:
        runtime.create(s)
        stream = await runtime.attach(s.id, stdin=True, stdin_once=True)
        await asyncio.to_thread(runtime.start, s.id)
        stream.write(b"z" * size)  # the container reads none of it yet
        drained = asyncio.ensure_future(stream.drain())
        done, _ = await asyncio.wait({drained}, timeout=1.0)
        assert not done, "the shim took all the stdin a stalled process was sent"
        go = runtime.exec_create(s.id, ["touch", "/tmp/go"])
        await runtime.exec_start(go, detach=True)
        await asyncio.wait_for(drained, 10)
        stream.close_stdin()
        out, _ = await collect(stream)
        return out

    assert asyncio.run(main()).strip() == str(size).encode()  # paused and resumed, nothing lost


def test_a_runc_that_cannot_be_run_fails_the_start_or_exec_cleanly(runtime: Runtime, netns_path: str,
                                                                    tmp_path) -> None:
    real, link = runtime.runc, tmp_path / "runc"
    runtime.runc = str(link)  # shims get this path; nothing is there yet
    try:
        s = spec(netns_path, "sleep", "30")
        runtime.create(s)
        with pytest.raises(StartFailed) as failed:
            runtime.start(s.id)
        assert "running runc" in failed.value.message and failed.value.exit_code == 128
        state = runtime.state(s.id)
        assert (state.status, state.exit_code, state.running) == ("created", 128, False)
        link.symlink_to(real)
        assert runtime.start(s.id) > 0  # the failed run's shim ended: a fresh one starts it
        assert runtime.state(s.id).running

        async def execs() -> None:
            link.unlink()
            failing = runtime.exec_create(s.id, ["true"])
            with pytest.raises(StartFailed, match="running runc"):
                await runtime.exec_start(failing)
            info = runtime.exec_inspect(failing)
            assert (info.running, info.exit_code) == (False, 126)
            assert [n for n in os.listdir(runtime.state_root / s.id) if n.startswith("exec-")] == []
            link.symlink_to(real)
            stream = await runtime.exec_start(runtime.exec_create(s.id, ["echo", "still"]))
            assert await collect(stream) == (b"still\n", b"")

        asyncio.run(execs())
    finally:
        if not link.is_symlink():
            link.symlink_to(real)
