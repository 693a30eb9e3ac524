"""IPv4 routes of the main table: list them, ensure one, remove one, and ask which one the kernel picks.

Each also comes in bulk over an ``rtnl.RtnlSocket``: ``dump_routes``, ``replace_request``/``delete_request``
batched by the caller, and ``route_sources`` for many destinations at once.
"""

from __future__ import annotations

import errno
import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import rtnl
from .netlink import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, U32, attribute

AF_INET = 2
RT_TABLE_MAIN = 254
RT_TABLE_COMPAT = 252  # in the header when the table's id is past 255: RTA_TABLE has it
RTPROT_BOOT = 3
RTNH_F_ONLINK = 4
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1


@dataclass(frozen=True, slots=True)
class RouteEntry:
    dst: IPv4Network
    gateway: IPv4Address | None  # None: dst is on the link itself
    oif: int


def ipv4_routes(ipr: IPRoute) -> list[RouteEntry]:
    """Every IPv4 route of the main table that has a destination (the default route has none): one
    ``dump_routes`` in the handle's namespace."""
    with rtnl.RtnlSocket.beside(ipr) as sock:
        return dump_routes(sock)


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


def replace_default_route(ipr: IPRoute, oif: int, gateway: IPv4Address) -> None:
    """The default route via ``gateway`` on the link, in place of whichever default route there was."""
    ipr.route("replace", dst="0.0.0.0/0", gateway=str(gateway), oif=oif, table=RT_TABLE_MAIN)


def remove_route(ipr: IPRoute, dst: IPv4Network) -> None:
    try:
        ipr.route("del", dst=str(dst), table=RT_TABLE_MAIN)
    except NetlinkError as exc:
        if exc.code != errno.ESRCH:
            raise


# ------------------------------------------------------------------------------------------- in bulk

def dump_routes(sock: rtnl.RtnlSocket, within: IPv4Network | None = None, proto: int | None = None) -> list[RouteEntry]:
    """``ipv4_routes`` in one dump read with struct: main-table IPv4 routes with a destination, optionally
    only those inside ``within``, and only those a routing protocol (``proto``) put there."""
    found = []
    lo = int(within.network_address) if within else 0
    hi = int(within.broadcast_address) if within else 0xFFFFFFFF
    min_len = within.prefixlen if within else 0
    for _, body in sock.dump(RTM_GETROUTE, RTMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
        dst_len, table = body[1], body[4]
        if table not in (RT_TABLE_MAIN, RT_TABLE_COMPAT) or (proto is not None and body[5] != proto):
            continue  # the local table's, above all: as many again as there are addresses, never read
        fields = rtnl.attrs(body, RTMSG.size)
        if RTA_TABLE in fields:
            table = U32.unpack(fields[RTA_TABLE])[0]
        dst = fields.get(RTA_DST)
        if table != RT_TABLE_MAIN or dst is None or dst_len < min_len:
            continue
        start = int.from_bytes(dst, "big")
        if not lo <= start <= hi:
            continue
        gateway = fields.get(RTA_GATEWAY)
        oif = fields.get(RTA_OIF)
        found.append(RouteEntry(_network(start, dst_len),
                                IPv4Address(gateway) if gateway else None, U32.unpack(oif)[0] if oif else 0))
    return found


@functools.lru_cache(maxsize=4096)
def _network(start: int, prefixlen: int) -> IPv4Network:
    """Made once per destination seen: ipaddress builds a network through its text form."""
    return IPv4Network((start, prefixlen), strict=False)


def replace_request(dst: IPv4Network, oif: int, gateway: IPv4Address | None = None,
                    onlink: bool = False) -> rtnl.Request:
    """``ensure_route`` as one request of a batch (proto boot, as ensure_route sets)."""
    body = (RTMSG.pack(AF_INET, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                       RT_SCOPE_UNIVERSE if gateway is not None else RT_SCOPE_LINK, RTN_UNICAST,
                       RTNH_F_ONLINK if onlink else 0)
            + attribute(RTA_TABLE, U32.pack(RT_TABLE_MAIN)) + attribute(RTA_DST, dst.network_address.packed)
            + attribute(RTA_OIF, U32.pack(oif)))
    if gateway is not None:
        body += attribute(RTA_GATEWAY, gateway.packed)
    return rtnl.Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body, "route replace", dst)


def default_route_request(oif: int, gateway: IPv4Address) -> rtnl.Request:
    """``ensure_default_route`` as one request of a batch: a default route there already, on whatever
    link, stays (EEXIST is no failure). Proto boot, as Docker's containers have it."""
    body = (RTMSG.pack(AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
            + attribute(RTA_GATEWAY, gateway.packed) + attribute(RTA_OIF, U32.pack(oif)))
    return rtnl.Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, "default route via", gateway,
                        frozenset({errno.EEXIST}))


def delete_request(dst: IPv4Network, proto: int = 0) -> rtnl.Request:
    """``remove_route`` as one request of a batch: a route already gone is no error. ``proto``: only
    the route that protocol put there (0: any)."""
    body = (RTMSG.pack(AF_INET, dst.prefixlen, 0, 0, RT_TABLE_MAIN, proto, 0, 0, 0)
            + attribute(RTA_TABLE, U32.pack(RT_TABLE_MAIN)) + attribute(RTA_DST, dst.network_address.packed))
    return rtnl.Request(RTM_DELROUTE, 0, body, "route del", dst, rtnl.MISSING)


def route_sources(sock: rtnl.RtnlSocket, destinations: Iterable[IPv4Address],
                  ) -> dict[IPv4Address, tuple[IPv4Address | None, int | None]]:
    """``route_source`` for many destinations in one batch of lookups."""
    wanted = list(dict.fromkeys(destinations))
    requests = [rtnl.Request(RTM_GETROUTE, 0, RTMSG.pack(AF_INET, 32, 0, 0, 0, 0, 0, 0, 0)
                             + attribute(RTA_DST, dst.packed), "route get", dst, _UNREACHABLE)
                for dst in wanted]
    found: dict[IPv4Address, tuple[IPv4Address | None, int | None]] = dict.fromkeys(wanted, (None, None))
    for index, kind, body in sock.execute(requests):
        if kind != RTM_NEWROUTE:
            continue
        fields = rtnl.attrs(body, RTMSG.size)
        gateway, oif = fields.get(RTA_GATEWAY), fields.get(RTA_OIF)
        found[wanted[index]] = (IPv4Address(gateway) if gateway else None, U32.unpack(oif)[0] if oif else None)
    return found


# Every refusal of a lookup means "no route": unreachable, prohibited, no such network.
_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EPERM, errno.EINVAL,
                          errno.ESRCH, errno.ENOENT})
