"""Route netlink in bulk: one raw socket kept open, dumps read with struct, requests pipelined.

pyroute2 pays a round trip and a full message decode per call, which is fine for one object and slow for
thousands (an overlay agent with 2,000 peers programs 6,000 routes, neighbours and fdb entries). Here a
batch of requests goes to the kernel in a few datagrams, each carrying many messages that the kernel
handles one after the other, and the acknowledgements are matched back by sequence number; a dump is
parsed only as far as the caller needs. The message layouts are the kernel's (``rtnetlink.h``,
``neighbour.h``, ``if_link.h``, ``if_addr.h``); ``route``, ``neighbour``, ``link`` and ``address`` build
their requests and read their dumps with these.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Self

from . import netns
from .netlink import (NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, attributes, error_code,
                      header, messages)

SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # error acks without a copy of the request
SO_RCVBUFFORCE = 33
SIOCGSKNS = 0x894C  # a socket's network namespace, as a new fd
RECEIVE_BUFFER = 4 << 20
READ_SIZE = 1 << 18
# Messages per datagram: the kernel queues one ack per message before we read any, so a bounded batch
# keeps the acks well inside the receive buffer whatever the size of the whole request list.
MESSAGES_PER_SEND = 256
REPLY_TIMEOUT = 5.0


def namespace_of(handle: object) -> int:
    """A new fd of the network namespace a socket (an IPRoute: anything with fileno()) lives in, which
    need not be the calling thread's; the caller closes it."""
    return fcntl.ioctl(handle.fileno(), SIOCGSKNS)  # type: ignore[attr-defined]


class RtnlError(OSError):
    """The kernel refused a request of a batch (errno and what it was)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One netlink message to send: its type, flags (NLM_F_REQUEST and NLM_F_ACK are added) and body."""

    kind: int
    flags: int
    body: bytes
    what: str  # for errors, with subject: "route replace" 10.5.74.0/24 (formatted only when one is raised)
    subject: object
    tolerated: frozenset[int] = frozenset()  # errnos that are no failure (ESRCH for removing what is gone)


def attrs(body: bytes, offset: int) -> dict[int, bytes]:
    """The attributes of a message body from offset on, by type (nested ones left as bytes)."""
    return dict(attributes(body, offset))


class RtnlSocket:
    """A NETLINK_ROUTE socket in one namespace (the calling thread's, or ``namespace``), kept open; another
    netlink family's by ``protocol`` (``xfrm`` speaks NETLINK_XFRM through it)."""

    def __init__(self, namespace: str | None = None, protocol: int = netns.NETLINK_ROUTE) -> None:
        self.sock = netns.socket_in(namespace, protocol) if namespace else socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        try:
            if not namespace:
                self.sock.bind((0, 0))
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            except PermissionError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self.sock.settimeout(REPLY_TIMEOUT)
        except BaseException:
            self.sock.close()
            raise
        self._sequence = 0

    @classmethod
    def beside(cls, handle: object) -> RtnlSocket:
        """A socket in the namespace of another netlink socket (an IPRoute, say: anything with fileno())."""
        namespace = namespace_of(handle)
        try:
            return cls(f"/proc/self/fd/{namespace}")
        finally:
            os.close(namespace)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_sequence(self) -> int:
        self._sequence = (self._sequence + 1) & 0x7FFFFFFF or 1
        return self._sequence

    def _messages(self) -> Iterator[tuple[int, int, bytes]]:
        """(type, sequence, body) of each message of the next datagram."""
        for kind, _, sequence, body in messages(self.sock.recv(READ_SIZE)):
            yield kind, sequence, body

    def dump(self, kind: int, body: bytes) -> Iterator[tuple[int, bytes]]:
        """(type, body) of every message a dump request answers with, read to its end."""
        sequence = self._next_sequence()
        self.sock.send(header(len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, sequence) + body)
        while True:
            for reply, seq, payload in self._messages():
                if seq != sequence:
                    continue  # a late answer to an earlier request that gave up
                if reply == NLMSG_DONE:
                    return
                if reply == NLMSG_ERROR:
                    code = error_code(payload)
                    if code:
                        raise RtnlError(code, f"dump of message type {kind}: {os.strerror(code)}")
                    return
                yield reply, payload

    def execute(self, requests: Sequence[Request]) -> list[tuple[int, int, bytes]]:
        """Send every request, acknowledged; returns the replies that are not acks (answers to RTM_GET*
        requests) as (index of the request, type, body), in order. A refusal the request tolerates is no
        error; the first other one is raised as RtnlError once the whole batch was handled (the others ran)."""
        replies: list[tuple[int, int, bytes]] = []
        failure: RtnlError | None = None
        for start in range(0, len(requests), MESSAGES_PER_SEND):
            chunk = requests[start:start + MESSAGES_PER_SEND]
            waiting: dict[int, tuple[int, Request]] = {}
            frames = []
            for index, request in enumerate(chunk, start):
                sequence = self._next_sequence()
                waiting[sequence] = (index, request)
                frames.append(header(len(request.body), request.kind, request.flags | NLM_F_REQUEST | NLM_F_ACK,
                                     sequence))
                frames.append(request.body)
            self.sock.send(b"".join(frames))
            while waiting:
                for reply, sequence, payload in self._messages():
                    if sequence not in waiting:
                        continue
                    index, request = waiting[sequence]
                    if reply != NLMSG_ERROR:
                        replies.append((index, reply, payload))
                        continue
                    del waiting[sequence]
                    code = error_code(payload)
                    if code and code not in request.tolerated and failure is None:
                        failure = RtnlError(code, f"{request.what} {request.subject}: {os.strerror(code)}")
        if failure is not None:
            raise failure
        return replies


MISSING = frozenset({errno.ENOENT, errno.ESRCH})  # what removing an object that is not there answers
