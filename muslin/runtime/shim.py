"""The per-container shim: owns one container run's stdio, log and exit status, outliving muslind.

Shims are forked by a spawner, ``python3 -I -S shim.py STATE_ROOT`` (standard library only, so it
never depends on the daemon's virtualenv), which muslind keeps running and feeds state directories;
``STATE_DIR/shim.json`` says what to run. The shim

* is forked twice by the spawner so it is reparented away from muslind (its own session, no
  controlling terminal), marks itself a child subreaper so the container's init and exec processes
  become its children, and prints ``ready`` on its stdout once ``shim.sock`` listens;
* on ``start`` runs ``runc run -d`` with pipes it keeps (or a console socket, receiving the pty master),
  so output written before anyone attaches is still read, logged and forwarded;
* writes the log as Docker's json-file lines, ``started.json`` when the container runs and
  ``exit.json`` when it ends, then ``runc delete``\\ s it and exits: one shim per run.

Forking a ready spawner takes ~3 ms where a fresh ``python3 -I -S`` with these imports takes ~25 ms.

Protocol on ``shim.sock``: the client sends one JSON line ``{"op": ...}``; the shim answers with frames
``[kind: u8][length: u32 BE][payload]``: STDOUT/STDERR (bytes), EXIT (``{"exit_code"}``), REPLY and
ERROR (JSON). Ops: ``attach`` (streams, stdin, stdin_once), ``wait``, ``start``, ``exec`` (exec_id,
process, tty, stdin, detach), ``kill`` (signal, exec_id?), ``resize`` (height, width, exec_id?),
``status`` and ``shutdown`` (before start only). Bytes the client sends after the line are the
process's stdin, read no faster than the process takes them once a buffer is full; the client's EOF
on them detaches (closing the process's stdin with ``stdin_once``).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import time
import traceback
from collections.abc import Callable

FRAME = struct.Struct(">BI")
STDOUT, STDERR, EXIT, REPLY, ERROR = 1, 2, 3, 4, 5
SOCKET_NAME = "shim.sock"
CONFIG_NAME = "shim.json"
PID_NAME = "shim.pid"
ERR_NAME = "shim.err"
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15
LOG_LINE_MAX = 16 * 1024  # as Docker's json-file: longer lines are split into partial records
REQUEST_MAX = 1024 * 1024  # an exec's process spec is the largest request
CLIENT_BUFFER_MAX = 64 * 1024 * 1024  # a client that stops reading is dropped past this
STDIN_BUFFER_MAX = 1024 * 1024  # stdin queued for a process that does not read: its senders pause past this
DRAIN_SECONDS = 2.0
FLUSH_SECONDS = 5.0


def frame(kind: int, payload: bytes) -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


def jframe(kind: int, obj: object) -> bytes:
    return frame(kind, json.dumps(obj).encode())


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


def rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


def write_json_atomic(path: str, obj: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


class Log:
    """Docker json-file lines, one per output line, stamped with the time the line's bytes arrived."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.partial = {"stdout": b"", "stderr": b""}

    def add(self, stream: str, data: bytes) -> None:
        tail = self._tail(stream, rfc3339(time.time_ns()))
        buf = self.partial[stream] + data
        records = []
        start = 0  # walked, not re-sliced: a 64 KiB read of short lines is one pass
        while True:
            cut = buf.find(b"\n", start, start + LOG_LINE_MAX)
            if cut < 0:
                if len(buf) - start < LOG_LINE_MAX:
                    break
                cut = start + LOG_LINE_MAX - 1
            records.append(self._record(buf[start : cut + 1], tail))
            start = cut + 1
        self.partial[stream] = buf[start:]
        self._write(records)

    def flush(self) -> None:
        now = rfc3339(time.time_ns())
        records = [self._record(b, self._tail(s, now)) for s, b in self.partial.items() if b]
        self.partial = {"stdout": b"", "stderr": b""}
        self._write(records)

    def _write(self, records: list[str]) -> None:
        if not records:
            return
        try:
            os.write(self.fd, "".join(records).encode())
        except OSError as exc:  # a full disk loses log lines, never the container's output to attachers
            print(f"writing the log: {exc}", file=sys.stderr)

    # What json.dumps({"log": ..., "stream": ..., "time": ...}) gives, with the part after the line's
    # text made once per read rather than a dict encoded per line.
    @staticmethod
    def _tail(stream: str, when: str) -> str:
        return ', "stream": ' + json.dumps(stream) + ', "time": ' + json.dumps(when) + "}\n"

    @staticmethod
    def _record(line: bytes, tail: str) -> str:
        return '{"log": ' + json.dumps(line.decode("utf-8", "surrogateescape")) + tail


