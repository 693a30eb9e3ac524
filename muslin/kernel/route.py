"""IPv4 routes of the main table: list them, ensure one, remove one, and ask which one the kernel picks."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

AF_INET = 2
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RTNH_F_ONLINK = 4


@dataclass(frozen=True)
class RouteEntry:
    dst: IPv4Network
    gateway: IPv4Address | None  # None: dst is on the link itself
    oif: int


def ipv4_routes(ipr: IPRoute) -> list[RouteEntry]:
    """Every IPv4 route of the main table that has a destination (the default route has none)."""
    found = []
    for r in ipr.get_routes(family=AF_INET, table=RT_TABLE_MAIN):
        dst = r.get_attr("RTA_DST")
        if dst is None:
            continue
        gw = r.get_attr("RTA_GATEWAY")
        found.append(RouteEntry(IPv4Network(f"{dst}/{r['dst_len']}", strict=False),
                                IPv4Address(gw) if gw else None, r.get_attr("RTA_OIF") or 0))
    return found


def routes_within(ipr: IPRoute, network: IPv4Network) -> list[RouteEntry]:
    """Main-table IPv4 routes whose destination lies inside network (an overlay's own routes)."""
    return [r for r in ipv4_routes(ipr) if r.dst.subnet_of(network)]


def route_source(ipr: IPRoute, dst: IPv4Address) -> tuple[IPv4Address | None, int | None]:
    """(gateway, oif) the kernel would use for dst; gateway None means dst is on a connected link,
    (None, None) that dst is unreachable."""
    try:
        (r,) = ipr.route("get", dst=str(dst))[:1]
    except NetlinkError:
        return None, None
    gw = r.get_attr("RTA_GATEWAY")
    return (IPv4Address(gw) if gw else None), r.get_attr("RTA_OIF")


def ensure_route(ipr: IPRoute, dst: IPv4Network, oif: int, gateway: IPv4Address | None = None,
                 onlink: bool = False) -> None:
    """This route to dst and no other (replaces one that differs)."""
    # proto boot, as flanneld's netlink library leaves it (pyroute2 would say static).
    kwargs: dict[str, object] = {"dst": str(dst), "oif": oif, "table": RT_TABLE_MAIN, "proto": RTPROT_BOOT}
    if gateway is not None:
        kwargs["gateway"] = str(gateway)
    if onlink:
        kwargs["flags"] = RTNH_F_ONLINK
    ipr.route("replace", **kwargs)


def ensure_default_route(ipr: IPRoute, oif: int, gateway: IPv4Address) -> None:
    """A default route via ``gateway`` on the link unless there is one already, on whatever link: a
    container's second network does not take the first one's default route, as in Docker."""
    try:
        ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway), oif=oif)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def remove_route(ipr: IPRoute, dst: IPv4Network) -> None:
    try:
        ipr.route("del", dst=str(dst), table=RT_TABLE_MAIN)
    except NetlinkError as exc:
        if exc.code != errno.ESRCH:
            raise
