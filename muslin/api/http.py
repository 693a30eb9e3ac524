"""A small HTTP/1.1 server on a unix socket, built on h11, that can hand a connection over (hijack).

The Docker API needs three kinds of answer: a plain JSON reply, a reply whose headers go out at once
and whose body follows later (``wait``, ``logs --follow``, ``events``), and a protocol switch after which
the socket carries raw or multiplexed container streams (``attach``, ``exec start``). h11 keeps the
HTTP state machine honest; after a 101 we take the raw asyncio streams back from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import socket
import ssl
import struct
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from muslin.api.tls import tls_handler
from muslin.errors import EngineError

log = logging.getLogger(__name__)

VERSION_PREFIX = re.compile(r"^/v(\d+\.\d+)(/.*)$")
READ_CHUNK = 65536
# What one request may make the daemon hold: its head (request line and headers; Go's net/http allows
# 1 MiB, the CLI sends a few KiB at most) and its body (JSON; image uploads have their own bound).
MAX_HEAD_BYTES = 64 * 1024
MAX_JSON_BODY = 8 * 1024 * 1024
# How long a hijacked stream waits for the client to have read the 101 (it is reading at once).
HANDOVER_WAIT_S = 1.0


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    api_version: str | None
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            raise HTTPError(400, "invalid JSON in request body") from None

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.arg(name, "")
        if value == "":
            return default
        return value.lower() not in ("0", "false", "no")


def labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    """Docker's ``label`` filter: every ``key`` or ``key=value`` given must be on the object."""
    for item in wanted:
        key, has_value, value = item.partition("=")
        if key not in labels or (has_value and labels[key] != value):
            return False
    return True


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status=status, body=json.dumps(data).encode() + b"\n")


def error_response(status: int, message: str) -> Response:
    return json_response({"message": message}, status)


@dataclass
class StreamResponse:
    """Headers now, body chunks as they come (chunked encoding)."""

    chunks: AsyncIterator[bytes]
    status: int = 200
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Hijack:
    """Switch protocols (101 UPGRADED), then run ``session`` on the raw streams."""

    session: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    content_type: str = "application/vnd.docker.raw-stream"


Reply = Response | StreamResponse | Hijack
Handler = Callable[[Request], Awaitable[Reply]]
# A handler of a resource module, which takes what it serves (the engine) before the request.
BoundHandler = Callable[[Any, Request], Awaitable[Reply]]
Route = tuple[str, str, BoundHandler]


@dataclass(frozen=True)
class Match:
    handler: Handler
    params: dict[str, str]
    max_body: int


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler, int]] = []

    def add(self, method: str, pattern: str, handler: Handler, max_body: int = MAX_JSON_BODY) -> None:
        # "{name}" matches one path segment; "{name:path}" matches the rest (image names have slashes).
        regex = re.sub(r"\{(\w+):path\}", r"(?P<\1>.+)", pattern)
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
        self._routes.append((method, re.compile(f"^{regex}$"), handler, max_body))

    def add_all(self, served: Any, routes: list[Route], max_body: int = MAX_JSON_BODY) -> None:
        for method, pattern, handler in routes:
            self.add(method, pattern, functools.partial(handler, served), max_body)

    def route(self, method: str, path: str) -> Match | None:
        """The handler for a (still percent-encoded) path; its parameters decoded (``test%2001``)."""
        path_matched = False
        for m, regex, handler, max_body in self._routes:
            found = regex.match(path)
            if found:
                path_matched = True
                if m == method or (method == "HEAD" and m == "GET"):
                    return Match(handler, {k: unquote(v) for k, v in found.groupdict().items()}, max_body)
        if path_matched:
            raise HTTPError(405, f"method {method} not allowed for {path}")
        return None


