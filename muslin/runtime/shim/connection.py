"""One client connection of the shim: its request and stdin bytes in, frames out, never blocking."""

from __future__ import annotations

import socket
from collections.abc import Callable

from .protocol import RequestReader
from .reactor import READ, WRITE, Reactor, Source

CLIENT_BUFFER_MAX = 64 * 1024 * 1024  # a client that stops reading is dropped past this


class Client(Source):
    """A request line in, frames out, stdin bytes in after the request.

    ``on_input(client, data)`` gets what the client sends (b"" at its EOF); ``on_close(client)`` runs once.
    """

    def __init__(self, reactor: Reactor, sock: socket.socket, on_input: Callable[["Client", bytes], None],
                 on_close: Callable[["Client"], None]) -> None:
        self.reactor = reactor
        self.sock = sock
        self.on_input = on_input
        self.on_close = on_close
        self.requests = RequestReader()
        self.outbuf = bytearray()
        self.request: dict | None = None
        self.reading = True  # until the client's EOF
        self.paused = False  # while the stdin it feeds is full
        self.closing = False
        self.closed = False
        self.events = READ
        reactor.register(sock, self.events, self)

    def ready(self, events: int) -> None:
        if events & WRITE:
            self.flush()
        if events & READ and not self.closed:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            self.on_input(self, data)

    def failed(self) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        self.outbuf += data
        if len(self.outbuf) > CLIENT_BUFFER_MAX:
            self.close()
            return
        self.flush()

    def flush(self) -> None:
        while self.outbuf and not self.closed:
            try:
                sent = self.sock.send(self.outbuf)
            except BlockingIOError:
                break
            except OSError:
                self.close()
                return
            del self.outbuf[:sent]
        if self.closed:
            return
        if self.closing and not self.outbuf:
            self.close()
            return
        self.watch()

    def watch(self) -> None:
        """Poll for what this client still needs: its input while it sends, writability while queued."""
        reading = self.reading and not self.paused
        events = (READ if reading else 0) | (WRITE if self.outbuf else 0)
        if events == self.events:
            return
        if not events:
            self.reactor.unregister(self.sock)
        elif not self.events:
            self.reactor.register(self.sock, events, self)
        else:
            self.reactor.modify(self.sock, events, self)
        self.events = events

    def stop_reading(self) -> None:
        self.reading = False
        self.watch()

    def pause(self, paused: bool) -> None:
        if not self.closed:
            self.paused = paused
            self.watch()

    def finish(self) -> None:
        """Close once everything queued has been sent."""
        self.closing = True
        self.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.events:
            self.reactor.unregister(self.sock)
        self.sock.close()
        self.on_close(self)
