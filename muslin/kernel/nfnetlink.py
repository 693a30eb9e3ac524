"""The little of netfilter netlink that muslin speaks by hand: the socket, and walking the messages of a
datagram. The message bodies themselves are pyroute2's (``nfhandles``) or not read at all (``nfwatch``)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NFPROTO_IPV4 = 2
NLMSG_ERROR = 2
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id


def open_socket() -> socket.socket:
    """A raw netfilter netlink socket in the calling thread's network namespace, bound."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence, body) of each netlink message in a datagram, the body after the header."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _, sequence, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size:
            return
        yield kind, sequence, data[offset + NLMSG_HEADER.size:offset + length]
        offset += (length + 3) & ~3
