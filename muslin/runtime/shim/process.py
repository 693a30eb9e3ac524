"""The processes a shim runs through runc, the container's init and its execs, and their stdio: output
read from pipes or a pty master and forwarded, stdin buffered so no client ever blocks the shim."""

from __future__ import annotations

import errno
import fcntl
import os
import selectors
import socket
import struct
import termios
import time
from collections.abc import Callable

from .connection import Client
from .log import Log
from .protocol import STDERR, STDOUT, encode_frame
from .reactor import READ, WRITE, Reactor

STDIN_BUFFER_MAX = 1024 * 1024  # stdin queued for a process that does not read: its senders pause past this
DRAIN_SECONDS = 2.0


class Output:
    """A stream read from the container (pipe or pty master), forwarded to subscribers."""

    def __init__(self, fd: int, stream: str, on_data: Callable[[str, bytes], None],
                 on_eof: Callable[["Output"], None]) -> None:
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

    def __init__(self, reactor: Reactor, fd: int | None, owned: bool) -> None:
        self.reactor = reactor
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
            self.reactor.watch(self.fd, WRITE, self.flush)
            self.watching = True
        elif not self.buf and self.watching:
            self.reactor.watch(self.fd, WRITE, None)
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
            self.reactor.watch(self.fd, WRITE, None)
        if self.owned:
            os.close(self.fd)


class Process:
    """A process the shim runs through runc: the container's init or one exec."""

    def __init__(self, reactor: Reactor, name: str, tty: bool, open_stdin: bool) -> None:
        self.reactor = reactor
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
            self.stdin = Stdin(self.reactor, None, owned=False)  # typed ahead of the start: kept for the pty
            return [null, null, null]
        fds = [null]
        if open_stdin:
            r, w = os.pipe()
            os.set_blocking(w, False)
            self.stdin = Stdin(self.reactor, w, owned=True)
            self.child_fds.append(r)
            fds = [r]
        for stream in ("stdout", "stderr"):
            r, w = os.pipe()
            os.set_blocking(r, False)
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
            os.set_blocking(self.master, False)
            self.outputs = [Output(self.master, "stdout", self.on_output, self.on_eof)]
            if self.stdin is not None:
                self.stdin.fd = self.master
                self.stdin.flush()
            self.close_console()
        for out in self.outputs:
            self.reactor.watch(out.fd, READ, out.read)

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
            self.reactor.watch(out.fd, READ, None)
            os.close(out.fd)
        self.outputs = []
        if self.stdin is not None:
            self.stdin.close()
        self.close_console()

    def on_output(self, stream: str, data: bytes) -> None:
        raise NotImplementedError

    def on_eof(self, out: Output) -> None:
        self.reactor.watch(out.fd, READ, None)
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
                ready.register(out.fd, READ, out)
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

    def __init__(self, reactor: Reactor, tty: bool, open_stdin: bool, log: Log, attached: set[Client]) -> None:
        super().__init__(reactor, "init", tty, open_stdin)
        self.log = log
        self.attached = attached  # the shim's: clients come and go

    def on_output(self, stream: str, data: bytes) -> None:
        self.log.add(stream, data)
        kind = STDOUT if stream == "stdout" else STDERR
        chunk = encode_frame(kind, data)
        for client in list(self.attached):
            if stream in client.request["streams"]:
                client.send(chunk)


class Exec(Process):
    """One ``runc exec``: output goes to the client that started it (Docker keeps no exec log)."""

    def __init__(self, reactor: Reactor, name: str, tty: bool, open_stdin: bool, client: Client | None) -> None:
        super().__init__(reactor, name, tty, open_stdin)
        self.client = client

    def on_output(self, stream: str, data: bytes) -> None:
        if self.client is not None:
            self.client.send(encode_frame(STDOUT if stream == "stdout" else STDERR, data))