class Server:
    def __init__(self, router: Router, server_headers: list[tuple[str, str]]) -> None:
        self.router = router
        self.server_headers = server_headers
        self._servers: list[asyncio.AbstractServer] = []
        self._sessions: set[asyncio.Task] = set()

    async def start_unix(self, path: str, gid: int = 0, mode: int = 0o660) -> None:
        """Listen on a unix socket that only root and group gid may connect to (dockerd's -G)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        server = await asyncio.start_unix_server(self._serve, path=path, limit=READ_CHUNK)
        os.chown(path, 0, gid)
        os.chmod(path, mode)
        self._servers.append(server)

    async def start_tcp(self, host: str, port: int, context: ssl.SSLContext) -> None:
        """Listen on tcp, TLS only (the caller's context verifies clients; see tls.py for why not asyncio's)."""
        server = await asyncio.start_server(tls_handler(context, self._serve), host=host or None, port=port,
                                            reuse_address=True)
        self._servers.append(server)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        if self._servers:
            for task in list(self._sessions):
                task.cancel()
            await asyncio.gather(*self._sessions, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, h11.ProtocolError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._sessions.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await reader.read(READ_CHUNK)
            conn.receive_data(data)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        while True:
            try:
                event = await self._next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    return
                if len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers) > MAX_HEAD_BYTES:
                    # h11 bounds only a head still incomplete; one that arrived whole in a read is bounded here.
                    raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
                request = self._make_request(event)
                try:
                    match: Match | HTTPError | None = self.router.route(request.method, request.path)
                except HTTPError as exc:
                    match = exc  # answered once the body is read, keeping the connection usable
                max_body = match.max_body if isinstance(match, Match) else MAX_JSON_BODY
                request.body = await self._read_body(conn, reader, request, max_body)
            except h11.RemoteProtocolError as exc:
                # A malformed request, or a head past MAX_HEAD_BYTES (h11 hints 431): say so, then close.
                await self._refuse(conn, writer, exc.error_status_hint, str(exc) or "malformed HTTP request")
                return
            except _BodyTooLarge as exc:
                await self._refuse(conn, writer, 413, f"request body too large: more than {exc.limit} bytes")
                return
            result = await self._dispatch(request, match)
            if isinstance(result, Hijack):
                await self._hijack(conn, reader, writer, result)
                return
            if isinstance(result, StreamResponse):
                if not await self._stream(conn, reader, writer, request, result):
                    return
            else:
                await self._respond(conn, writer, request, result)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader, request: Request,
                         limit: int) -> bytes:
        """The whole body, refused as soon as it is known to pass ``limit`` (declared or as it comes)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _BodyTooLarge(limit)
        body = bytearray()
        while True:
            part = await self._next_event(conn, reader)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > limit:
                    raise _BodyTooLarge(limit)
            elif isinstance(part, h11.EndOfMessage):
                return bytes(body)
            else:
                raise h11.RemoteProtocolError("connection closed inside a request body")

    async def _refuse(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        """An error answer to a request that cannot be served whole; the connection closes after it."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"message": message}).encode() + b"\n"
        headers = [*self._headers("application/json", [("Content-Length", str(len(body)))]), ("Connection", "close")]
        try:
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)) + conn.send(h11.Data(data=body))
                         + conn.send(h11.EndOfMessage()))
            await writer.drain()
        except (h11.LocalProtocolError, ConnectionError):
            pass

    @staticmethod
    def _make_request(event: h11.Request) -> Request:
        target = event.target.decode("latin-1")
        parts = urlsplit(target)
        path, version = parts.path, None
        found = VERSION_PREFIX.match(path)
        if found:
            version, path = found.group(1), found.group(2)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        return Request(method=event.method.decode("latin-1"), path=path,
                       query=parse_qs(parts.query, keep_blank_values=True), headers=headers, body=b"",
                       api_version=version)

    async def _dispatch(self, request: Request, match: Match | HTTPError | None) -> Reply:
        try:
            if isinstance(match, HTTPError):
                raise match
            if match is None:
                return error_response(404, "page not found")
            request.params = match.params
            return await match.handler(request)
        except HTTPError as exc:
            return error_response(exc.status, exc.message)
        except EngineError as exc:
            if exc.status == 304:
                return Response(status=304, content_type="text/plain")  # a 304 carries no body
            return error_response(exc.status, exc.message)
        except Exception as exc:  # a bug must still answer the client, and be logged with its cause
            log.exception("%s %s failed", request.method, request.path)
            return error_response(500, f"{type(exc).__name__}: {exc}")

    def _headers(self, content_type: str, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [("Content-Type", content_type), *self.server_headers, *extra]

    async def _respond(self, conn: h11.Connection, writer: asyncio.StreamWriter, request: Request,
                       response: Response) -> None:
        headers = self._headers(response.content_type, response.headers)
        body = b"" if request.method == "HEAD" else response.body
        headers.append(("Content-Length", str(len(response.body))))
        out = conn.send(h11.Response(status_code=response.status, headers=headers))
        if body:
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        writer.write(out)
        await writer.drain()

    async def _stream(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      request: Request, response: StreamResponse) -> bool:
        headers = self._headers(response.content_type, [*response.headers, ("Transfer-Encoding", "chunked")])
        writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
        await writer.drain()
        # The client may leave before the body ends (`docker run -d` drops its wait): watch for its EOF,
        # so the stream and whatever it waits on are let go at once rather than at the container's exit.
        gone: asyncio.Future[bytes] | None = asyncio.ensure_future(reader.read(READ_CHUNK))
        chunks = response.chunks.__aiter__()
        try:
            while True:
                step = asyncio.ensure_future(chunks.__anext__())
                await asyncio.wait({step} if gone is None else {step, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone is not None and gone.done():
                    early = b"" if gone.exception() else gone.result()
                    gone = None
                    if not early:
                        step.cancel()
                        return False
                    _unread(reader, early)  # a pipelined request, kept for the next cycle
                try:
                    chunk = await step
                except StopAsyncIteration:
                    break
                if chunk:
                    writer.write(conn.send(h11.Data(data=chunk)))
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return False
        finally:
            if gone is not None:
                # Let the watcher give the reader up before the next request reads from it (two readers
                # at once is an error), keeping whatever it got meanwhile.
                gone.cancel()
                await asyncio.wait({gone})
                if not gone.cancelled() and gone.exception() is None and gone.result():
                    _unread(reader, gone.result())
            aclose = getattr(response.chunks, "aclose", None)
            if aclose:
                with contextlib.suppress(Exception):
                    await aclose()
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True

    async def _hijack(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      hijack: Hijack) -> None:
        headers = self._headers(hijack.content_type, [("Connection", "Upgrade"), ("Upgrade", "tcp")])
        if conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
            writer.write(conn.send(h11.InformationalResponse(status_code=101, headers=headers, reason=b"UPGRADED")))
            trailing, _ = conn.trailing_data
        else:
            # Old clients hijack a plain 200 response; the stream starts right after the headers.
            writer.write(b"HTTP/1.1 200 OK\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n")
            trailing = b""
        await writer.drain()
        await _handed_over(writer)
        if trailing:
            _unread(reader, trailing)
        await hijack.session(reader, writer)


class _BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


async def _handed_over(writer: asyncio.StreamWriter) -> None:
    """Wait (bounded) until the client has read the switch's headers, on a unix socket.

    Clients parse the headers through a buffered reader, then take the raw socket: stream bytes that
    arrived in the same read are lost (docker-py's attach(logs=True) gets nothing). On a unix socket
    the kernel counts what the peer has not read yet (SIOCOUTQ), so the stream starts once that is 0.
    """
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANDOVER_WAIT_S
    while loop.time() < deadline:
        try:
            unread = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        except OSError:
            return
        if unread == 0:
            return
        await asyncio.sleep(0.001)


def _unread(reader: asyncio.StreamReader, data: bytes) -> None:
    """Put bytes h11 already read back in front of the stream (asyncio has no public unread)."""
    buffer: bytearray = reader._buffer  # noqa: SLF001 - the one documented-by-source way to prepend
    buffer[:0] = data
