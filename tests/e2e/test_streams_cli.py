"""Attach, exec and logs streams as dockerd 20.10 serves them, through the real docker CLI and SDK:
detach keys over a pty, exec framing by the start request's Tty, exit codes 126/127, logs of exited
containers."""

from __future__ import annotations

import os
import pty
import select
import socket
import struct
import subprocess
import time

import docker as docker_sdk
import pytest

from ..tools import require

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


CTRL_P, CTRL_Q = b"\x10", b"\x11"
WAIT_S = 15.0


class Terminal:
    """A docker CLI command on a pty, as a user at a terminal runs it."""

    def __init__(self, daemon, *args: str) -> None:  # noqa: ANN001
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([require("docker"), *args], stdin=slave, stdout=slave, stderr=slave,
                                     env=daemon.env, close_fds=True)
        os.close(slave)
        self.seen = b""

    def read_until(self, token: bytes, timeout: float = WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        while token not in self.seen and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # the command ended and closed its side
                    break
        return token in self.seen

    def keys(self, *presses: bytes) -> None:
        """Each key its own write, apart, as typed (dockerd matches detach keys one read at a time)."""
        for key in presses:
            os.write(self.master, key)
            time.sleep(0.3)

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self.read_until(b"\x00", timeout=0.3)  # what it printed last
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def mux_frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(data)) + data


def raw_exec_start(sock_path: str, exec_id: str) -> bytes:
    """POST /exec/ID/start over a socket of our own: everything the daemon sends until it closes."""
    body = b'{"Detach": false, "Tty": false}'
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(WAIT_S)
        conn.connect(sock_path)
        conn.sendall(b"POST /exec/%s/start HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                     b"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: %d\r\n\r\n%s"
                     % (exec_id.encode(), len(body), body))
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received


def running(daemon, name: str) -> bool:  # noqa: ANN001
    return daemon.docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"


def test_attach_detaches_with_default_and_given_keys(daemon) -> None:
    daemon.docker("run", "-dit", "--name", "catter", "busybox", "cat")
    term = Terminal(daemon, "attach", "catter")
    try:
        term.keys(b"hello\r")
        assert term.read_until(b"hello")
        term.keys(CTRL_P, CTRL_Q)
        assert term.wait() == 1  # the CLI reports the detach as its error, as with dockerd
        assert b"read escape sequence" in term.seen
    finally:
        term.close()
    assert running(daemon, "catter")

    term = Terminal(daemon, "attach", "--detach-keys", "ctrl-a,x", "catter")
    try:
        term.keys(CTRL_P, CTRL_Q, b"still\r")  # the default keys mean nothing now: they reach cat
        assert term.read_until(b"still")
        term.keys(b"\x01", b"x")
        assert term.wait() == 1
    finally:
        term.close()
    assert running(daemon, "catter")

    term = Terminal(daemon, "attach", "--detach-keys", "ctrl-", "catter")
    try:
        assert term.wait() == 1
        assert b"unable to upgrade to tcp, received 400" in term.seen  # the CLI's words, with dockerd too
    finally:
        term.close()
    client = docker_sdk.APIClient(base_url=f"unix://{daemon.sock}")
    try:
        with pytest.raises(docker_sdk.errors.APIError, match=r"Invalid detach keys \(ctrl-\) provided") as refused:
            client.attach_socket("catter", params={"stdin": 1, "stream": 1, "detachKeys": "ctrl-"})
        assert refused.value.status_code == 400
    finally:
        client.close()
    assert running(daemon, "catter")


def test_exec_tty_detaches_and_leaves_the_process(daemon) -> None:
    daemon.docker("run", "-d", "--name", "host", "busybox", "sleep", "300")
    term = Terminal(daemon, "exec", "-it", "host", "sh")
    try:
        assert term.read_until(b"# ")
        term.keys(b"exec sleep 123\r")
        time.sleep(0.5)
        term.keys(CTRL_P, CTRL_Q)
        assert term.wait() == 1
        assert b"read escape sequence" in term.seen
    finally:
        term.close()
    assert "sleep 123" in daemon.docker("exec", "host", "ps").stdout  # the detached exec runs on

    refused = daemon.docker("exec", "--detach-keys", "nope", "host", "true", check=False)
    assert refused.returncode != 0 and "Invalid escape keys (nope) provided" in refused.stderr


def test_exec_output_framing_follows_the_tty(daemon) -> None:
    daemon.docker("run", "-d", "--name", "box", "busybox", "sleep", "300")
    split = daemon.docker("exec", "box", "sh", "-c", "echo out; echo err >&2")
    assert (split.stdout, split.stderr) == ("out\n", "err\n")
    merged = subprocess.run([require("docker"), "exec", "-t", "box", "sh", "-c", "echo out; echo err >&2"],
                            env=daemon.env, capture_output=True, timeout=WAIT_S)
    assert (merged.stdout, merged.stderr) == (b"out\r\nerr\r\n", b"")  # one terminal, its line endings

    client = docker_sdk.APIClient(base_url=f"unix://{daemon.sock}")
    try:
        cmd = ["sh", "-c", "echo out; sleep 0.3; echo err >&2"]
        # A TTY exec read without one (the start's Tty): multiplexed, everything on stdout.
        tty_exec = client.exec_create("box", cmd, tty=True)
        assert client.exec_start(tty_exec, demux=True) == (b"out\r\nerr\r\n", None)
        plain = client.exec_create("box", cmd)
        assert client.exec_start(plain, demux=True) == (b"out\n", b"err\n")
    finally:
        client.close()


