"""HTTP framing of muslin.api.http over a real unix socket: parsing, chunked bodies, limits, hijack."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from muslin.api import containers, execs, images, networks, swarm, system
from muslin.api.http import MAX_HEAD_BYTES, Hijack, HTTPError, Request, Response, Router, Server, StreamResponse
from muslin.errors import Conflict

SERVER_HEADERS = [("Api-Version", "1.50")]


class Recorder:
    """The handlers under test; each request they see is kept."""

    def __init__(self) -> None:
        self.seen: list[Request] = []

    async def echo(self, _: object, req: Request) -> Response:
        self.seen.append(req)
        return Response(body=json.dumps({"path": req.path, "version": req.api_version, "params": req.params,
                                         "query": req.query, "body": req.body.decode()}).encode())

    async def conflict(self, _: object, req: Request) -> Response:
        raise Conflict("name in use")

    async def bug(self, _: object, req: Request) -> Response:
        raise KeyError("oops")

    async def refused(self, _: object, req: Request) -> Response:
        raise HTTPError(400, "bad input")

    async def stream(self, _: object, req: Request) -> StreamResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"one"
            yield b"two"

        return StreamResponse(chunks=chunks())

    async def hijack(self, _: object, req: Request) -> Hijack:
        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.readexactly(5)
            writer.write(b"echo:" + data)
            await writer.drain()
            writer.close()

        return Hijack(session=session, content_type="application/vnd.docker.raw-stream")


async def serve(tmp_path: Path) -> tuple[Server, Recorder, str]:
    rec = Recorder()
    router = Router()
    router.add_all(None, [("GET", "/things/{id}", rec.echo), ("POST", "/things", rec.echo),
                          ("GET", "/conflict", rec.conflict), ("GET", "/bug", rec.bug),
                          ("GET", "/refused", rec.refused), ("GET", "/stream", rec.stream),
                          ("POST", "/attach", rec.hijack)], max_body=1000)
    server = Server(router, SERVER_HEADERS)
    path = str(tmp_path / "api.sock")
    await server.start_unix(path)
    return server, rec, path


async def exchange(path: str, raw: bytes, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(raw)
    await writer.drain()
    try:
        if until_close:
            return await asyncio.wait_for(reader.read(), 5)
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


TestBody = Callable[[str, Recorder], Awaitable[None]]


@pytest.fixture
def sock(tmp_path: Path) -> Callable[[TestBody], None]:
    """Runs a test body against a fresh server on a unix socket in tmp_path, closing it afterwards."""
    def go(body: TestBody) -> None:
        async def main() -> None:
            server, rec, path = await serve(tmp_path)
            try:
                await body(path, rec)
            finally:
                await server.close()

        asyncio.run(main())

    return go


def test_request_line_version_query_and_decoded_path_parameter(sock) -> None:
    async def body(path: str, rec: Recorder) -> None:
        raw = b"GET /v1.50/things/test%2001?all=1&filters=%7B%7D HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
        status, headers, payload = split(await exchange(path, raw))
        assert status == 200
        assert headers["api-version"] == "1.50" and int(headers["content-length"]) == len(payload)
        doc = json.loads(payload)
        assert doc["path"] == "/things/test%2001"
        assert doc["params"] == {"id": "test 01"} and doc["version"] == "1.50"
        assert doc["query"] == {"all": ["1"], "filters": ["{}"]}
        # An encoded slash stays inside its segment: it names one thing, it does not reach another route.
        status, _, payload = split(await exchange(path, b"GET /things/a%2Fb HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"))
        assert status == 200 and json.loads(payload)["params"] == {"id": "a/b"}

    sock(body)


def test_chunked_body_is_reassembled(sock) -> None:
    async def body(path: str, rec: Recorder) -> None:
        raw = (b"POST /things HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        status, _, payload = split(await exchange(path, raw))
        assert status == 200 and json.loads(payload)["body"] == "hello world"

    sock(body)


def test_keep_alive_serves_two_requests_and_a_405_keeps_the_connection(sock) -> None:
    async def body(path: str, rec: Recorder) -> None:
        raw = (b"DELETE /things/x HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}"
               b"GET /things/y HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        out = await exchange(path, raw)
        first, _, rest = out.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 405")
        assert b"HTTP/1.1 200" in rest and b'"id": "y"' in rest

    sock(body)


def test_declared_body_over_the_limit_is_413_unread(sock) -> None:
    async def body(path: str, rec: Recorder) -> None:
        raw = b"POST /things HTTP/1.1\r\nHost: d\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100
        status, headers, payload = split(await exchange(path, raw))
        assert status == 413 and "too large" in json.loads(payload)["message"]
        assert headers["connection"] == "close"
        assert rec.seen == []

    sock(body)


def test_chunked_body_over_the_limit_is_413(sock) -> None:
    async def body(path: str, rec: Recorder) -> None:
        chunk = b"200\r\n" + b"x" * 0x200 + b"\r\n"
        raw = b"POST /things HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3
        status, _, _ = split(await exchange(path, raw))
        assert status == 413 and rec.seen == []

    sock(body)


def test_head_over_the_limit_is_431(sock) -> None:
    async def body(path: str, rec: Recorder) -> None:
        raw = b"GET /things/x HTTP/1.1\r\nHost: d\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n"
        status, _, _ = split(await exchange(path, raw))
        assert status == 431 and rec.seen == []

    sock(body)


def test_malformed_request_is_400(sock) -> None:
    async def body(path: str, rec: Recorder) -> None:
        status, _, _ = split(await exchange(path, b"NOT HTTP AT ALL\r\n\r\n"))
        assert status == 400

    sock(body)


def test_errors_map_to_status_and_message(sock) -> None:
    async def body(path: str, rec: Recorder) -> None:
        for target, want, text in [(b"/conflict", 409, "name in use"), (b"/refused", 400, "bad input"),
                                   (b"/bug", 500, "KeyError"), (b"/nowhere", 404, "page not found")]:
            status, _, payload = split(await exchange(path, b"GET " + target + b" HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"))
            assert status == want and text in json.loads(payload)["message"]

    sock(body)


def test_stream_response_is_chunked(sock) -> None:
    async def body(path: str, rec: Recorder) -> None:
        status, headers, payload = split(await exchange(path, b"GET /stream HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"))
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert payload == b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"

    sock(body)


def test_hijack_upgrade_answers_101_then_carries_raw_bytes(sock) -> None:
    async def body(path: str, rec: Recorder) -> None:
        # The client's first stream bytes follow the request at once: they must reach the session.
        raw = (b"POST /attach HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
               b"hello")
        out = await exchange(path, raw)
        status, headers, rest = split(out)
        assert status == 101 and out.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
        assert headers["upgrade"] == "tcp" and headers["connection"].lower() == "upgrade"
        assert headers["content-type"] == "application/vnd.docker.raw-stream"
        assert rest == b"echo:hello"

    sock(body)


def test_hijack_without_upgrade_answers_200_then_raw_bytes(sock) -> None:
    async def body(path: str, rec: Recorder) -> None:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"POST /attach HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        writer.write(b"world")
        assert await asyncio.wait_for(reader.read(), 5) == b"echo:world"
        writer.close()

    sock(body)


def test_every_route_of_the_api_decodes_its_path_parameters() -> None:
    """`test%2001` reaches each handler as "test 01" (docker-py percent-encodes names in paths)."""
    router = Router()
    tables = (system.ROUTES, networks.ROUTES, containers.ROUTES, execs.ROUTES, images.UPLOADS, images.ROUTES,
              swarm.ROUTES)
    for table in tables:
        router.add_all(None, table)
    with_params = [(method, pattern) for table in tables for method, pattern, _ in table if "{" in pattern]
    assert len(with_params) > 20
    for method, pattern in with_params:
        match = router.route(method, re.sub(r"\{\w+(:path)?\}", "test%2001", pattern))
        assert match is not None, (method, pattern)
        assert set(match.params.values()) == {"test 01"}, (method, pattern, match.params)
