"""Kernel state of an overlay: vxlan and TUN devices, routes, neighbours and fdb entries.

Every function ensures a state rather than performing a step: calling it again changes nothing, so the
agent's first setup and its periodic reconcile are the same code. All act through the IPRoute handle
given (and so in that handle's network namespace); the TUN device, which must be opened, is created in
the namespace of the calling thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

RTNH_F_ONLINK = 4
NTF_SELF = ndmsg.flags["self"]
NUD_PERMANENT = ndmsg.states["permanent"]
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


class OverlayError(RuntimeError):
    pass


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    mtu: int
    mac: str
    kind: str | None


@dataclass(frozen=True)
class RouteEntry:
    dst: IPv4Network
    gateway: IPv4Address | None
    oif: int


def _link_info(msg) -> LinkInfo:
    info = msg.get_attr("IFLA_LINKINFO")
    return LinkInfo(msg["index"], msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_MTU"),
                    msg.get_attr("IFLA_ADDRESS"), info.get_attr("IFLA_INFO_KIND") if info else None)


def find_link(ipr: IPRoute, name: str) -> LinkInfo | None:
    found = ipr.link_lookup(ifname=name)
    if not found:
        return None
    return _link_info(ipr.get_links(found[0])[0])


def link_by_index(ipr: IPRoute, index: int) -> LinkInfo:
    return _link_info(ipr.get_links(index)[0])


def ipv4_addresses(ipr: IPRoute, index: int | None = None) -> list[tuple[int, IPv4Interface]]:
    """(link index, address) of every IPv4 address, of one link or of all."""
    kwargs = {"index": index} if index is not None else {}
    return [(a["index"], IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"))
            for a in ipr.get_addr(family=2, **kwargs)]


def link_up(ipr: IPRoute, index: int) -> None:
    ipr.link("set", index=index, state="up")


def ensure_mtu(ipr: IPRoute, index: int, mtu: int) -> None:
    if link_by_index(ipr, index).mtu != mtu:
        ipr.link("set", index=index, mtu=mtu)


def ensure_vxlan(ipr: IPRoute, name: str, vni: int, local: IPv4Address, underlay_index: int, port: int,
                 mtu: int) -> LinkInfo:
    """A vxlan device as flannel makes it (nolearning: the agent programs every peer), up with this MTU.

    A device of that name with other parameters is replaced; one that matches is kept with its MAC, so
    peers holding our VtepMAC stay right across restarts.
    """
    link = find_link(ipr, name)
    if link is not None:
        msg = ipr.get_links(link.index)[0]
        data = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA") if link.kind == "vxlan" else None
        same = data is not None and (
            data.get_attr("IFLA_VXLAN_ID") == vni and data.get_attr("IFLA_VXLAN_LOCAL") == str(local)
            and data.get_attr("IFLA_VXLAN_LINK") == underlay_index
            and data.get_attr("IFLA_VXLAN_PORT") == port and not data.get_attr("IFLA_VXLAN_LEARNING"))
        if not same:
            ipr.link("del", index=link.index)
            link = None
    if link is None:
        ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=str(local),
                 vxlan_link=underlay_index, vxlan_port=port, vxlan_learning=0)
        link = find_link(ipr, name)
        if link is None:
            raise OverlayError(f"vxlan device {name} vanished right after it was created")
    ensure_mtu(ipr, link.index, mtu)
    link_up(ipr, link.index)
    return link_by_index(ipr, link.index)


def open_tun(name: str) -> int:
    """Create (or attach to) TUN device ``name`` without packet info, in the calling thread's namespace.

    Returns the fd; the device lives as long as it, so a crashed agent leaves no flannel0 behind.
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def ensure_only_address(ipr: IPRoute, index: int, address: IPv4Interface) -> None:
    """This IPv4 address on the link and no other (a lease that changed leaves no stale one)."""
    present = [a for i, a in ipv4_addresses(ipr, index)]
    for old in present:
        if old != address:
            ipr.addr("del", index=index, address=str(old.ip), prefixlen=old.network.prefixlen)
    if address not in present:
        ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)


def ensure_route(ipr: IPRoute, dst: IPv4Network, oif: int, gateway: IPv4Address | None = None,
                 onlink: bool = False) -> None:
    # proto boot, as flanneld's netlink library leaves it (pyroute2 would say static).
    kwargs = {"dst": str(dst), "oif": oif, "table": RT_TABLE_MAIN, "proto": RTPROT_BOOT}
    if gateway is not None:
        kwargs["gateway"] = str(gateway)
    if onlink:
        kwargs["flags"] = RTNH_F_ONLINK
    ipr.route("replace", **kwargs)


def remove_route(ipr: IPRoute, dst: IPv4Network) -> None:
    try:
        ipr.route("del", dst=str(dst), table=RT_TABLE_MAIN)
    except NetlinkError as exc:
        if exc.code != errno.ESRCH:
            raise


def routes_within(ipr: IPRoute, network: IPv4Network) -> list[RouteEntry]:
    """Main-table IPv4 routes whose destination lies inside network (the overlay's own routes)."""
    found = []
    for r in ipr.get_routes(family=2, table=RT_TABLE_MAIN):
        dst_text = r.get_attr("RTA_DST")
        if dst_text is None:
            continue
        dst = IPv4Network(f"{dst_text}/{r['dst_len']}")
        if not dst.subnet_of(network):
            continue
        gw = r.get_attr("RTA_GATEWAY")
        found.append(RouteEntry(dst, IPv4Address(gw) if gw else None, r.get_attr("RTA_OIF") or 0))
    return found


def route_source(ipr: IPRoute, dst: IPv4Address) -> tuple[IPv4Address | None, int | None]:
    """(gateway, oif) the kernel would use for dst; gateway None means dst is on a connected link."""
    try:
        (r,) = ipr.route("get", dst=str(dst))[:1]
    except NetlinkError:
        return None, None
    gw = r.get_attr("RTA_GATEWAY")
    return (IPv4Address(gw) if gw else None), r.get_attr("RTA_OIF")


def ensure_neighbour(ipr: IPRoute, index: int, ip: IPv4Address, mac: str) -> None:
    ipr.neigh("replace", dst=str(ip), lladdr=mac, ifindex=index, state=NUD_PERMANENT)


def remove_neighbour(ipr: IPRoute, index: int, ip: IPv4Address) -> None:
    try:
        ipr.neigh("del", dst=str(ip), ifindex=index)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ESRCH):
            raise


def permanent_neighbours(ipr: IPRoute, index: int) -> dict[IPv4Address, str]:
    return {IPv4Address(n.get_attr("NDA_DST")): n.get_attr("NDA_LLADDR")
            for n in ipr.get_neighbours(ifindex=index, family=2)
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
        if dst and mac and mac != "00:00:00:00:00:00" and n["ifindex"] == index:
            found.add((mac, IPv4Address(dst)))
    return found
