"""Traffic checks between the rig's namespaces."""

from __future__ import annotations

import os
import socket
import threading

from muslin.kernel import netns


def tcp_roundtrip(client_ns: str, server_ns: str, server_ip: str, size: int = 1 << 20, timeout: float = 10) -> str:
    """Echo size bytes through a server in server_ns from a client in client_ns; returns the client address
    the server saw (the source after any NAT)."""
    with netns.entered(server_ns):
        server = socket.create_server((server_ip, 0))
    port = server.getsockname()[1]
    server.settimeout(timeout)

    seen: list[str] = []

    def echo() -> None:
        try:
            conn, peer = server.accept()
            seen.append(peer[0])
            with conn:
                conn.settimeout(timeout)
                while chunk := conn.recv(65536):
                    conn.sendall(chunk)
        except OSError:
            pass

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    payload = os.urandom(size)
    received = bytearray()
    try:
        with netns.entered(client_ns):
            client = socket.socket()
        with client:
            client.settimeout(timeout)
            client.connect((server_ip, port))
            sender = threading.Thread(target=lambda: (client.sendall(payload), client.shutdown(socket.SHUT_WR)),
                                      daemon=True)
            sender.start()
            while chunk := client.recv(65536):
                received += chunk
            sender.join(timeout)
    finally:
        server.close()
        t.join(timeout)
    assert bytes(received) == payload, f"TCP echo returned {len(received)} of {size} bytes"
    return seen[0]