class Client:
    """One connection: a request line in, frames out, stdin bytes in after the request."""

    def __init__(self, shim: "Shim", sock: socket.socket) -> None:
        self.shim = shim
        self.sock = sock
        self.inbuf = b""
        self.outbuf = bytearray()
        self.request: dict | None = None
        self.reading = True  # until the client's EOF
        self.paused = False  # while the stdin it feeds is full
        self.closing = False
        self.closed = False
        self.events = selectors.EVENT_READ
        shim.sel.register(sock, self.events, self)

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        self.outbuf += data
        if len(self.outbuf) > CLIENT_BUFFER_MAX:
            self.close()
            return
        self.flush()

    def flush(self) -> None:
        while self.outbuf and not self.closed:
            try:
                sent = self.sock.send(self.outbuf)
            except BlockingIOError:
                break
            except OSError:
                self.close()
                return
            del self.outbuf[:sent]
        if self.closed:
            return
        if self.closing and not self.outbuf:
            self.close()
            return
        self.watch()

    def watch(self) -> None:
        """Poll for what this client still needs: its input while it sends, writability while queued."""
        reading = self.reading and not self.paused
        events = (selectors.EVENT_READ if reading else 0) | (selectors.EVENT_WRITE if self.outbuf else 0)
        if events == self.events:
            return
        if not events:
            self.shim.sel.unregister(self.sock)
        elif not self.events:
            self.shim.sel.register(self.sock, events, self)
        else:
            self.shim.sel.modify(self.sock, events, self)
        self.events = events

    def stop_reading(self) -> None:
        self.reading = False
        self.watch()

    def pause(self, paused: bool) -> None:
        if not self.closed:
            self.paused = paused
            self.watch()

    def finish(self) -> None:
        """Close once everything queued has been sent."""
        self.closing = True
        self.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.events:
            self.shim.sel.unregister(self.sock)
        self.sock.close()
        self.shim.forget(self)


