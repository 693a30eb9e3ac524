"""TLS for the tcp listener, with half-close as Go's crypto/tls has it.

The docker CLI ends its side of a hijacked stream (``docker run`` without ``-i``, the end of piped
stdin) with CloseWrite, which over TLS is a close_notify alert, and then keeps reading the container's
output. asyncio's TLS transport takes close_notify as the end of the whole connection and drops what the
server writes afterwards. So each TLS connection is terminated here with an ``SSLObject`` over memory
buffers, and its plaintext is handed to the HTTP server through a socket pair: close_notify from the
client becomes a shutdown of the pair's write side (the server reads EOF and can still answer), and the
server's end of writing becomes our close_notify.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
CHUNK = 64 * 1024
HANDSHAKE_TIMEOUT = 10.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _TlsSession:
    def __init__(self, context: ssl.SSLContext, tcp_reader: asyncio.StreamReader,
                 tcp_writer: asyncio.StreamWriter) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.tcp_reader = tcp_reader
        self.tcp_writer = tcp_writer

    async def flush(self) -> None:
        if self.outgoing.pending:
            self.tcp_writer.write(self.outgoing.read())
            await self.tcp_writer.drain()

    async def receive(self) -> bool:
        """More ciphertext from the client into the TLS object; False at the end of the TCP stream."""
        data = await self.tcp_reader.read(CHUNK)
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                await self.flush()
                return
            except ssl.SSLWantReadError:
                await self.flush()
                if not await self.receive():
                    raise ConnectionResetError("the client left during the TLS handshake")

    async def client_to_server(self, plain: asyncio.StreamWriter) -> None:
        while True:
            try:
                data = self.tls.read(CHUNK)
            except ssl.SSLWantReadError:
                await self.flush()  # session tickets, key updates
                if not await self.receive():
                    break
                continue
            except ssl.SSLZeroReturnError:
                break
            if not data:  # close_notify (the client's CloseWrite): read() returns b"" from then on
                break
            plain.write(data)
            await plain.drain()
        with contextlib.suppress(OSError):
            plain.write_eof()

    async def server_to_client(self, plain: asyncio.StreamReader) -> None:
        while data := await plain.read(CHUNK):
            self.tls.write(data)
            await self.flush()
        with contextlib.suppress(ssl.SSLError):
            self.tls.unwrap()  # our close_notify
        with contextlib.suppress(OSError):
            await self.flush()


def tls_handler(context: ssl.SSLContext, serve: Handler) -> Handler:
    """A handler for a plain TCP server that speaks TLS with the client and plaintext HTTP to serve."""

    async def handle(tcp_reader: asyncio.StreamReader, tcp_writer: asyncio.StreamWriter) -> None:
        session = _TlsSession(context, tcp_reader, tcp_writer)
        ours, theirs = socket.socketpair()
        served: asyncio.Task | None = None
        try:
            await asyncio.wait_for(session.handshake(), HANDSHAKE_TIMEOUT)
            plain_reader, plain_writer = await asyncio.open_connection(sock=ours)
            server_reader, server_writer = await asyncio.open_connection(sock=theirs)
            served = asyncio.ensure_future(serve(server_reader, server_writer))
            upstream = asyncio.ensure_future(session.client_to_server(plain_writer))
            await session.server_to_client(plain_reader)
            upstream.cancel()
            await asyncio.gather(upstream, return_exceptions=True)
        except (ssl.SSLError, ConnectionError, asyncio.TimeoutError) as exc:
            log.info("tls connection from %s ended: %s", tcp_writer.get_extra_info("peername"), exc)
            with contextlib.suppress(Exception):
                await session.flush()  # the alert that tells the client why (an unknown certificate)
        finally:
            if served is not None and not served.done():
                served.cancel()
                await asyncio.gather(served, return_exceptions=True)
            ours.close()
            theirs.close()
            tcp_writer.close()

    return handle
