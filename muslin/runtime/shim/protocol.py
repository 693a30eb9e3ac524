"""What muslind and a shim say to each other on ``shim.sock``, and the files of a state directory they share.

A client connects and sends one request, a JSON object on one line: ``{"op": ...}``. The shim answers
with frames ``[kind: u8][length: u32 BE][payload]``: STDOUT and STDERR carry the process's bytes, EXIT
``{"exit_code"}``, REPLY and ERROR (``{"message"}``) JSON. Ops: ``attach`` (stdout, stderr, stdin,
stdin_once), ``wait``, ``start``, ``exec`` (exec_id, process, tty, stdin, detach), ``kill`` (signal,
exec_id?), ``resize`` (height, width, exec_id?), ``status`` and ``shutdown`` (before start only). Bytes
the client sends after the line are the process's stdin, read no faster than the process takes them
once a buffer is full; the client's EOF on them detaches (closing the process's stdin with
``stdin_once``).

Standard library only, as the whole shim package: the shim runs under ``python3 -I -S``. Its imports are
kept light too (no dataclasses, no typing): they are the spawner's start-up time.
"""

from __future__ import annotations

import json
import struct

HEADER = struct.Struct(">BI")  # kind, payload length
STDOUT, STDERR, EXIT, REPLY, ERROR = 1, 2, 3, 4, 5
REQUEST_MAX = 1024 * 1024  # an exec's process spec is the largest request

# In the container's state directory: muslind writes the config, the shim the rest.
SOCKET_NAME = "shim.sock"
CONFIG_NAME = "shim.json"
PID_NAME = "shim.pid"
ERR_NAME = "shim.err"  # the shim's stderr; removed when it ends with nothing written to it


class ProtocolError(ValueError):
    """The peer broke the protocol (the message says how)."""


class RequestTooLong(ProtocolError):
    """More than REQUEST_MAX bytes and still no end of line: not a client of ours."""


Frame = tuple[int, bytes]  # kind, payload


def encode_frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def encode_json_frame(kind: int, obj: object) -> bytes:
    return encode_frame(kind, json.dumps(obj).encode())


def decode_header(header: bytes) -> tuple[int, int]:
    """(kind, payload length) of a frame's first HEADER.size bytes."""
    kind, length = HEADER.unpack(header)
    return kind, length


class FrameDecoder:
    """Frames out of a byte stream that arrives in pieces of any size."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """The frames ``data`` completes, in order; a partial one waits for the next feed."""
        self._buf += data
        frames = []
        start = 0
        while len(self._buf) - start >= HEADER.size:
            kind, length = decode_header(self._buf[start : start + HEADER.size])
            end = start + HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append((kind, bytes(self._buf[start + HEADER.size : end])))
            start = end
        del self._buf[:start]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)


def encode_request(request: dict) -> bytes:
    return json.dumps(request).encode() + b"\n"


class RequestReader:
    """The request line out of the first bytes a client sends, in pieces; what follows it is stdin."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> tuple[dict, bytes] | None:
        """(the request, the bytes after its line) once the line is complete, else None.
        Raises RequestTooLong past REQUEST_MAX, ProtocolError for a line that is no JSON object."""
        self._buf += data
        line, sep, rest = self._buf.partition(b"\n")
        if not sep:
            if len(self._buf) > REQUEST_MAX:
                raise RequestTooLong(f"no request line in {len(self._buf)} bytes")
            return None
        self._buf = b""
        try:
            request = json.loads(line)
        except ValueError:
            raise ProtocolError("bad request") from None
        if not isinstance(request, dict):
            raise ProtocolError("bad request")
        return request, rest
