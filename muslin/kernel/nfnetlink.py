"""The little of netfilter netlink that muslin speaks by hand: the socket, nf_tables messages and
requests (the wire format itself is ``netlink``'s).

By hand because a dump of a chain of a thousand rules is decoded in milliseconds when only the few
attributes wanted are read, where decoding every expression (pyroute2) takes a good part of a second."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator

from .netlink import NLM_F_MULTI, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, attribute, error_code, header, messages

NETLINK_NETFILTER = 12
NFPROTO_INET, NFPROTO_IPV4 = 1, 2
FAMILIES = {"inet": NFPROTO_INET, "ip": NFPROTO_IPV4}  # nft's names
NFT_MSG_GETTABLE = 1
NFTA_TABLE_NAME = 1
REPLY_SECONDS = 5.0
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


def string_attribute(kind: int, text: str) -> bytes:
    return attribute(kind, text.encode() + b"\0")


def nftables_message(command: int, flags: int, sequence: int, attrs: bytes = b"",
                     family: int = NFPROTO_IPV4) -> bytes:
    """One nf_tables message: header, nfgenmsg, attributes."""
    body = NFGENMSG.pack(family, 0, 0) + attrs
    kind = (NFNL_SUBSYS_NFTABLES << 8) | command
    return header(len(body), kind, flags, sequence) + body


def table_exists(family: str, name: str) -> bool:
    """Whether nf_tables holds this table (``family`` as nft names it) in the calling thread's namespace:
    one small request, where listing the tables through libnftables first reads the whole ruleset (a
    large part of a second with the rules of a thousand containers)."""
    message = nftables_message(NFT_MSG_GETTABLE, NLM_F_REQUEST, 1, string_attribute(NFTA_TABLE_NAME, name),
                               family=FAMILIES[family])
    sock = open_socket()
    try:
        sock.settimeout(REPLY_SECONDS)
        return any(True for _ in request(sock, message, 1))
    except NetlinkError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    finally:
        sock.close()


def request(sock: socket.socket, message: bytes, sequence: int) -> Iterator[bytes]:
    """Send a request and yield the body (after the nfgenmsg) of each message answering it, up to the
    end of a dump or the single reply; an error reply raises NetlinkError."""
    sock.send(message)
    while True:
        data = sock.recv(RECEIVE_BYTES)
        for kind, flags, seq, body in messages(data):
            if seq != sequence:
                continue  # a late answer to an earlier request that timed out
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = error_code(body)
                if code:
                    raise NetlinkError(code, errno.errorcode.get(code, str(code)))
                return  # an ack
            yield body[NFGENMSG.size:]
            if not flags & NLM_F_MULTI:  # the single reply of a request that is not a dump
                return