def test_exec_exit_codes_of_commands_that_cannot_run(daemon) -> None:
    daemon.docker("run", "-d", "--name", "box", "busybox", "sleep", "300")
    daemon.docker("exec", "box", "sh", "-c", "echo echo hi > /tmp/script")  # not executable
    # dockerd 20.10 gives 126 to every exec that could not start, a missing command too.
    missing = daemon.docker("exec", "box", "nosuchcmd", check=False)
    assert missing.returncode == 126
    assert missing.stdout == ('OCI runtime exec failed: exec failed: unable to start container process: '
                              'exec: "nosuchcmd": executable file not found in $PATH: unknown\n')
    not_executable = daemon.docker("exec", "box", "/tmp/script", check=False)
    assert not_executable.returncode == 126
    assert 'exec: "/tmp/script": permission denied: unknown' in not_executable.stdout
    detached = daemon.docker("exec", "-d", "box", "nosuchcmd", check=False)
    assert detached.returncode == 1 and "Error response from daemon: OCI runtime exec failed" in detached.stderr

    client = docker_sdk.APIClient(base_url=f"unix://{daemon.sock}")
    try:
        for cmd in (["nosuchcmd"], ["/tmp/script"], ["/etc"], ["/no/such"]):
            exec_id = client.exec_create("box", cmd)
            output = client.exec_start(exec_id)
            assert output.startswith(b"OCI runtime exec failed") and output.endswith(b": unknown\r\n")
            assert client.exec_inspect(exec_id)["ExitCode"] == 126
        with pytest.raises(docker_sdk.errors.NotFound, match="No such exec instance"):
            client.exec_resize("0" * 64, height=10, width=10)
        done = client.exec_create("box", ["true"])
        assert client.exec_start(done) == b""
        # The refusal comes on the stream, right after the 101 (read raw: docker-py loses it with dockerd).
        again = raw_exec_start(daemon.sock, done["Id"])
        assert again.endswith(mux_frame(1, f"Error: Exec command {done['Id']} has already run\r\n".encode()))
        pending = client.exec_create("box", ["true"])
        daemon.docker("stop", "-t", "0", "box")
        stopped = daemon.docker("exec", "box", "true", check=False)
        assert stopped.returncode != 0 and "is not running" in stopped.stderr
        # dockerd forgets a stopped container's execs: one created before is no longer there to start.
        with pytest.raises(docker_sdk.errors.NotFound, match="No such exec instance"):
            client.exec_start(pending)
    finally:
        client.close()


def test_logs_and_attach_of_an_exited_container_end(daemon) -> None:
    daemon.docker("run", "--name", "done", "busybox", "sh", "-c", "echo one; echo two >&2; echo three")
    logs = daemon.docker("logs", "done", timeout=WAIT_S)
    assert (logs.stdout, logs.stderr) == ("one\nthree\n", "two\n")
    followed = daemon.docker("logs", "-f", "done", timeout=WAIT_S)  # ends: nothing more can come
    assert (followed.stdout, followed.stderr) == ("one\nthree\n", "two\n")
    daemon.docker("run", "--name", "counted", "busybox", "sh", "-c", "echo one; echo two; echo three")
    tail = daemon.docker("logs", "--tail", "2", "-t", "counted", timeout=WAIT_S)
    stamps, lines = zip(*(line.split(" ", 1) for line in tail.stdout.splitlines()))
    assert lines == ("two", "three") and all(s.endswith("Z") and "T" in s for s in stamps)
    attached = daemon.docker("attach", "done", check=False, timeout=WAIT_S)
    assert attached.returncode == 1 and "You cannot attach to a stopped container, start it first" in attached.stderr

    client = docker_sdk.APIClient(base_url=f"unix://{daemon.sock}")
    try:
        # logs=1 stream=0: the log, then the connection ends (dockerd does not wait for a next start).
        replay = client.attach("done", logs=True, stream=False, demux=True)
        assert replay == (b"one\nthree\n", b"two\n")
    finally:
        client.close()


def test_attach_with_logs_replays_then_follows(daemon) -> None:
    daemon.docker("run", "-d", "--name", "talker", "busybox", "sh", "-c", "echo before; sleep 1; echo after; sleep 300")
    deadline = time.monotonic() + WAIT_S
    while "before" not in daemon.docker("logs", "talker").stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    client = docker_sdk.APIClient(base_url=f"unix://{daemon.sock}", timeout=WAIT_S)
    try:
        stream = client.attach("talker", logs=True, stream=True)
        seen = b""
        for chunk in stream:
            seen += chunk
            if b"after" in seen:
                break
        stream.close()
        assert seen == b"before\nafter\n"
    finally:
        client.close()


def test_run_it_detaches_and_attach_takes_the_session_back(daemon) -> None:
    term = Terminal(daemon, "run", "-it", "--name", "shell", "busybox", "sh")
    try:
        assert term.read_until(b"# ")
        term.keys(b"export MARK=kept\r")
        term.keys(CTRL_P, CTRL_Q)
        assert term.wait() == 0  # docker run takes a detach for a success, as with dockerd
    finally:
        term.close()
    assert running(daemon, "shell")
    term = Terminal(daemon, "attach", "shell")
    try:
        term.keys(b"echo mark=$MARK\r")
        assert term.read_until(b"mark=kept")  # the same shell: detaching left it as it was
        term.keys(b"exit 3\r")
        assert term.wait() == 3
    finally:
        term.close()
