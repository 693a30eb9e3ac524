"""Adding and deleting nf_tables set elements over netlink, in one transaction, without reading anything.

Why not libnftables for these: before it sends an element, nft fills a cache of the table, its sets and
their elements, so each change costs as much as the table holds (5,000 published ports: 20-60 ms for
one element, against 0.1 ms on an empty table). The kernel needs none of that: a NEWSETELEM names the
table and set and carries the element's bytes. The caller encodes the bytes (``field``); everything
else (tables, sets, chains, rules, and every read) stays with libnftables.

A batch is applied whole or not at all; an element that is already there with the same value is
accepted again (no NLM_F_EXCL), a missing one to delete or one present with another value refuses
the whole batch, and the caller falls back to reading the table. The socket belongs to the network
namespace of the thread that first uses it: one caller at a time.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from .netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NLMSG_ERROR, attribute, error_code, header, messages
from .nfnetlink import NFGENMSG, NFNL_SUBSYS_NFTABLES, NFPROTO_IPV4, nftables_message, open_socket, string_attribute

NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_USERDATA = 1, 2, 3, 6
NFTNL_UDATA_SET_ELEM_COMMENT = 0  # libnftnl's user data: (type, length, value) records
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
NFT_SET_ELEM_INTERVAL_END = 1
NLA_F_NESTED = 0x8000
VERDICTS = {"accept": 1, "drop": 0, "jump": -3, "goto": -4}  # NF_ACCEPT, NF_DROP, NFT_JUMP, NFT_GOTO
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132}
IFNAMSIZ = 16
REPLY_SECONDS = 5.0


class Refused(OSError):
    """The kernel refused the batch (``errno``: ENOENT, EEXIST, ...); nothing of it was applied."""


@dataclass(frozen=True)
class Element:
    """One element as the kernel holds it: ``key``, a map's ``data`` bytes or ``verdict``,
    ``interval_end`` for the closing element of a range, and the comment nft shows with it."""

    key: bytes
    data: bytes | None = None
    verdict: str | None = None  # "accept", "drop", "jump CHAIN"
    interval_end: bool = False
    comment: str | None = None


@dataclass(frozen=True)
class Change:
    set: str
    add: bool  # False: delete
    element: Element


def field(kind: str, value: str) -> bytes:
    """One field of a key or value in a set's byte layout: each field takes a multiple of 4 bytes, as
    nf_tables registers do."""
    if kind == "ifname":
        raw = value.encode()
        if len(raw) >= IFNAMSIZ:
            raise ValueError(f"interface name {value!r} is too long")
        return raw.ljust(IFNAMSIZ, b"\0")
    if kind == "ipv4_addr":
        return IPv4Address(value).packed
    if kind == "inet_proto":
        if value not in PROTOCOLS:
            raise ValueError(f"unknown protocol {value!r}")
        return struct.pack("B3x", PROTOCOLS[value])
    if kind == "inet_service":
        return struct.pack(">H2x", int(value))
    raise ValueError(f"no byte layout for nft type {kind}")


def _value(payload: bytes) -> bytes:
    return attribute(NFTA_DATA_VALUE, payload)


def _nested(kind: int, payload: bytes) -> bytes:
    return attribute(kind | NLA_F_NESTED, payload)


def _element(e: Element) -> bytes:
    attrs = _nested(NFTA_SET_ELEM_KEY, _value(e.key))
    if e.data is not None:
        attrs += _nested(NFTA_SET_ELEM_DATA, _value(e.data))
    if e.verdict is not None:
        verb, _, chain = e.verdict.partition(" ")
        verdict = attribute(NFTA_VERDICT_CODE, struct.pack(">i", VERDICTS[verb]))
        if chain:
            verdict += string_attribute(NFTA_VERDICT_CHAIN, chain)
        attrs += _nested(NFTA_SET_ELEM_DATA, _nested(NFTA_DATA_VERDICT, verdict))
    if e.interval_end:
        attrs += attribute(NFTA_SET_ELEM_FLAGS, struct.pack(">I", NFT_SET_ELEM_INTERVAL_END))
    if e.comment:
        text = e.comment.encode() + b"\0"
        if len(text) > 255:
            raise ValueError(f"comment {e.comment!r} is too long")
        attrs += attribute(NFTA_SET_ELEM_USERDATA, struct.pack("BB", NFTNL_UDATA_SET_ELEM_COMMENT, len(text)) + text)
    return _nested(NFTA_LIST_ELEM, attrs)


def _marker(kind: int, sequence: int) -> bytes:
    body = NFGENMSG.pack(0, 0, socket.htons(NFNL_SUBSYS_NFTABLES))
    return header(len(body), kind, NLM_F_REQUEST, sequence) + body


class ElementWriter:
    """Applies element changes of one table in one nf_tables transaction."""

    def __init__(self, table: str, family: int = NFPROTO_IPV4) -> None:
        self._table, self._family = table, family
        self._socket: socket.socket | None = None
        self._sequence = 0

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def apply(self, changes: list[Change]) -> None:
        """Raises Refused (nothing applied) or OSError (no answer: the socket is renewed next time)."""
        if not changes:
            return
        begin = self._next()
        parts = [_marker(NFNL_MSG_BATCH_BEGIN, begin)]
        waiting: set[int] = set()
        # One message per run of changes to the same set in the same direction, in the given order.
        run: list[Change] = []
        for change in [*changes, None]:
            if run and (change is None or (change.set, change.add) != (run[0].set, run[0].add)):
                sequence = self._next()
                first = run[0]
                command, flags = ((NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK) if first.add
                                  else (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK))
                attrs = (string_attribute(NFTA_SET_ELEM_LIST_TABLE, self._table)
                         + string_attribute(NFTA_SET_ELEM_LIST_SET, first.set)
                         + _nested(NFTA_SET_ELEM_LIST_ELEMENTS, b"".join(_element(c.element) for c in run)))
                parts.append(nftables_message(command, flags, sequence, attrs, family=self._family))
                waiting.add(sequence)
                run = []
            if change is not None:
                run.append(change)
        parts.append(_marker(NFNL_MSG_BATCH_END, self._next()))
        sock = self._open()
        try:
            sock.send(b"".join(parts))
            refusal = 0
            # The kernel acknowledges every message that asked for it, also when it aborts the batch.
            while waiting:
                for kind, _, sequence, body in messages(sock.recv(65536)):
                    if kind != NLMSG_ERROR:
                        continue
                    if sequence == begin and error_code(body):  # the batch as a whole: nothing else comes
                        waiting.clear()
                    waiting.discard(sequence)
                    refusal = refusal or error_code(body)
        except OSError:
            self.close()
            raise
        if refusal:
            raise Refused(refusal, errno.errorcode.get(refusal, str(refusal)))

    def _open(self) -> socket.socket:
        if self._socket is None:
            self._socket = open_socket()
            self._socket.settimeout(REPLY_SECONDS)
        return self._socket

    def _next(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence
