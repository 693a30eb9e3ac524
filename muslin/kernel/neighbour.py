"""Permanent neighbours (ARP entries) and the forwarding database of vxlan devices."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

AF_INET = 2
NTF_SELF = ndmsg.flags["self"]
NUD_PERMANENT = ndmsg.states["permanent"]
ZERO_MAC = "00:00:00:00:00:00"  # a vxlan device's default (flooding) entries


def ensure_neighbour(ipr: IPRoute, index: int, ip: IPv4Address, mac: str) -> None:
    ipr.neigh("replace", dst=str(ip), lladdr=mac, ifindex=index, state=NUD_PERMANENT)


def remove_neighbour(ipr: IPRoute, index: int, ip: IPv4Address) -> None:
    try:
        ipr.neigh("del", dst=str(ip), ifindex=index)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ESRCH):
            raise


def permanent_neighbours(ipr: IPRoute, index: int) -> dict[IPv4Address, str]:
    """IP → MAC of the link's permanent IPv4 neighbours."""
    return {IPv4Address(n.get_attr("NDA_DST")): n.get_attr("NDA_LLADDR")
            for n in ipr.get_neighbours(ifindex=index, family=AF_INET)
            if n["state"] & NUD_PERMANENT and n.get_attr("NDA_DST")}


def ensure_fdb(ipr: IPRoute, index: int, mac: str, remote: IPv4Address) -> None:
    """Frames for mac go to the VTEP at remote (``bridge fdb ... dst remote self permanent``)."""
    ipr.fdb("replace", ifindex=index, lladdr=mac, dst=str(remote), state=NUD_PERMANENT, flags=NTF_SELF)


def remove_fdb(ipr: IPRoute, index: int, mac: str, remote: IPv4Address) -> None:
    try:
        ipr.fdb("del", ifindex=index, lladdr=mac, dst=str(remote), flags=NTF_SELF)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ESRCH):
            raise


def fdb_entries(ipr: IPRoute, index: int) -> set[tuple[str, IPv4Address]]:
    """(mac, remote) of the unicast entries on a vxlan device."""
    found = set()
    for n in ipr.fdb("dump", ifindex=index):
        dst, mac = n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR")
        if dst and mac and mac != ZERO_MAC and n["ifindex"] == index:
            found.add((mac, IPv4Address(dst)))
    return found
