"""Docker's stream framing and the copy loop of hijacked attach/exec sessions."""

from __future__ import annotations

import asyncio
import contextlib
import struct

from muslin.runtime import Stream

from .detachkeys import EscapeProxy

MUX_HEADER = struct.Struct(">BxxxI")
STREAM_IDS = {"stdin": 0, "stdout": 1, "stderr": 2}
RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"


def content_type(tty: bool) -> str:
    """With a TTY the stream is raw; without, each chunk carries an 8-byte header naming its stream."""
    return RAW if tty else MULTIPLEXED


def mux(stream: str, data: bytes) -> bytes:
    return MUX_HEADER.pack(STREAM_IDS[stream], len(data)) + data


async def pump_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: Stream,
                       tty: bool, stdin: bool, detach: EscapeProxy | None = None,
                       detach_notice: bytes = b"", with_stderr: bool = True) -> None:
    """Copy the client's bytes to the process's stdin and the process's output back, until it ends.

    With ``detach`` (a TTY's stdin) the client's input goes through it; once it has seen the detach
    keys the session ends at once, the process left running, and ``detach_notice`` (dockerd's exec
    says why the stream ended) is the last thing the client reads before the connection closes.
    Without ``with_stderr`` the process's stderr is dropped.
    """

    async def upstream() -> bool:
        """Forward stdin; True when the client detached, False at its EOF."""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if detach is not None:
                    data = detach.feed(data)
                    if detach.detached:
                        return True
                if data:
                    stream.write(data)
                    await stream.drain()
        except (ConnectionError, OSError):
            pass
        # The client is done sending: with stdin_once the process sees EOF (the shim decides).
        with contextlib.suppress(Exception):
            stream.close_stdin()
        return False

    async def downstream() -> None:
        try:
            while True:
                item = await stream.read()
                if item is None:
                    break
                kind, data = item
                if kind == "stderr" and not with_stderr:
                    continue
                writer.write(data if tty else mux(kind, data))
                await writer.drain()
        except (ConnectionError, OSError):
            pass

    feeder = asyncio.ensure_future(upstream()) if stdin else None
    output = asyncio.ensure_future(downstream())
    detached = False
    try:
        if feeder is not None:
            await asyncio.wait({feeder, output}, return_when=asyncio.FIRST_COMPLETED)
            detached = feeder.done() and not feeder.cancelled() and feeder.result()
        if not detached:
            await output
    finally:
        for task in (feeder, output):
            if task is not None and not task.done():
                task.cancel()
        stream.close()
    with contextlib.suppress(Exception):
        if detached:
            if detach_notice:
                writer.write(detach_notice if tty else mux("stdout", detach_notice))
                await writer.drain()
            writer.close()  # as dockerd: the hijacked connection ends with the session
        else:
            writer.write_eof()
            await writer.drain()
