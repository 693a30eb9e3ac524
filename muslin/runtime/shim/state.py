"""The state machine of one container run in its shim: the phases of its init process (ready, starting,
running, exited), its execs, and the requests clients make of them.

The shim works in the container's state directory (its files are named relative to it); the log,
``started.json``, ``exit.json`` and ``execs/`` go to the container's directory, where muslind reads them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

from .connection import Client
from .log import Log
from .oom import oom_counter_path, oom_kills
from .process import Exec, Init, Stdin
from .protocol import (ERR_NAME, ERROR, EXIT, PID_NAME, REPLY, SOCKET_NAME, ProtocolError, RequestTooLong,
                       encode_json_frame)
from .reactor import Reactor
from .runc import Runc

EXEC_START_FAILED = 126
FLUSH_SECONDS = 5.0  # what is still queued for clients when the shim ends is sent within this


def exit_code_of(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def start_failure_code(message: str, default: int) -> int:
    """The exit code Docker reports when a process could not be started at all."""
    if "executable file not found" in message or "no such file or directory" in message:
        return 127
    if "permission denied" in message:
        return 126
    return default


def write_json_atomic(path: str, obj: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def remove_empty_err() -> None:
    """Remove shim.err if it is ours (fd 2) and nothing was written to it."""
    try:
        ours, there = os.fstat(2), os.stat(ERR_NAME)
    except OSError:
        return
    if (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino) and ours.st_size == 0:
        os.unlink(ERR_NAME)


class Shim:
    """One container run: listens on ``shim.sock`` until the run has ended and its clients are served."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.reactor = Reactor()
        self.log = Log(config["log"])
        self.runc = Runc(config["runc"], config["runc_root"])
        self.run_dir = config["run_dir"]
        self.phase = "ready"  # ready -> starting -> running -> exited
        self.oom_counter: str | None = None  # the file of the container's oom_kill count
        self.oom_kills_at_start = 0  # before runc run: a cgroup left by a killed shim may hold a count
        self.attached: set[Client] = set()
        self.waiters: set[Client] = set()
        self.init = Init(self.reactor, config["tty"], config["open_stdin"], self.log, self.attached)
        self.execs: dict[str, Exec] = {}
        self.clients: set[Client] = set()
        self.listener: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(SOCKET_NAME):
            os.unlink(SOCKET_NAME)
        self.listener.bind(SOCKET_NAME)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.reactor.add_reader(self.listener, self.accept)
        self.reactor.on_sigchld(self.runc.reap)

    def run(self) -> None:
        self.reactor.run()

    def cgroups_path(self) -> str | None:
        """The container's cgroup, as the bundle told runc."""
        with open(os.path.join(self.config["bundle"], "config.json")) as f:
            return json.load(f)["linux"].get("cgroupsPath") or None

    # -- the container ------------------------------------------------------------------------
    def start(self, client: Client) -> None:
        if self.phase != "ready":
            client.send(encode_json_frame(ERROR, {"message": f"container is {self.phase}"}))
            client.finish()
            return
        self.phase = "starting"
        for name in ("exit.json", "started.json"):
            path = os.path.join(self.run_dir, name)
            if os.path.exists(path):
                os.unlink(path)
        cgroups = self.cgroups_path()
        self.oom_kills_at_start = oom_kills(oom_counter_path(cgroups))  # 0 when runc has yet to make it
        args = ["run", "-d", "--bundle", self.config["bundle"], "--pid-file", "init.pid"]
        if self.init.tty:
            args += ["--console-socket", f"/proc/self/fd/3/{self.init.console_path}"]
        args.append(self.config["id"])

        def started(status: int, log_path: str, spawn: int) -> None:
            if status != 0:
                message = self.runc.error(log_path)
                self.start_failed(client, message, start_failure_code(message, 128))
                return
            os.unlink(log_path)
            with open("init.pid") as f:
                self.init.pid = int(f.read())
            self.oom_counter = oom_counter_path(cgroups)
            self.phase = "running"
            try:
                self.init.runc_started()
            except OSError as exc:  # no pty master came: a container nobody can talk to is stopped
                print(f"taking over the container's stdio: {exc}", file=sys.stderr)
                os.kill(self.init.pid, signal.SIGKILL)
            write_json_atomic(os.path.join(self.run_dir, "started.json"),
                              {"pid": self.init.pid, "started_at": time.time_ns()})
            client.send(encode_json_frame(REPLY, {"pid": self.init.pid}))
            client.finish()
            self.runc.watch_pid(self.init.pid, spawn, self.init_exited)

        try:
            self.runc.spawn(args, self.init.stdio, started)
        except OSError as exc:  # no runc, or no process to run it in
            self.start_failed(client, f"running runc: {exc}", 128)

    def start_failed(self, client: Client, message: str, exit_code: int) -> None:
        """Nothing runs: record why and end this shim (the next start gets a fresh one)."""
        self.stop_listening()  # before the answer: a start sent after it must find no shim, not this one
        self.init.discard()
        write_json_atomic(os.path.join(self.run_dir, "exit.json"),
                          {"exit_code": exit_code, "error": message, "finished_at": time.time_ns()})
        client.send(encode_json_frame(ERROR, {"message": message}))
        client.finish()
        self.phase = "exited"
        self.shutdown()

    def init_exited(self, status: int) -> None:
        code = exit_code_of(status)
        self.init.status = status
        self.phase = "exited"
        self.init.drain()
        self.log.flush()
        for exe in [e for e in self.execs.values() if e.pid]:
            self.exec_exited(exe, self.runc.collect(exe.pid))
        self.stop_listening()
        oom_killed = oom_kills(self.oom_counter) > self.oom_kills_at_start
        write_json_atomic(os.path.join(self.run_dir, "exit.json"),
                          {"exit_code": code, "error": "", "finished_at": time.time_ns(), "oom_killed": oom_killed})
        notice = encode_json_frame(EXIT, {"exit_code": code})
        for client in list(self.waiters) + list(self.attached):
            client.send(notice)
            client.finish()
        self.shutdown()

    def shutdown(self) -> None:
        """Leave: flush clients (bounded), delete the runc container if it ran, remove our files."""
        self.stop_listening()
        deadline = time.monotonic() + FLUSH_SECONDS
        while any(c.outbuf for c in self.clients) and time.monotonic() < deadline:
            self.reactor.loop_once(0.1)
        for client in list(self.clients):
            client.close()
        if self.phase == "exited" and self.init.pid:
            self.runc.run_blocking(["delete", "--force", self.config["id"]])
        self.init.discard()
        remove_empty_err()  # before shim.pid goes: from then on a new shim may own this directory
        for name in ("init.pid", PID_NAME):
            if os.path.exists(name):
                os.unlink(name)
        for name in os.listdir("."):
            if name.startswith(("exec-", "runc-")) and name.endswith((".pid", ".json", ".log")):
                os.unlink(name)
        self.reactor.stop()

    def stop_listening(self) -> None:
        if self.listener is not None:
            self.reactor.unregister(self.listener)
            self.listener.close()
            self.listener = None
            if os.path.exists(SOCKET_NAME):
                os.unlink(SOCKET_NAME)

    # -- execs --------------------------------------------------------------------------------
    def exec(self, client: Client, req: dict) -> None:
        name = req["exec_id"]
        if self.phase != "running":
            client.send(encode_json_frame(ERROR, {"message": "container is not running"}))
            client.finish()
            return
        detach = req.get("detach", False)
        exe = Exec(self.reactor, name, req["tty"], req["stdin"] and not detach, None if detach else client)
        self.execs[name] = exe
        process_path = f"exec-{name}.json"
        with open(process_path, "w") as f:
            json.dump(req["process"], f)
        args = ["exec", "-d", "--process", process_path, "--pid-file", f"exec-{name}.pid"]
        if exe.tty:
            args += ["--console-socket", f"/proc/self/fd/3/{exe.console_path}"]
        args.append(self.config["id"])

        def started(status: int, log_path: str, spawn: int) -> None:
            if status != 0:
                message = self.runc.error(log_path)
                os.unlink(log_path)
                # dockerd gives every exec that could not start 126, a missing command too (unlike a
                # container's start: 127 there); measured on 20.10.
                self.exec_failed(client, exe, message, EXEC_START_FAILED)
                return
            os.unlink(log_path)
            with open(f"exec-{name}.pid") as f:
                exe.pid = int(f.read())
            try:
                exe.runc_started()
            except OSError as exc:
                print(f"taking over the stdio of exec {name}: {exc}", file=sys.stderr)
                os.kill(exe.pid, signal.SIGKILL)
            self.record_exec(name, {"exit_code": None, "pid": exe.pid})
            client.send(encode_json_frame(REPLY, {"pid": exe.pid}))
            if detach:
                client.finish()
            self.runc.watch_pid(exe.pid, spawn, lambda st: self.exec_exited(exe, st))

        try:
            self.runc.spawn(args, exe.stdio, started)
        except OSError as exc:
            self.exec_failed(client, exe, f"running runc: {exc}", 126)

    def exec_failed(self, client: Client, exe: Exec, message: str, exit_code: int) -> None:
        exe.discard()
        self.execs.pop(exe.name, None)
        self.remove_exec_files(exe.name)
        self.record_exec(exe.name, {"exit_code": exit_code, "error": message, "pid": 0})
        client.send(encode_json_frame(ERROR, {"message": message}))
        client.finish()

    def exec_exited(self, exe: Exec, status: int) -> None:
        exe.status = status
        exe.drain()
        code = exit_code_of(status)
        self.record_exec(exe.name, {"exit_code": code, "pid": exe.pid})
        if exe.client is not None:
            exe.client.send(encode_json_frame(EXIT, {"exit_code": code}))
            exe.client.finish()
        self.execs.pop(exe.name, None)
        self.remove_exec_files(exe.name)

    @staticmethod
    def remove_exec_files(name: str) -> None:
        """What runc needed for one exec; a long-lived container sees many execs come and go."""
        for path in (f"exec-{name}.json", f"exec-{name}.pid"):
            if os.path.exists(path):
                os.unlink(path)

    def record_exec(self, name: str, state: dict) -> None:
        write_json_atomic(os.path.join(self.run_dir, "execs", f"{name}.json"), state)

    # -- clients ------------------------------------------------------------------------------
    def accept(self) -> None:
        while self.listener is not None:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            self.clients.add(Client(self.reactor, sock, self.received, self.forget))

    def forget(self, client: Client) -> None:
        self.clients.discard(client)
        self.attached.discard(client)
        self.waiters.discard(client)
        for exe in self.execs.values():
            if exe.client is client:
                exe.client = None

    def received(self, client: Client, data: bytes) -> None:
        """What a client sent: its request line first, then stdin; b"" at its EOF."""
        if client.request is not None:
            self.stdin_from(client, data)
            return
        try:
            parsed = client.requests.feed(data)
        except RequestTooLong:
            client.close()
            return
        except ProtocolError as exc:
            client.send(encode_json_frame(ERROR, {"message": str(exc)}))
            client.finish()
            return
        if parsed is None:
            if not data:  # gone before its request was complete
                client.close()
            return
        client.request, rest = parsed
        self.dispatch(client, client.request)
        if rest and not client.closed:
            self.stdin_from(client, rest)

    def stdin_target(self, client: Client) -> Stdin | None:
        req = client.request or {}
        if req.get("op") == "attach" and req.get("stdin"):
            return self.init.stdin
        if req.get("op") == "exec":
            exe = self.execs.get(req.get("exec_id", ""))
            if exe is not None and exe.client is client:
                return exe.stdin
        return None

    def stdin_from(self, client: Client, data: bytes) -> None:
        target = self.stdin_target(client)
        if data:
            if target is not None:
                target.write(data, client)
            return
        # EOF: the client half-closed (done sending stdin) or went away; sending will tell which.
        client.stop_reading()
        if target is not None and target.owned and client.request.get("stdin_once"):
            target.close_when_drained()  # `docker run -i`: the container sees EOF too (a pty never does)
        if client.request.get("op") == "wait" or client.request.get("op") is None:
            client.close()

    def dispatch(self, client: Client, req: dict) -> None:
        op = req.get("op")
        try:
            if op == "attach":
                req["streams"] = {s for s in ("stdout", "stderr") if req.get(s)}
                self.attached.add(client)
                client.send(encode_json_frame(REPLY, {"phase": self.phase}))
            elif op == "start":
                self.start(client)
            elif op == "wait":
                self.waiters.add(client)
                client.send(encode_json_frame(REPLY, {"phase": self.phase}))
            elif op == "exec":
                self.exec(client, req)
            elif op == "kill":
                self.kill(req)
                client.send(encode_json_frame(REPLY, {}))
                client.finish()
            elif op == "resize":
                target = self.init if not req.get("exec_id") else self.execs.get(req["exec_id"])
                if target is None:
                    raise ValueError("no such exec")
                target.resize(int(req["height"]), int(req["width"]))
                client.send(encode_json_frame(REPLY, {}))
                client.finish()
            elif op == "status":
                client.send(encode_json_frame(REPLY, {"phase": self.phase, "pid": self.init.pid}))
                client.finish()
            elif op == "shutdown":
                if self.phase != "ready":
                    raise ValueError(f"container is {self.phase}")
                client.send(encode_json_frame(REPLY, {}))
                client.finish()
                self.shutdown()
            else:
                raise ValueError(f"unknown op {op!r}")
        except (ValueError, OSError) as exc:
            client.send(encode_json_frame(ERROR, {"message": str(exc)}))
            client.finish()

    def kill(self, req: dict) -> None:
        sig = int(req["signal"])
        if req.get("exec_id"):
            exe = self.execs.get(req["exec_id"])
            if exe is None or not exe.pid or exe.status is not None:
                raise ValueError("exec is not running")
            os.kill(exe.pid, sig)
            return
        if self.phase != "running":
            raise ValueError(f"container is {self.phase}")
        # The pid cannot have been reused: it is our unreaped child until its exit is handled.
        os.kill(self.init.pid, sig)
