"""Netlink's wire format, for the readers muslin writes by hand (``rtnl`` for routes, neighbours and
links; ``nfnetlink`` for nf_tables): message and attribute headers, flags, and walking a datagram.

By hand where pyroute2 would decode every attribute of thousands of messages that the caller reads a
few fields of; the layouts are the kernel's ``netlink.h``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
NLA_HEADER = struct.Struct("=HH")  # length, type
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_ECHO = 0x8
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_DUMP = 0x300
NLM_F_CREATE = 0x400
NLA_TYPE_MASK = 0x3FFF  # without the nested and byte-order flags
U32 = struct.Struct("=I")  # a u32 attribute's payload, in host order


def header(length: int, kind: int, flags: int, sequence: int) -> bytes:
    """The header of a message whose body is ``length`` bytes."""
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + length, kind, flags, sequence, 0)


def messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, sequence, body) of each message in a datagram, the body after the header."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, flags, sequence, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size:
            return
        yield kind, flags, sequence, data[offset + NLMSG_HEADER.size:offset + length]
        offset += (length + 3) & ~3


def error_code(body: bytes) -> int:
    """The errno of an NLMSG_ERROR message's body (0: an acknowledgement)."""
    return -struct.unpack_from("=i", body)[0]


def attributes(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute from ``offset`` on (nested ones are a payload to walk again)."""
    while offset + NLA_HEADER.size <= len(data):
        length, kind = NLA_HEADER.unpack_from(data, offset)
        if length < NLA_HEADER.size:
            return
        yield kind & NLA_TYPE_MASK, data[offset + NLA_HEADER.size:offset + length]
        offset += (length + 3) & ~3


def attribute(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    length = NLA_HEADER.size + len(payload)
    return NLA_HEADER.pack(length, kind) + payload + b"\0" * (-length & 3)
