"""Talking to a shim over its socket: one request line, then frames (see ``shim/protocol.py``).

Socket paths under a deep state directory can exceed the 108 bytes ``sun_path`` holds, so connecting
goes through ``/proc/self/fd/<dir fd>/shim.sock``, which resolves to the same file.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from dataclasses import dataclass

from .errors import EngineError
from .shim import protocol

SUN_PATH_MAX = 107


class ShimGone(Exception):
    """No shim listens (it never ran, or has finished), or it hung up before answering."""


class NotListening(ShimGone):
    """Nothing listens on the socket: there is no shim, or it has finished (never that it hung up)."""


class ShimError(EngineError):
    """The shim refused a request (the message says why)."""


def connect(state_dir: str, timeout: float | None = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    path = os.path.join(state_dir, protocol.SOCKET_NAME)
    try:
        if len(path.encode()) <= SUN_PATH_MAX:
            sock.connect(path)
        else:
            fd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                sock.connect(f"/proc/self/fd/{fd}/{protocol.SOCKET_NAME}")
            finally:
                os.close(fd)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
        sock.close()
        raise NotListening(str(exc)) from exc
    return sock


@dataclass(frozen=True)
class Frame:
    kind: int
    payload: bytes

    def json(self) -> dict:
        return json.loads(self.payload)


def _recv_frame(sock: socket.socket) -> Frame:
    decoder = protocol.FrameDecoder()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # accepted just before the shim closed its socket
            chunk = b""
        if not chunk:
            raise ShimGone("the shim closed the connection")
        frames = decoder.feed(chunk)
        if frames:
            return Frame(*frames[0])


def request(state_dir: str, req: dict, timeout: float = 30.0) -> dict:
    """A one-shot request; returns the REPLY payload, raises EngineError for an ERROR frame."""
    with connect(state_dir, timeout) as sock:
        sock.sendall(protocol.encode_request(req))
        frame = _recv_frame(sock)
    if frame.kind == protocol.ERROR:
        raise ShimError(frame.json()["message"])
    return frame.json()


class Stream:
    """An open request to a shim on the event loop: attach, wait or exec."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.exit_code: int | None = None

    @classmethod
    async def open(cls, state_dir: str, req: dict) -> "Stream":
        """Connect, send the request, and return once the shim has answered it (REPLY frame)."""
        sock = await asyncio.to_thread(connect, state_dir)
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        stream = cls(reader, writer)
        writer.write(protocol.encode_request(req))
        first = await stream._frame()
        if first is None:
            stream.close()
            raise ShimGone("the shim closed the connection")
        if first.kind == protocol.ERROR:
            stream.close()
            raise ShimError(first.json()["message"])
        return stream

    async def _frame(self) -> Frame | None:
        try:
            header = await self._reader.readexactly(protocol.HEADER.size)
            kind, length = protocol.decode_header(header)
            return Frame(kind, await self._reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def read(self) -> tuple[str, bytes] | None:
        """The next output chunk as ("stdout" | "stderr", bytes); None when the stream has ended."""
        while True:
            frame = await self._frame()
            if frame is None:
                return None
            if frame.kind == protocol.STDOUT:
                return "stdout", frame.payload
            if frame.kind == protocol.STDERR:
                return "stderr", frame.payload
            if frame.kind == protocol.EXIT:
                self.exit_code = frame.json()["exit_code"]
            elif frame.kind == protocol.ERROR:
                raise ShimError(frame.json()["message"])

    def write(self, data: bytes) -> None:
        """Bytes for the process's stdin."""
        if not self._writer.is_closing():
            self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def close_stdin(self) -> None:
        """No more stdin: with ``stdin_once`` the process sees EOF."""
        if not self._writer.is_closing() and self._writer.can_write_eof():
            self._writer.write_eof()

    def close(self) -> None:
        self._writer.close()