class Output:
    """A stream read from the container (pipe or pty master), forwarded to subscribers."""

    def __init__(self, fd: int, stream: str, on_data, on_eof) -> None:
        self.fd = fd
        self.stream = stream
        self.on_data = on_data
        self.on_eof = on_eof

    def read(self) -> None:
        """Forward what is there; at the end, hand the stream to ``on_eof``."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: every pty slave is closed
            if exc.errno != errno.EIO:
                raise
            data = b""
        if data:
            self.on_data(self.stream, data)
        else:
            self.on_eof(self)


class Stdin:
    """The write side of a process's stdin (pipe or pty master), buffered so clients never block.

    A pty master only exists once runc has started the process: until then (fd None) input is kept.
    """

    def __init__(self, shim: "Shim", fd: int | None, owned: bool) -> None:
        self.shim = shim
        self.fd = fd
        self.owned = owned  # a pty master is shared with the output side and closed there
        self.buf = bytearray()
        self.eof = False
        self.closed = False
        self.watching = False
        self.paused: set[Client] = set()  # senders not read from until the buffer drains

    def write(self, data: bytes, sender: Client) -> None:
        if self.closed or self.eof:
            return
        self.buf += data
        self.flush()
        if len(self.buf) > STDIN_BUFFER_MAX and not self.closed:
            self.paused.add(sender)
            sender.pause(True)

    def flush(self) -> None:
        if self.fd is None:
            return
        while self.buf and not self.closed:
            try:
                n = os.write(self.fd, self.buf)
            except BlockingIOError:
                break
            except OSError:
                self.close()
                return
            del self.buf[:n]
        if self.closed:
            return
        if self.buf and not self.watching:
            self.shim.watch(self.fd, selectors.EVENT_WRITE, self.flush)
            self.watching = True
        elif not self.buf and self.watching:
            self.shim.watch(self.fd, selectors.EVENT_WRITE, None)
            self.watching = False
        if self.paused and len(self.buf) <= STDIN_BUFFER_MAX // 2:
            self.resume_senders()
        if not self.buf and self.eof:
            self.close()

    def resume_senders(self) -> None:
        for sender in self.paused:
            sender.pause(False)
        self.paused.clear()

    def close_when_drained(self) -> None:
        self.eof = True
        self.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.buf.clear()
        self.resume_senders()  # what they send now is dropped, but their EOF must still be seen
        if self.watching:
            self.shim.watch(self.fd, selectors.EVENT_WRITE, None)
        if self.owned:
            os.close(self.fd)


class Process:
    """A process the shim runs through runc: the container's init or one exec."""

    def __init__(self, shim: "Shim", name: str, tty: bool, open_stdin: bool) -> None:
        self.shim = shim
        self.name = name  # "init" or the exec id; names the files of this process
        self.tty = tty
        self.pid = 0
        self.status: int | None = None
        self.outputs: list[Output] = []
        self.stdin: Stdin | None = None
        self.master: int | None = None
        self.child_fds: list[int] = []  # the runc side of our pipes, closed once runc is done
        self.console: socket.socket | None = None
        self.stdio = self._prepare(open_stdin)

    def _prepare(self, open_stdin: bool) -> list[int]:
        """Pipes (or a console socket) for runc; returns runc's stdin, stdout, stderr."""
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.child_fds.append(null)
        if self.tty:
            path = self.console_path
            if os.path.exists(path):
                os.unlink(path)
            self.console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.console.bind(path)
            self.console.listen(1)
            self.stdin = Stdin(self.shim, None, owned=False)  # typed ahead of the start: kept for the pty
            return [null, null, null]
        fds = [null]
        if open_stdin:
            r, w = os.pipe()
            set_nonblocking(w)
            self.stdin = Stdin(self.shim, w, owned=True)
            self.child_fds.append(r)
            fds = [r]
        for stream in ("stdout", "stderr"):
            r, w = os.pipe()
            set_nonblocking(r)
            self.outputs.append(Output(r, stream, self.on_output, self.on_eof))
            self.child_fds.append(w)
            fds.append(w)
        return fds

    @property
    def console_path(self) -> str:
        return f"console-{self.name[:12]}.sock"

    def runc_started(self) -> None:
        """runc has handed the process over: keep only our ends, start reading."""
        for fd in self.child_fds:
            os.close(fd)
        self.child_fds = []
        if self.console is not None:
            self.console.settimeout(2.0)
            conn, _ = self.console.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
            self.master = fds[0]
            set_nonblocking(self.master)
            self.outputs = [Output(self.master, "stdout", self.on_output, self.on_eof)]
            if self.stdin is not None:
                self.stdin.fd = self.master
                self.stdin.flush()
            self.close_console()
        for out in self.outputs:
            self.shim.watch(out.fd, selectors.EVENT_READ, out.read)

    def close_console(self) -> None:
        if self.console is not None:
            self.console.close()
            self.console = None
            if os.path.exists(self.console_path):
                os.unlink(self.console_path)

    def discard(self) -> None:
        for fd in self.child_fds:
            os.close(fd)
        self.child_fds = []
        for out in self.outputs:
            self.shim.watch(out.fd, selectors.EVENT_READ, None)
            os.close(out.fd)
        self.outputs = []
        if self.stdin is not None:
            self.stdin.close()
        self.close_console()

    def on_output(self, stream: str, data: bytes) -> None:
        raise NotImplementedError

    def on_eof(self, out: Output) -> None:
        self.shim.watch(out.fd, selectors.EVENT_READ, None)
        self.outputs.remove(out)
        if out.fd == self.master:
            if self.stdin is not None:
                self.stdin.close()
            self.master = None
        os.close(out.fd)

    def drain(self) -> None:
        """After the process exits: read what it left, bounded in time (a grandchild may hold a pipe)."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.outputs and time.monotonic() < deadline:
            ready = selectors.DefaultSelector()
            for out in self.outputs:
                ready.register(out.fd, selectors.EVENT_READ, out)
            events = ready.select(max(0.0, deadline - time.monotonic()))
            ready.close()
            for key, _ in events:
                key.data.read()
        for out in list(self.outputs):
            self.on_eof(out)
        if self.stdin is not None:
            self.stdin.close()

    def resize(self, height: int, width: int) -> None:
        if self.master is None:
            raise ValueError("the process has no TTY")
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


class Init(Process):
    """The container's main process: output goes to the log and every attached client."""

    def on_output(self, stream: str, data: bytes) -> None:
        self.shim.log.add(stream, data)
        kind = STDOUT if stream == "stdout" else STDERR
        chunk = frame(kind, data)
        for client in list(self.shim.attached):
            if stream in client.request["streams"]:
                client.send(chunk)


