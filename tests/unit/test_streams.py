"""Detach keys (Docker's spelling and dockerd's matching), exec requests' keys and Tty, and the framing
of hijacked sessions."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from muslin.api import detachkeys, requests
from muslin.api.detachkeys import DEFAULT, EscapeProxy
from muslin.api.http import Hijack, Request, Router, Server
from muslin.api.streams import MUX_HEADER, content_type, mux, pump_session
from muslin.errors import InvalidArgument

SESSION_TIMEOUT_S = 5.0


def test_parse_docker_spellings() -> None:
    assert detachkeys.parse("ctrl-p,ctrl-q") == b"\x10\x11" == DEFAULT
    assert detachkeys.parse("ctrl-@,ctrl-a,ctrl-z,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_") == bytes(
        [0, 1, 26, 27, 28, 29, 30, 31])


def test_parse_single_bytes_and_del() -> None:
    assert detachkeys.parse("a,ctrl-x,DEL") == b"a\x18\x7f"
    assert detachkeys.parse("x") == b"x"


@pytest.mark.parametrize("spec, bad", [("foo", "foo"), ("ctrl-", "ctrl-"), ("ctrl-P", "ctrl-P"), ("a,,b", ""),
                                       ("é", "é"), ("ctrl-1", "ctrl-1"), ("del", "del")])
def test_parse_refuses_as_moby_term(spec: str, bad: str) -> None:
    with pytest.raises(ValueError) as info:
        detachkeys.parse(spec)
    assert str(info.value) == f"Unknown character: '{bad}'"


def test_api_messages_and_default() -> None:
    assert detachkeys.for_attach("") == DEFAULT
    assert detachkeys.for_exec("") == DEFAULT
    assert detachkeys.for_attach("ctrl-a") == b"\x01"
    with pytest.raises(InvalidArgument) as attach:
        detachkeys.for_attach("foo")
    assert attach.value.message == "Invalid detach keys (foo) provided" and attach.value.status == 400
    with pytest.raises(InvalidArgument) as exec_:
        detachkeys.for_exec("ctrl-")
    assert exec_.value.message == "Invalid escape keys (ctrl-) provided"


def test_escape_proxy_detaches_on_one_key_per_read() -> None:
    proxy = EscapeProxy(DEFAULT)
    assert proxy.feed(b"hello\n") == b"hello\n"
    assert proxy.feed(b"\x10") == b""  # held back: it may start the sequence
    assert not proxy.detached
    assert proxy.feed(b"\x11") == b""
    assert proxy.detached


def test_escape_proxy_gives_back_a_broken_sequence() -> None:
    proxy = EscapeProxy(DEFAULT)
    assert proxy.feed(b"\x10") == b""
    assert proxy.feed(b"z\n") == b"\x10z\n"
    assert proxy.feed(b"\x10") == b""
    assert proxy.feed(b"\x10") == b"\x10"  # the second ctrl-p may start the sequence again: held
    assert not proxy.detached
    assert proxy.feed(b"\x11") == b""
    assert proxy.detached


def test_escape_proxy_matches_inside_one_read() -> None:
    # dockerd 20.10 detaches on the keys sent in one write too; what precedes them still goes through.
    proxy = EscapeProxy(DEFAULT)
    assert proxy.feed(b"ab\x10\x11cd") == b"ab"
    assert proxy.detached
    assert proxy.feed(b"late") == b"late"  # not consulted after a detach: the session has ended


def test_escape_proxy_without_keys_passes_everything() -> None:
    proxy = EscapeProxy(b"")
    assert proxy.feed(b"\x10\x11") == b"\x10\x11" and not proxy.detached


def test_escape_proxy_single_key() -> None:
    proxy = EscapeProxy(b"\x10")
    assert proxy.feed(b"\x10") == b""
    assert proxy.detached


def test_mux_header() -> None:
    framed = mux("stderr", b"oops\n")
    assert MUX_HEADER.unpack(framed[:8]) == (2, 5) and framed[8:] == b"oops\n"
    assert content_type(True) == "application/vnd.docker.raw-stream"
    assert content_type(False) == "application/vnd.docker.multiplexed-stream"


class FakeStream:
    """A process's side of a session: scripted output, recorded stdin. The pure copy loop's counterpart."""

    def __init__(self, output: list[tuple[str, bytes]], hold_open: bool) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        for item in output:
            self.queue.put_nowait(item)
        if not hold_open:
            self.queue.put_nowait(None)
        self.stdin = bytearray()
        self.stdin_closed = False
        self.closed = False

    async def read(self) -> tuple[str, bytes] | None:
        return await self.queue.get()

    def write(self, data: bytes) -> None:
        self.stdin += data

    async def drain(self) -> None:
        pass

    def close_stdin(self) -> None:
        self.stdin_closed = True

    def close(self) -> None:
        self.closed = True


async def run_session(stream: FakeStream, tty: bool, stdin: bool, sends: list[bytes],
                      escape: EscapeProxy | None = None, notice: bytes = b"") -> bytes:
    """Run pump_session on one end of a socket pair, a client on the other; what the client read."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    client_reader, client_writer = await asyncio.open_connection(sock=theirs)
    session = asyncio.ensure_future(pump_session(reader, writer, stream, tty, stdin, escape, notice))  # type: ignore[arg-type]
    for data in sends:
        client_writer.write(data)
        await client_writer.drain()
        await asyncio.sleep(0.05)  # one read each, as keys typed at a terminal
    received = await asyncio.wait_for(client_reader.read(), SESSION_TIMEOUT_S)
    await asyncio.wait_for(session, SESSION_TIMEOUT_S)
    client_writer.close()
    return received


