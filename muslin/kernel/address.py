"""IPv4 addresses on links: list them, ensure one is there, ensure it is the only one."""

from __future__ import annotations

import errno
import functools
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from pyroute2 import IPRoute

from . import rtnl
from .netlink import NLM_F_CREATE, NLM_F_EXCL, attribute

AF_INET = 2
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4


@dataclass(frozen=True, order=True)
class AddressInfo:
    index: int  # the link's
    address: IPv4Interface


def ipv4_addresses(ipr: IPRoute, index: int | None = None) -> list[AddressInfo]:
    """Every IPv4 address, of one link or of all: one dump (the kernel sends only IPv4 ones when asked
    for that family) read with struct, as ``link.all_links`` reads links. pyroute2 would decode every
    attribute of every address, and a namespace holding hundreds of networks has as many addresses."""
    found = []
    with rtnl.RtnlSocket.beside(ipr) as sock:
        for kind, body in sock.dump(RTM_GETADDR, IFADDRMSG.pack(AF_INET, 0, 0, 0, 0)):
            family, prefixlen, _, _, link_index = IFADDRMSG.unpack_from(body)
            if kind != RTM_NEWADDR or family != AF_INET or (index is not None and link_index != index):
                continue
            address = rtnl.attrs(body, IFADDRMSG.size).get(IFA_ADDRESS)
            if address is not None:
                found.append(AddressInfo(link_index, _interface(address, prefixlen)))
    return found


@functools.lru_cache(maxsize=4096)
def _interface(packed: bytes, prefixlen: int) -> IPv4Interface:
    """Made once per address seen: ipaddress builds an interface through its text form, ten times the
    cost of reading the dump."""
    return IPv4Interface((IPv4Address(packed), prefixlen))


def ensure_address(ipr: IPRoute, index: int, address: IPv4Interface) -> None:
    """This address on the link (besides any others), in one round trip: the kernel refuses the same
    address and prefix twice with EEXIST, which means it is there already."""
    with rtnl.RtnlSocket.beside(ipr) as sock:
        sock.execute([add_request(index, address)])


def add_request(index: int, address: IPv4Interface) -> rtnl.Request:
    """``ensure_address`` as one request of a batch: already there (EEXIST) is no failure."""
    body = _body(index, address)
    if address.network.prefixlen <= 30:  # as ensure_address: no broadcast address on a /31 or /32
        body += attribute(IFA_BROADCAST, address.network.broadcast_address.packed)
    return rtnl.Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, "address add", address, frozenset({errno.EEXIST}))


def delete_request(index: int, address: IPv4Interface) -> rtnl.Request:
    """This address off the link, as one request of a batch: not there (any more) is no failure."""
    return rtnl.Request(RTM_DELADDR, 0, _body(index, address), "address delete", address,
                        frozenset({errno.EADDRNOTAVAIL}))


def _body(index: int, address: IPv4Interface) -> bytes:
    packed = address.ip.packed
    return (IFADDRMSG.pack(AF_INET, address.network.prefixlen, 0, 0, index)
            + attribute(IFA_LOCAL, packed) + attribute(IFA_ADDRESS, packed))


def ensure_only_address(ipr: IPRoute, index: int, address: IPv4Interface) -> None:
    """This IPv4 address on the link and no other (a lease that changed leaves no stale one)."""
    stale = [a.address for a in ipv4_addresses(ipr, index) if a.address != address]
    with rtnl.RtnlSocket.beside(ipr) as sock:
        sock.execute([*(delete_request(index, old) for old in stale), add_request(index, address)])
