"""The little of netfilter netlink that muslin speaks by hand: the socket, requests, and walking the
messages of a datagram and the attributes of a message.

By hand because a dump of a chain of a thousand rules is decoded in milliseconds when only the few
attributes wanted are read, where decoding every expression (pyroute2) takes a good part of a second."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NFPROTO_IPV4 = 2
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLA_TYPE_MASK = 0x3FFF  # without the nested and byte-order flags
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
NLA_HEADER = struct.Struct("=HH")  # length, type
NFGENMSG = struct.Struct("=BBH")  # family, version, resource id (big-endian)
NFNL_SUBSYS_NFTABLES = 10
RECEIVE_BYTES = 1 << 20


class NetlinkError(OSError):
    """The kernel answered a request with an error (``errno`` says which)."""


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
    for kind, _, sequence, body in _messages(data):
        yield kind, sequence, body


def _messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, flags, sequence, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size:
            return
        yield kind, flags, sequence, data[offset + NLMSG_HEADER.size:offset + length]
        offset += (length + 3) & ~3


def attributes(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute from ``offset`` on (nested ones are a payload to walk again)."""
    while offset + NLA_HEADER.size <= len(data):
        length, kind = NLA_HEADER.unpack_from(data, offset)
        if length < NLA_HEADER.size:
            return
        yield kind & NLA_TYPE_MASK, data[offset + NLA_HEADER.size:offset + length]
        offset += (length + 3) & ~3


def attribute(kind: int, payload: bytes) -> bytes:
    data = NLA_HEADER.pack(NLA_HEADER.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def string_attribute(kind: int, text: str) -> bytes:
    return attribute(kind, text.encode() + b"\0")


def nftables_message(command: int, flags: int, sequence: int, attrs: bytes = b"",
                     family: int = NFPROTO_IPV4) -> bytes:
    """One nf_tables message: header, nfgenmsg, attributes."""
    body = NFGENMSG.pack(family, 0, 0) + attrs
    kind = (NFNL_SUBSYS_NFTABLES << 8) | command
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), kind, flags, sequence, 0) + body


def request(sock: socket.socket, message: bytes, sequence: int) -> Iterator[bytes]:
    """Send a request and yield the body (after the nfgenmsg) of each message answering it, up to the
    end of a dump or the single reply; an error reply raises NetlinkError."""
    sock.send(message)
    while True:
        data = sock.recv(RECEIVE_BYTES)
        for kind, flags, seq, body in _messages(data):
            if seq != sequence:
                continue  # a late answer to an earlier request that timed out
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", body)[0]
                if code:
                    raise NetlinkError(code, errno.errorcode.get(code, str(code)))
                return  # an ack
            yield body[NFGENMSG.size:]
            if not flags & NLM_F_MULTI:  # the single reply of a request that is not a dump
                return