def test_session_without_tty_is_multiplexed() -> None:
    stream = FakeStream([("stdout", b"out\n"), ("stderr", b"err\n")], hold_open=False)
    got = asyncio.run(run_session(stream, tty=False, stdin=False, sends=[]))
    assert got == mux("stdout", b"out\n") + mux("stderr", b"err\n")
    assert stream.closed


def test_session_with_tty_is_raw() -> None:
    stream = FakeStream([("stdout", b"out\r\n"), ("stdout", b"err\r\n")], hold_open=False)
    assert asyncio.run(run_session(stream, tty=True, stdin=False, sends=[])) == b"out\r\nerr\r\n"


def test_session_detach_leaves_the_process_and_closes() -> None:
    # The process never ends (hold_open): only the detach keys can end this session.
    stream = FakeStream([("stdout", b"ready\r\n")], hold_open=True)
    notice = b"read escape sequence\r\n"
    got = asyncio.run(run_session(stream, tty=True, stdin=True, sends=[b"hi\n", b"\x10", b"\x11"],
                                  escape=EscapeProxy(DEFAULT), notice=notice))
    assert got == b"ready\r\n" + notice
    assert bytes(stream.stdin) == b"hi\n"  # the keys themselves never reach the process
    assert not stream.stdin_closed  # a detach leaves the process's stdin open, as dockerd does
    assert stream.closed


def test_session_detach_notice_is_framed_without_tty() -> None:
    stream = FakeStream([], hold_open=True)
    got = asyncio.run(run_session(stream, tty=False, stdin=True, sends=[b"\x01"], escape=EscapeProxy(b"\x01"),
                                  notice=b"bye\r\n"))
    assert got == mux("stdout", b"bye\r\n")


def test_session_client_eof_closes_stdin_and_waits_for_the_output() -> None:
    stream = FakeStream([("stdout", b"x")], hold_open=False)

    async def go() -> bytes:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        client_reader, client_writer = await asyncio.open_connection(sock=theirs)
        session = asyncio.ensure_future(pump_session(reader, writer, stream, False, True))  # type: ignore[arg-type]
        client_writer.write(b"input")
        client_writer.write_eof()
        got = await asyncio.wait_for(client_reader.read(), SESSION_TIMEOUT_S)
        await asyncio.wait_for(session, SESSION_TIMEOUT_S)
        client_writer.close()
        return got

    assert asyncio.run(go()) == mux("stdout", b"x")
    assert bytes(stream.stdin) == b"input" and stream.stdin_closed


def exec_request(body: dict) -> Request:
    return Request(method="POST", path="/", query={}, headers={}, body=json.dumps(body).encode(), api_version=None)


def test_exec_requests_carry_detach_keys_and_the_start_tty() -> None:
    assert requests.exec_create(exec_request({"Cmd": ["cat"], "DetachKeys": "ctrl-a,x"})).detach_keys == "ctrl-a,x"
    # docker-py sends the client config's key in lower camel case; Go's decoder matches any case.
    assert requests.exec_create(exec_request({"Cmd": ["cat"], "detachKeys": "ctrl-p"})).detach_keys == "ctrl-p"
    with pytest.raises(InvalidArgument, match=r"Invalid escape keys \(ctrl-\) provided"):
        requests.exec_create(exec_request({"Cmd": ["cat"], "DetachKeys": "ctrl-"}))
    assert requests.exec_start(exec_request({"Tty": True})) == (False, True)
    assert requests.exec_start(exec_request({"Detach": True})) == (True, False)


def test_hijacked_stream_starts_after_the_client_has_read_the_101(tmp_path) -> None:  # noqa: ANN001
    """A client that parses the head through a buffer and then takes the raw socket (docker-py) loses
    stream bytes that came in the same read: the server holds them until the head has been read."""

    async def greet(_: object, req: Request) -> Hijack:
        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"first bytes")  # at once, as a log replay
            await writer.drain()
            writer.close()

        return Hijack(session=session)

    def slow_client(path: str) -> tuple[bytes, bytes]:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(SESSION_TIMEOUT_S)
            client.connect(path)
            client.sendall(b"POST /attach HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
            time.sleep(0.3)  # busy elsewhere: everything the server sent by now is in the next read
            head = client.recv(8192)
            rest = b""
            while chunk := client.recv(8192):
                rest += chunk
            return head, rest

    async def main() -> tuple[bytes, bytes]:
        router = Router()
        router.add_all(None, [("POST", "/attach", greet)])
        server = Server(router, [])
        path = str(tmp_path / "api.sock")
        await server.start_unix(path)
        try:
            return await asyncio.wait_for(asyncio.to_thread(slow_client, path), SESSION_TIMEOUT_S)
        finally:
            await server.close()

    head, rest = asyncio.run(main())
    assert head.startswith(b"HTTP/1.1 101 ") and head.endswith(b"\r\n\r\n")
    assert rest == b"first bytes"
