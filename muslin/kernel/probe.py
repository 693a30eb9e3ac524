"""One real probe packet sent from inside a namespace: a TCP SYN, a UDP datagram or an ICMP echo, from
a source port (echo id) chosen so the tracer can tell it from every other packet."""

from __future__ import annotations

import errno
import os
import random
import select
import socket
import struct
import time
from dataclasses import dataclass

from . import netns

ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
PORT_RANGE = (33000, 60999)


@dataclass(frozen=True)
class Outcome:
    answered: bool  # the destination's stack answered (SYN-ACK, RST, echo reply, port unreachable, data)
    text: str  # what came back, in words


def pick_ident(avoid: int | None = None) -> int:
    while True:
        ident = random.randint(*PORT_RANGE)
        if ident != avoid:
            return ident


class Sender:
    """A socket opened inside the namespace; ``send`` fires the probe and waits (bounded) for an answer.
    The socket stays open until ``close`` (closing a TCP socket sends packets of its own)."""

    def __init__(self, ns: str, protocol: str, ident: int, source: str | None = None) -> None:
        self.protocol = protocol
        self.ident = ident
        kind = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM, "icmp": socket.SOCK_RAW}[protocol]
        with netns.entered(ns):
            self.sock = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP if protocol == "icmp" else 0)
        try:
            if protocol == "tcp":
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if protocol != "icmp":
                self.sock.bind((source or "", ident))
            elif source:
                self.sock.bind((source, 0))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def send(self, dst: str, port: int | None, timeout: float) -> Outcome:
        deadline = time.monotonic() + timeout
        try:
            if self.protocol == "tcp":
                return self._tcp(dst, port or 0, deadline)
            if self.protocol == "udp":
                return self._udp(dst, port or 0, deadline)
            return self._icmp(dst, deadline)
        except OSError as exc:
            return Outcome(False, f"the source's kernel refused to send: {os.strerror(exc.errno or 0)}")

    def _tcp(self, dst: str, port: int, deadline: float) -> Outcome:
        err = self.sock.connect_ex((dst, port))
        if err not in (0, errno.EINPROGRESS):
            return Outcome(False, f"connect: {os.strerror(err)}")
        _, writable, _ = select.select([], [self.sock], [], max(0.0, deadline - time.monotonic()))
        if not writable:
            return Outcome(False, "no answer to the SYN")
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:
            return Outcome(True, f"connected: {dst}:{port} answered the SYN with SYN-ACK")
        if err == errno.ECONNREFUSED:
            return Outcome(True, f"refused: {dst}:{port} answered the SYN with RST (nothing listens)")
        return Outcome(False, f"connect: {os.strerror(err)} (an ICMP error came back)")

    def _udp(self, dst: str, port: int, deadline: float) -> Outcome:
        self.sock.connect((dst, port))
        self.sock.send(b"muslin-trace")
        while True:
            readable, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                return Outcome(False, "no answer (UDP: nothing came back)")
            try:
                self.sock.recv(2048)
                return Outcome(True, f"{dst}:{port} answered")
            except ConnectionRefusedError:
                return Outcome(True, f"{dst} answered: port {port} unreachable (nothing listens)")
            except OSError as exc:
                return Outcome(False, f"ICMP error: {os.strerror(exc.errno or 0)}")

    def _icmp(self, dst: str, deadline: float) -> Outcome:
        payload = b"muslin-trace"
        header = struct.pack(">BBHHH", ICMP_ECHO_REQUEST, 0, 0, self.ident, 1)
        checksum = _checksum(header + payload)
        self.sock.sendto(struct.pack(">BBHHH", ICMP_ECHO_REQUEST, 0, checksum, self.ident, 1) + payload, (dst, 0))
        while True:
            readable, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                return Outcome(False, "no echo reply")
            data, (source, _) = self.sock.recvfrom(2048)
            offset = (data[0] & 0x0F) * 4
            kind, _, _, ident = struct.unpack_from(">BBHH", data, offset)
            if kind == ICMP_ECHO_REPLY and ident == self.ident and source == dst:
                return Outcome(True, f"echo reply from {dst}")

    def close(self) -> None:
        if self.protocol == "tcp":  # a reset, not a FIN handshake that would outlive us
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF
