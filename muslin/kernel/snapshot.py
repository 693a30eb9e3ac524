"""A read-only picture of one network namespace: its links, addresses, IPv4 routes and vxlan fdb.

What ``muslin topo`` and ``muslin trace`` read; nothing here changes the kernel. One netlink socket per
namespace, a handful of dumps, so a whole lab reads in milliseconds. Addresses and fdb entries come
from ``address`` and ``neighbour``; links and routes are read here because the picture needs what the
drivers never ask for (a link's master, its peer across namespaces, vxlan attributes, the default
route and preferred sources).
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import address, neighbour, netns, rtnl
from .netlink import attribute

IFF_UP = 0x1
RTM_GETNSID = 90
NETNSA_NSID = 1
NETNSA_FD = 3
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
NTF_SELF = 0x02


@dataclass(frozen=True)
class Vxlan:
    vni: int
    port: int
    local: str | None
    underlay_index: int | None


@dataclass(frozen=True)
class FdbEntry:
    mac: str
    remote: str  # the VTEP the frames for mac are sent to


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str  # veth, bridge, vxlan, tun, macvlan, dummy, ... or "device" (physical, lo)
    mac: str
    mtu: int
    up: bool
    master: int | None  # the bridge this link is plugged into
    link: int | None  # IFLA_LINK: a veth's peer index (in the peer's namespace), a vxlan's underlay
    link_netnsid: int | None  # set when ``link`` lives in another namespace
    addresses: tuple[str, ...] = ()  # CIDR
    vxlan: Vxlan | None = None
    fdb: tuple[FdbEntry, ...] = ()


@dataclass(frozen=True)
class Route:
    dst: str  # CIDR or "default"
    gateway: str | None
    dev: str | None
    src: str | None
    scope: int
    protocol: int
    onlink: bool


@dataclass(frozen=True)
class Namespace:
    path: str
    inode: int
    links: tuple[Link, ...] = field(default_factory=tuple)
    routes: tuple[Route, ...] = field(default_factory=tuple)

    def link(self, index: int | None) -> Link | None:
        return next((link for link in self.links if link.index == index), None)

    def named(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)


def inode_of(path: str) -> int:
    return os.stat(netns.path_for(path)).st_ino


def read(path: str) -> Namespace:
    """Everything ``Namespace`` holds, read from the namespace at ``path`` (a name, an nsfs file or
    /proc/PID/ns/net)."""
    with netns.iproute(path) as ipr:
        return read_with(ipr, path)


def read_with(ipr: IPRoute, path: str) -> Namespace:
    addresses: dict[int, list[str]] = {}
    for a in address.ipv4_addresses(ipr):
        addresses.setdefault(a.index, []).append(str(a.address))
    fdb: dict[int, list[FdbEntry]] = {}
    links: list[Link] = []
    raw = list(ipr.get_links())
    for m in raw:
        if _kind(m) == "vxlan":
            fdb[m["index"]] = [FdbEntry(mac, str(remote)) for mac, remote in
                               sorted(neighbour.fdb_entries(ipr, m["index"]))]
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in raw}
    for m in raw:
        kind = _kind(m) or "device"
        vxlan = None
        if kind == "vxlan":
            data = m.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
            vxlan = Vxlan(vni=data.get_attr("IFLA_VXLAN_ID"), port=data.get_attr("IFLA_VXLAN_PORT"),
                          local=data.get_attr("IFLA_VXLAN_LOCAL"), underlay_index=data.get_attr("IFLA_VXLAN_LINK"))
        link = m.get_attr("IFLA_LINK")
        links.append(Link(index=m["index"], name=names[m["index"]], kind=kind, mac=m.get_attr("IFLA_ADDRESS") or "",
                          mtu=m.get_attr("IFLA_MTU") or 0, up=bool(m["flags"] & IFF_UP),
                          master=m.get_attr("IFLA_MASTER"), link=link if link != m["index"] else None,
                          link_netnsid=m.get_attr("IFLA_LINK_NETNSID"),
                          addresses=tuple(addresses.get(m["index"], ())), vxlan=vxlan,
                          fdb=tuple(fdb.get(m["index"], ()))))
    routes = []
    for r in ipr.get_routes(family=socket.AF_INET, table=RT_TABLE_MAIN):
        if r["type"] != RTN_UNICAST:
            continue
        dst = r.get_attr("RTA_DST")
        routes.append(Route(dst=f"{dst}/{r['dst_len']}" if dst else "default", gateway=r.get_attr("RTA_GATEWAY"),
                            dev=names.get(r.get_attr("RTA_OIF")), src=r.get_attr("RTA_PREFSRC"),
                            scope=r["scope"], protocol=r["proto"], onlink=bool(r["flags"] & 0x4)))
    return Namespace(path=path, inode=inode_of(path), links=tuple(links), routes=tuple(routes))


def _kind(msg) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


@dataclass(frozen=True)
class RouteChoice:
    """What the kernel answers to `ip route get`: the device and next hop a packet would take."""
    dst: str
    dev: str | None
    gateway: str | None
    src: str | None
    kind: str  # unicast, local, blackhole, unreachable, prohibit
    error: str | None = None


RTN_NAMES = {1: "unicast", 2: "local", 3: "broadcast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}


def route_get(path: str, dst: IPv4Address, src: IPv4Address | None = None, iif: str | None = None) -> RouteChoice:
    """The route the kernel chooses in that namespace for dst (as if arriving on iif, when given)."""
    with netns.iproute(path) as ipr:
        kwargs: dict[str, object] = {"dst": str(dst)}
        if iif is not None:
            found = ipr.link_lookup(ifname=iif)
            if found:
                kwargs["iif"] = found[0]
                if src is not None:
                    kwargs["src"] = str(src)
        try:
            (r,) = ipr.route("get", **kwargs)
        except NetlinkError as exc:  # ENETUNREACH, EHOSTUNREACH, EINVAL (a martian), ...
            return RouteChoice(str(dst), None, None, None, "unreachable", error=os.strerror(exc.code))
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
        return RouteChoice(dst=str(dst), dev=names.get(r.get_attr("RTA_OIF")), gateway=r.get_attr("RTA_GATEWAY"),
                           src=r.get_attr("RTA_PREFSRC"), kind=RTN_NAMES.get(r["type"], str(r["type"])))


def netns_id(path: str, other: str) -> int | None:
    """The id the namespace at ``path`` knows the namespace at ``other`` by (what its links' IFLA_LINK_NETNSID
    say when their other end, or a vxlan's socket, is there); None when it has given it none."""
    fd = os.open(netns.path_for(other), os.O_RDONLY | os.O_CLOEXEC)
    try:
        body = struct.pack("=Bxxx", socket.AF_UNSPEC) + attribute(NETNSA_FD, struct.pack("=I", fd))
        with rtnl.RtnlSocket(path) as sock:
            replies = sock.execute([rtnl.Request(RTM_GETNSID, 0, body, "netnsid of", other)])
    finally:
        os.close(fd)
    for _, _, payload in replies:
        found = rtnl.attrs(payload, 4).get(NETNSA_NSID)
        if found is not None:
            nsid = struct.unpack("=i", found[:4])[0]
            return nsid if nsid >= 0 else None
    return None