class Exec(Process):
    """One ``runc exec``: output goes to the client that started it (Docker keeps no exec log)."""

    def __init__(self, shim: "Shim", name: str, tty: bool, open_stdin: bool, client: Client | None) -> None:
        super().__init__(shim, name, tty, open_stdin)
        self.client = client

    def on_output(self, stream: str, data: bytes) -> None:
        if self.client is not None:
            self.client.send(frame(STDOUT if stream == "stdout" else STDERR, data))


class FdWatch:
    """What the loop does when one fd is ready: a pty master is both an output read and a stdin written,
    and a selector takes each fd once, so the two interests share one registration."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.handlers: dict[int, Callable[[], None]] = {}  # selector event -> what to call

    @property
    def events(self) -> int:
        mask = 0
        for event in self.handlers:
            mask |= event
        return mask

    def ready(self, events: int) -> None:
        for event, handler in list(self.handlers.items()):
            if events & event and self.handlers.get(event) is handler:  # an earlier handler may drop it
                handler()


class Shim:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.sel = selectors.DefaultSelector()
        self.fd_watches: dict[int, FdWatch] = {}
        self.log = Log(config["log"])
        self.runc = [config["runc"], "--root", config["runc_root"]]
        self.run_dir = config["run_dir"]
        self.init = Init(self, "init", config["tty"], config["open_stdin"])
        self.phase = "ready"  # ready -> starting -> running -> exited
        self.attached: set[Client] = set()
        self.waiters: set[Client] = set()
        self.execs: dict[str, Exec] = {}
        self.clients: set[Client] = set()
        self.on_child_exit: dict[int, object] = {}  # pid -> callback(status)
        # Exits of pids runc had not told us about yet (a process can end before its runc does), with
        # the number of runc spawns at the time: an exit older than a process's runc is not its own.
        self.early_exits: dict[int, tuple[int, int]] = {}
        self.spawned = 0
        self.done = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(SOCKET_NAME):
            os.unlink(SOCKET_NAME)
        self.listener.bind(SOCKET_NAME)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        wake_r, wake_w = os.pipe()
        set_nonblocking(wake_r)
        set_nonblocking(wake_w)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel.register(wake_r, selectors.EVENT_READ, "sigchld")
        self.wake_r = wake_r

    def watch(self, fd: int, event: int, handler: Callable[[], None] | None) -> None:
        """Call ``handler`` when ``fd`` is ready for ``event`` (read or write); None stops that."""
        entry = self.fd_watches.get(fd)
        if entry is None:
            if handler is None:
                return
            entry = self.fd_watches[fd] = FdWatch(fd)
        before = entry.events
        if handler is None:
            entry.handlers.pop(event, None)
        else:
            entry.handlers[event] = handler
        after = entry.events
        if not after:  # an emptied watch the selector still hands out this round calls nothing
            del self.fd_watches[fd]
            self.sel.unregister(fd)
        elif not before:
            self.sel.register(fd, after, entry)
        elif after != before:
            self.sel.modify(fd, after, entry)

    def unwatch(self, entry: FdWatch) -> None:
        """Stop polling an fd altogether (one of its handlers failed)."""
        entry.handlers.clear()  # the selector may still hand it out in the current round
        if self.fd_watches.get(entry.fd) is entry:
            del self.fd_watches[entry.fd]
            self.sel.unregister(entry.fd)

    # -- runc ---------------------------------------------------------------------------------
    def spawn_runc(self, args: list[str], stdio: list[int], on_exit) -> str:
        """Start runc without blocking; ``on_exit(status, log_path, spawn number)`` runs when it ends.

        runc gets our directory as its fd 3: it chdirs into the bundle, and an absolute path to a
        console socket under a deep state directory may not fit in a socket address, but
        ``/proc/self/fd/3/NAME`` always does.
        """
        self.spawned += 1
        log_path = f"runc-{self.spawned}.log"
        argv = [*self.runc, "--log", log_path, "--log-format", "json", *args]
        here = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
        actions.append((os.POSIX_SPAWN_DUP2, here, 3))
        try:
            pid = os.posix_spawn(argv[0], argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, file_actions=actions)
        finally:
            os.close(here)
        seq = self.spawned
        self.on_child_exit[pid] = lambda status: on_exit(status, log_path, seq)
        return log_path

    @staticmethod
    def runc_error(log_path: str) -> str:
        message = "runc failed"
        try:
            with open(log_path) as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if entry.get("level") in ("error", "fatal"):
                        message = entry.get("msg", message)
        except FileNotFoundError:
            pass
        return message

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            callback = self.on_child_exit.pop(pid, None)
            if callback is None:
                self.early_exits[pid] = (self.spawned, status)
                for old in [p for p, (seq, _) in self.early_exits.items() if seq < self.spawned - 64]:
                    del self.early_exits[old]  # orphans reparented to us that nobody will ask about
            else:
                callback(status)

    def watch_pid(self, pid: int, since: int, callback) -> None:
        """Call ``callback(status)`` when ``pid``, started by runc spawn number ``since``, exits."""
        seq, status = self.early_exits.pop(pid, (-1, 0))
        if seq >= since:
            callback(status)
        else:
            self.on_child_exit[pid] = callback

    # -- the container ------------------------------------------------------------------------
    def start(self, client: Client) -> None:
        if self.phase != "ready":
            client.send(jframe(ERROR, {"message": f"container is {self.phase}"}))
            client.finish()
            return
        self.phase = "starting"
        for name in ("exit.json", "started.json"):
            path = os.path.join(self.run_dir, name)
            if os.path.exists(path):
                os.unlink(path)
        args = ["run", "-d", "--bundle", self.config["bundle"], "--pid-file", "init.pid"]
        if self.init.tty:
            args += ["--console-socket", f"/proc/self/fd/3/{self.init.console_path}"]
        args.append(self.config["id"])

        def started(status: int, log_path: str, spawn: int) -> None:
            if status != 0:
                message = self.runc_error(log_path)
                self.start_failed(client, message, start_failure_code(message, 128))
                return
            os.unlink(log_path)
            with open("init.pid") as f:
                self.init.pid = int(f.read())
            self.phase = "running"
            try:
                self.init.runc_started()
            except OSError as exc:  # no pty master came: a container nobody can talk to is stopped
                print(f"taking over the container's stdio: {exc}", file=sys.stderr)
                os.kill(self.init.pid, signal.SIGKILL)
            write_json_atomic(os.path.join(self.run_dir, "started.json"),
                              {"pid": self.init.pid, "started_at": time.time_ns()})
            client.send(jframe(REPLY, {"pid": self.init.pid}))
            client.finish()
            self.watch_pid(self.init.pid, spawn, self.init_exited)

        try:
            self.spawn_runc(args, self.init.stdio, started)
        except OSError as exc:  # no runc, or no process to run it in
            self.start_failed(client, f"running runc: {exc}", 128)

    def start_failed(self, client: Client, message: str, exit_code: int) -> None:
        """Nothing runs: record why and end this shim (the next start gets a fresh one)."""
        self.stop_listening()  # before the answer: a start sent after it must find no shim, not this one
        self.init.discard()
        write_json_atomic(os.path.join(self.run_dir, "exit.json"),
                          {"exit_code": exit_code, "error": message, "finished_at": time.time_ns()})
        client.send(jframe(ERROR, {"message": message}))
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
            # The kernel kills everything left in the pid namespace with its init; collect them now.
            self.on_child_exit.pop(exe.pid, None)
            try:
                _, status = os.waitpid(exe.pid, 0)
            except ChildProcessError:
                status = self.early_exits.pop(exe.pid, (0, signal.SIGKILL))[1]
            self.exec_exited(exe, status)
        self.stop_listening()
        write_json_atomic(os.path.join(self.run_dir, "exit.json"),
                          {"exit_code": code, "error": "", "finished_at": time.time_ns()})
        notice = jframe(EXIT, {"exit_code": code})
        for client in list(self.waiters) + list(self.attached):
            client.send(notice)
            client.finish()
        self.shutdown()

    def shutdown(self) -> None:
        """Leave: flush clients (bounded), delete the runc container if it ran, remove our files."""
        self.stop_listening()
        deadline = time.monotonic() + FLUSH_SECONDS
        while any(c.outbuf for c in self.clients) and time.monotonic() < deadline:
            self.loop_once(0.1)
        for client in list(self.clients):
            client.close()
        if self.phase == "exited" and self.init.pid:
            self.run_runc_blocking(["delete", "--force", self.config["id"]])
        self.init.discard()
        remove_empty_err()  # before shim.pid goes: from then on a new shim may own this directory
        for name in ("init.pid", PID_NAME):
            if os.path.exists(name):
                os.unlink(name)
        for name in os.listdir("."):
            if name.startswith(("exec-", "runc-")) and name.endswith((".pid", ".json", ".log")):
                os.unlink(name)
        self.done = True

    def run_runc_blocking(self, args: list[str]) -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        argv = [*self.runc, *args]
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        actions = [(os.POSIX_SPAWN_DUP2, null, n) for n in range(3)]
        try:
            pid = os.posix_spawn(argv[0], argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, file_actions=actions)
        except OSError as exc:  # muslind's recovery deletes what runc left
            print(f"running runc {args[0]}: {exc}", file=sys.stderr)
            return
        finally:
            os.close(null)
        os.waitpid(pid, 0)

    def stop_listening(self) -> None:
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None
            if os.path.exists(SOCKET_NAME):
                os.unlink(SOCKET_NAME)

    # -- execs --------------------------------------------------------------------------------
    def exec(self, client: Client, req: dict) -> None:
        name = req["exec_id"]
        if self.phase != "running":
            client.send(jframe(ERROR, {"message": "container is not running"}))
            client.finish()
            return
        detach = req.get("detach", False)
        exe = Exec(self, name, req["tty"], req["stdin"] and not detach, None if detach else client)
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
                message = self.runc_error(log_path)
                os.unlink(log_path)
                self.exec_failed(client, exe, message, start_failure_code(message, 126))
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
            client.send(jframe(REPLY, {"pid": exe.pid}))
            if detach:
                client.finish()
            self.watch_pid(exe.pid, spawn, lambda st: self.exec_exited(exe, st))

        try:
            self.spawn_runc(args, exe.stdio, started)
        except OSError as exc:
            self.exec_failed(client, exe, f"running runc: {exc}", 126)

    def exec_failed(self, client: Client, exe: Exec, message: str, exit_code: int) -> None:
        exe.discard()
        self.execs.pop(exe.name, None)
        self.remove_exec_files(exe.name)
        self.record_exec(exe.name, {"exit_code": exit_code, "error": message, "pid": 0})
        client.send(jframe(ERROR, {"message": message}))
        client.finish()

    def exec_exited(self, exe: Exec, status: int) -> None:
        exe.status = status
        exe.drain()
        code = exit_code_of(status)
        self.record_exec(exe.name, {"exit_code": code, "pid": exe.pid})
        if exe.client is not None:
            exe.client.send(jframe(EXIT, {"exit_code": code}))
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
            self.clients.add(Client(self, sock))

    def forget(self, client: Client) -> None:
        self.clients.discard(client)
        self.attached.discard(client)
        self.waiters.discard(client)
        for exe in self.execs.values():
            if exe.client is client:
                exe.client = None

    def readable(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if client.request is None:
            client.inbuf += data
            line, sep, rest = client.inbuf.partition(b"\n")
            if not sep:
                if not data or len(client.inbuf) > REQUEST_MAX:
                    client.close()
                return
            client.inbuf = b""
            try:
                client.request = json.loads(line)
            except ValueError:
                client.send(jframe(ERROR, {"message": "bad request"}))
                client.finish()
                return
            self.dispatch(client, client.request)
            if rest and not client.closed:
                self.stdin_from(client, rest)
            return
        self.stdin_from(client, data)

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
                client.send(jframe(REPLY, {"phase": self.phase}))
            elif op == "start":
                self.start(client)
            elif op == "wait":
                self.waiters.add(client)
                client.send(jframe(REPLY, {"phase": self.phase}))
            elif op == "exec":
                self.exec(client, req)
            elif op == "kill":
                self.kill(req)
                client.send(jframe(REPLY, {}))
                client.finish()
            elif op == "resize":
                target = self.init if not req.get("exec_id") else self.execs.get(req["exec_id"])
                if target is None:
                    raise ValueError("no such exec")
                target.resize(int(req["height"]), int(req["width"]))
                client.send(jframe(REPLY, {}))
                client.finish()
            elif op == "status":
                client.send(jframe(REPLY, {"phase": self.phase, "pid": self.init.pid}))
                client.finish()
            elif op == "shutdown":
                if self.phase != "ready":
                    raise ValueError(f"container is {self.phase}")
                client.send(jframe(REPLY, {}))
                client.finish()
                self.shutdown()
            else:
                raise ValueError(f"unknown op {op!r}")
        except (ValueError, OSError) as exc:
            client.send(jframe(ERROR, {"message": str(exc)}))
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

    # -- loop ---------------------------------------------------------------------------------
    def loop_once(self, timeout: float | None) -> None:
        for key, events in self.sel.select(timeout):
            try:
                self.handle(key.data, events)
            except Exception:  # one bad connection or stream must not take the container's shim down
                traceback.print_exc()
                if isinstance(key.data, Client):
                    key.data.close()
                elif isinstance(key.data, FdWatch):
                    self.unwatch(key.data)
            if self.done:
                return

    def handle(self, data: object, events: int) -> None:
        if data == "accept":
            self.accept()
        elif data == "sigchld":
            try:
                while os.read(self.wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            self.reap()
        elif isinstance(data, Client):
            if events & selectors.EVENT_WRITE:
                data.flush()
            if events & selectors.EVENT_READ and not data.closed:
                self.readable(data)
        elif isinstance(data, FdWatch):
            data.ready(events)

    def run(self) -> None:
        while not self.done:
            self.loop_once(None)


def run_shim(state_dir: str) -> None:
    """Be the shim of the container whose state is in ``state_dir`` (the caller has detached us)."""
    os.chdir(state_dir)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(PR_SET_NAME, b"muslin-shim", 0, 0, 0)  # what ps -o comm and top show
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    err = os.open(ERR_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.dup2(err, 2)
    os.close(err)
    with open(CONFIG_NAME) as f:
        config = json.load(f)
    shim = Shim(config)
    with open(PID_NAME, "w") as f:
        f.write(str(os.getpid()))
    os.write(1, b"ready\n")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    try:
        shim.run()
    except BaseException:  # muslind stopped listening at `ready`: shim.err is where this can be read
        traceback.print_exc()
        sys.stderr.flush()


def remove_empty_err() -> None:
    """Remove shim.err if it is ours (fd 2) and nothing was written to it."""
    try:
        ours, there = os.fstat(2), os.stat(ERR_NAME)
    except OSError:
        return
    if (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino) and ours.st_size == 0:
        os.unlink(ERR_NAME)


def serve_spawner() -> None:
    """Fork a shim for each state directory read from stdin; exit when stdin closes.

    The spawner has every module a shim needs already imported, so a shim is ready in a few
    milliseconds instead of a Python start-up. Each shim is forked twice and put in its own session,
    so it is reparented away from the spawner and from muslind: either may die, the shim runs on.
    Each request gets one line on stdout: ``ready`` from the new shim, or ``error ...``.
    """
    os.chdir("/")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.write(1, b"ready\n")
    pending = b""
    while True:
        data = os.read(0, 4096)
        if not data:
            return
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            child = os.fork()
            if child == 0:
                try:
                    os.setsid()
                    if os.fork() == 0:
                        run_shim(line.decode())
                except BaseException as exc:  # reported to muslind, never raised into the spawner's loop
                    os.write(1, f"error {type(exc).__name__}: {exc}\n".replace("\n", " ").encode() + b"\n")
                finally:
                    os._exit(0)
            os.waitpid(child, 0)


if __name__ == "__main__":
    serve_spawner()
