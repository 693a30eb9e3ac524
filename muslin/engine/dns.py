"""The embedded DNS server of user-defined networks: container names and aliases, as Docker's 127.0.0.11.

Each container on a user-defined network gets ``nameserver 127.0.0.11`` and a UDP and a TCP socket the
daemon holds inside the container's namespace on 127.0.0.11, on ports of their own: port 53 stays free
for the container's own DNS server (a wildcard bind of :53 would collide with ours), and a DNAT rule in
the container's namespace sends 127.0.0.11:53 to them, as dockerd does (``dns_service`` binds them and
programs that redirect).
A query for a container name, alias or short id on one of the asker's networks is answered from the
store; any other name goes to the upstream resolvers (``--dns``, else the daemon's), over the
transport it came in on, from the container's own namespace as dockerd sends it, so a resolver only the
container can reach (one on its macvlan LAN, say) works; only resolvers on the daemon's loopback are
asked from the daemon's namespace. A UDP answer that does not fit 512 bytes comes back truncated (TC), and the
client asks again over TCP.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address

from muslin.kernel import netns

log = logging.getLogger(__name__)

EMBEDDED_ADDRESS = "127.0.0.11"
HEADER = struct.Struct(">HHHHHH")
TYPE_A, CLASS_IN = 1, 1
RCODE_NXDOMAIN, RCODE_SERVFAIL, RCODE_FORMERR = 3, 2, 1
TTL = 600
FORWARD_TIMEOUT = 2.0
UDP_LIMIT = 512  # RFC 1035: a UDP answer larger than this is truncated; the client retries over TCP
TCP_IDLE_SECONDS = 10.0
FLAG_TC = 0x0200
LENGTH = struct.Struct(">H")


@dataclass(frozen=True)
class Question:
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    raw: bytes  # the question section as sent, echoed back in the answer


def parse_query(packet: bytes) -> tuple[int, int, Question]:
    """(id, flags, first question) of a query; ValueError when it is not one we can read."""
    if len(packet) < HEADER.size:
        raise ValueError("short packet")
    ident, flags, qdcount, _, _, _ = HEADER.unpack_from(packet)
    if flags & 0x8000 or qdcount < 1:
        raise ValueError("not a query")
    labels, pos = [], HEADER.size
    while True:
        if pos >= len(packet):
            raise ValueError("truncated name")
        length = packet[pos]
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        pos += 1
        if length == 0:
            break
        labels.append(packet[pos:pos + length].decode("ascii", "replace"))
        pos += length
    if pos + 4 > len(packet):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack_from(">HH", packet, pos)
    raw = packet[HEADER.size:pos + 4]
    return ident, flags, Question(".".join(labels).lower(), qtype, qclass, raw)


def build_response(ident: int, query_flags: int, question: Question, addresses: list[IPv4Address],
                   rcode: int = 0, limit: int | None = None) -> bytes:
    """An authoritative answer with A records (none for NXDOMAIN, or for an AAAA we cannot give).
    Over ``limit`` bytes: no records and the TC flag, which sends the client to TCP."""
    flags = 0x8000 | 0x0400 | (query_flags & 0x0100) | 0x0080 | rcode  # QR, AA, RD copied, RA
    answers = b"".join(
        struct.pack(">HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + addr.packed for addr in addresses
    )
    packet = HEADER.pack(ident, flags, 1, len(addresses), 0, 0) + question.raw + answers
    if limit is not None and len(packet) > limit:
        return HEADER.pack(ident, flags | FLAG_TC, 1, 0, 0, 0) + question.raw
    return packet


def error_response(packet: bytes, rcode: int) -> bytes:
    ident, flags = struct.unpack_from(">HH", packet) if len(packet) >= 4 else (0, 0)
    return HEADER.pack(ident, 0x8000 | (flags & 0x0100) | 0x0080 | rcode, 0, 0, 0, 0)


Lookup = Callable[[str], list[IPv4Address] | None]  # None: not ours, ask upstream


class EmbeddedDNS(asyncio.DatagramProtocol):
    """Serves one container's queries on sockets inside its namespace: UDP as the datagram protocol,
    TCP through ``serve_tcp``."""

    def __init__(self, lookup: Lookup, upstreams: list[str], netns_path: str | None = None) -> None:
        self.lookup = lookup
        self.upstreams = upstreams
        self.netns_path = netns_path  # the container's namespace, where queries to upstreams leave from
        self.transport: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_clients: set[asyncio.StreamWriter] = set()
        self._pending: set[asyncio.Task] = set()

    def local_answer(self, data: bytes, limit: int | None = None) -> bytes | None:
        """The answer for a name of ours (or FORMERR for what is no query); None: upstream answers."""
        try:
            ident, flags, question = parse_query(data)
        except ValueError:
            return error_response(data, RCODE_FORMERR)
        found = self.lookup(question.name) if question.qclass == CLASS_IN else None
        if found is None:
            return None
        return build_response(ident, flags, question, found if question.qtype == TYPE_A else [], limit=limit)

    # -- UDP -----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        answer = self.local_answer(data, limit=UDP_LIMIT)
        if answer is not None:
            self._send(answer, addr)
            return
        task = asyncio.ensure_future(self._forward_udp(data, addr))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _forward_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        for server in self.upstreams:
            try:
                transport, proto = await loop.create_datagram_endpoint(_OneAnswer, sock=self._upstream_socket(
                    server, socket.SOCK_DGRAM))
            except OSError:
                continue
            try:
                transport.sendto(data)
                answer = await asyncio.wait_for(proto.answer, FORWARD_TIMEOUT)
                self._send(answer, addr)
                return
            except (OSError, asyncio.TimeoutError):
                continue
            finally:
                transport.close()
        self._send(error_response(data, RCODE_SERVFAIL), addr)  # nobody could say whether the name exists

    def _upstream_socket(self, server: str, kind: int) -> socket.socket:
        """A socket toward an upstream resolver, in the container's namespace unless the resolver is on
        the daemon's loopback (or IPv6). UDP ones are connected, so only that resolver's answers come in."""
        try:
            address = ip_address(server)
        except ValueError:
            raise OSError(f"upstream resolver {server!r} is not an address") from None
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        # Containers have no IPv6 yet: an IPv6 resolver is asked from the daemon's namespace.
        inside = self.netns_path is not None and not address.is_loopback and address.version == 4
        if inside:
            with netns.entered(self.netns_path):  # type: ignore[arg-type]
                sock = socket.socket(family, kind)
        else:
            sock = socket.socket(family, kind)
        try:
            sock.setblocking(False)
            if kind == socket.SOCK_DGRAM:
                sock.connect((server, 53))
        except OSError:
            sock.close()
            raise
        return sock

    def _send(self, packet: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(packet, addr)

    # -- TCP: each message after its two-byte length (RFC 1035 4.2.2) ---------------------------------
    async def serve_tcp(self, listener: socket.socket) -> None:
        self._tcp = await asyncio.start_server(self._tcp_client, sock=listener)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_clients.add(writer)
        try:
            while True:
                (size,) = LENGTH.unpack(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS))
                query = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_SECONDS)
                answer = self.local_answer(query)
                if answer is None:
                    answer = await self._forward_tcp(query)
                writer.write(LENGTH.pack(len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, OSError):
            pass  # the client is done, went quiet or went away
        finally:
            self._tcp_clients.discard(writer)
            writer.close()

    async def _forward_tcp(self, query: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        for server in self.upstreams:
            writer = None
            try:
                sock = self._upstream_socket(server, socket.SOCK_STREAM)
                try:
                    await asyncio.wait_for(loop.sock_connect(sock, (server, 53)), FORWARD_TIMEOUT)
                except BaseException:
                    sock.close()
                    raise
                reader, writer = await asyncio.open_connection(sock=sock)
                writer.write(LENGTH.pack(len(query)) + query)
                (size,) = LENGTH.unpack(await asyncio.wait_for(reader.readexactly(2), FORWARD_TIMEOUT))
                return await asyncio.wait_for(reader.readexactly(size), FORWARD_TIMEOUT)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                continue
            finally:
                if writer is not None:
                    writer.close()
        return error_response(query, RCODE_SERVFAIL)

    def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self.transport is not None:
            self.transport.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._tcp_clients):
            writer.close()


class _OneAnswer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)
