"""Permanent neighbours (ARP entries) and the forwarding database of vxlan devices.

Each also comes in bulk over an ``rtnl.RtnlSocket``: dumps read with struct and requests the caller
batches (``neighbour_request``, ``fdb_request``, ...).
"""

from __future__ import annotations

import errno
import struct
from ipaddress import IPv4Address

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from . import rtnl
from .netlink import NLM_F_CREATE, NLM_F_REPLACE, attribute

AF_INET = 2
AF_BRIDGE = 7
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
RTM_GETNEIGH = 30
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
NDA_DST = 1
NDA_LLADDR = 2
NDA_IFINDEX = 8
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


# ------------------------------------------------------------------------------------------- in bulk

def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def dump_permanent_neighbours(sock: rtnl.RtnlSocket, index: int) -> dict[IPv4Address, str]:
    """``permanent_neighbours`` in one dump read with struct."""
    found = {}
    request = NDMSG.pack(AF_INET, index, 0, 0, 0) + attribute(NDA_IFINDEX, struct.pack("=I", index))
    for _, body in sock.dump(RTM_GETNEIGH, request):
        family, ifindex, state, _, _ = NDMSG.unpack_from(body)
        if family != AF_INET or ifindex != index or not state & NUD_PERMANENT:
            continue
        fields = rtnl.attrs(body, NDMSG.size)
        dst, mac = fields.get(NDA_DST), fields.get(NDA_LLADDR)
        if dst and mac:
            found[IPv4Address(dst)] = _mac_text(mac)
    return found


def dump_fdb(sock: rtnl.RtnlSocket, index: int) -> set[tuple[str, IPv4Address]]:
    """``fdb_entries`` in one dump read with struct."""
    found = set()
    for _, body in sock.dump(RTM_GETNEIGH, NDMSG.pack(AF_BRIDGE, 0, 0, 0, 0)):
        family, ifindex, _, _, _ = NDMSG.unpack_from(body)
        if family != AF_BRIDGE or ifindex != index:
            continue
        fields = rtnl.attrs(body, NDMSG.size)
        dst, raw_mac = fields.get(NDA_DST), fields.get(NDA_LLADDR)
        if dst and len(dst) == 4 and raw_mac and (mac := _mac_text(raw_mac)) != ZERO_MAC:
            found.add((mac, IPv4Address(dst)))
    return found


def neighbour_request(index: int, ip: IPv4Address, mac: str) -> rtnl.Request:
    """``ensure_neighbour`` as one request of a batch."""
    body = (NDMSG.pack(AF_INET, index, NUD_PERMANENT, 0, 0) + attribute(NDA_DST, ip.packed)
            + attribute(NDA_LLADDR, _mac_bytes(mac)))
    return rtnl.Request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body, "neigh replace", ip)


def neighbour_delete_request(index: int, ip: IPv4Address) -> rtnl.Request:
    """``remove_neighbour`` as one request of a batch: one already gone is no error."""
    body = NDMSG.pack(AF_INET, index, 0, 0, 0) + attribute(NDA_DST, ip.packed)
    return rtnl.Request(RTM_DELNEIGH, 0, body, "neigh del", ip, rtnl.MISSING)


def fdb_request(index: int, mac: str, remote: IPv4Address) -> rtnl.Request:
    """``ensure_fdb`` as one request of a batch."""
    body = (NDMSG.pack(AF_BRIDGE, index, NUD_PERMANENT, NTF_SELF, 0) + attribute(NDA_LLADDR, _mac_bytes(mac))
            + attribute(NDA_DST, remote.packed))
    return rtnl.Request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body, f"fdb replace {mac} dst", remote)


def fdb_delete_request(index: int, mac: str, remote: IPv4Address) -> rtnl.Request:
    """``remove_fdb`` as one request of a batch: an entry already gone is no error."""
    body = (NDMSG.pack(AF_BRIDGE, index, 0, NTF_SELF, 0) + attribute(NDA_LLADDR, _mac_bytes(mac))
            + attribute(NDA_DST, remote.packed))
    return rtnl.Request(RTM_DELNEIGH, 0, body, f"fdb del {mac} dst", remote, rtnl.MISSING)
