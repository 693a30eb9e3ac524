"""muslind's -H and -G values, parsed as dockerd parses them."""

from __future__ import annotations

import pytest

from muslin.listeners import ListenError, TcpListener, UnixListener, check_tcp, parse_host, socket_gid


@pytest.mark.parametrize("text, listener", [
    ("unix:///run/m.sock", UnixListener("/run/m.sock")),
    ("/tmp/x.sock", UnixListener("/tmp/x.sock")),
    ("unix://", UnixListener("/run/muslin.sock")),
    ("tcp://127.0.0.1:2376", TcpListener("127.0.0.1", 2376)),
    ("tcp://0.0.0.0", TcpListener("0.0.0.0", 2376)),
    ("tcp://:2377", TcpListener("", 2377)),
    ("tcp://[::1]:2376", TcpListener("::1", 2376)),
])
def test_hosts(text: str, listener) -> None:
    assert parse_host(text) == listener


@pytest.mark.parametrize("text, message", [
    ("http://x", "unsupported -H"), ("tcp://host.example:2376", "expected tcp://ADDRESS:PORT"),
    ("tcp://1.2.3.4:0", "out of range"), ("tcp://1.2.3.4:x", "expected tcp://"),
])
def test_bad_hosts(text: str, message: str) -> None:
    with pytest.raises(ListenError, match=message):
        parse_host(text)


def test_tcp_needs_client_verification() -> None:
    check_tcp([UnixListener("/x"), TcpListener("", 2376)], tlsverify=True)
    check_tcp([UnixListener("/x")], tlsverify=False)
    with pytest.raises(ListenError, match="refusing to serve tcp://0.0.0.0:2376"):
        check_tcp([TcpListener("", 2376)], tlsverify=False)


def test_group_by_name_or_number() -> None:
    assert socket_gid("0") == 0 and socket_gid("root") == 0
    with pytest.raises(ListenError, match="no such group"):
        socket_gid("no-such-group-here")
