"""Docker's stream framing and the copy loop of hijacked attach/exec sessions."""

from __future__ import annotations

import asyncio
import contextlib
import struct

from muslin.runtime import Stream

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
                       tty: bool, stdin: bool) -> None:
    """Copy the client's bytes to the process's stdin and the process's output back, until it ends."""

    async def upstream() -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                stream.write(data)
                await stream.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                stream.close_stdin()

    feeder = asyncio.ensure_future(upstream()) if stdin else None
    try:
        while True:
            item = await stream.read()
            if item is None:
                break
            kind, data = item
            writer.write(data if tty else mux(kind, data))
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if feeder:
            feeder.cancel()
        stream.close()
        with contextlib.suppress(Exception):
            writer.write_eof()
            await writer.drain()
