"""Links: find them, ensure bridges, veths, vlans, dummies and macvlans exist and are up, retire them.

Most functions take an open IPRoute (see ``netns.iproute``) so one caller can batch several steps on one
socket, and every ``ensure_*`` is idempotent: re-running it after a crash converges instead of failing.
What each container's start and exit does (lookups by name, set up/down, rename, hairpin, the reaper's
delete) goes over a raw ``rtnl.RtnlSocket`` instead: ``index_in`` and the ``*_request`` builders take or
make one, and a caller may batch the requests.
The engine's drivers and the fabric's backends both use this module; neither talks to pyroute2 about
links on its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Interface

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import address, netns, rtnl
from .netlink import NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, U32, attribute, attributes

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_GROUP, IFLA_EXT_MASK = 1, 3, 4, 10, 18, 27, 29
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_LINK, IFLA_NET_NS_FD = 5, 28
VETH_INFO_PEER = 1
IFLA_PROTINFO, IFLA_BRPORT_MODE = 12, 4
AF_BRIDGE = 7
NLA_F_NESTED = 0x8000
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
RETIRED_PREFIX = "mz-"
RETIRED_GROUP = 0x6D7A0000  # IFLA_GROUP of retired links (0x6d7a: "mz"), which the reaper deletes as one


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    mtu: int
    mac: str
    kind: str | None  # IFLA_INFO_KIND: bridge, veth, vxlan, ...; None for plain devices (lo, tun)
    loopback: bool
    up: bool = False  # administratively (IFF_UP)
    master: int = 0  # IFLA_MASTER: the index of the bridge it is a port of, 0 for none


def index_of(ipr: IPRoute, name: str) -> int | None:
    """The link's index, or None: ``index_in`` over a raw socket beside the handle."""
    with rtnl.RtnlSocket.beside(ipr) as sock:
        return index_in(sock, name)


# -- raw requests, for the paths every container start and exit takes ------------------------------------
# pyroute2 spends ~0.25 ms of CPU on a link change and ~0.55 ms on a lookup by name (it decodes the whole
# answer, statistics included), and ~0.5 ms opening a handle; all of it holds the interpreter lock, which
# every other request of the engine waits for. These ask the same of the kernel over ``rtnl.RtnlSocket``.
def link_in(sock: rtnl.RtnlSocket, name: str | None = None, index: int = 0) -> LinkInfo | None:
    """The link of this name (or index) in the socket's namespace, or None (no such link, or a name the
    kernel refuses): asked for alone, without statistics, and read as an entry of ``all_links``."""
    body = IFINFOMSG.pack(0, 0, index, 0, 0) + (_name(name) if name is not None else b"")
    body += attribute(IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_SKIP_STATS))
    try:
        replies = sock.execute([rtnl.Request(RTM_GETLINK, 0, body, "link lookup", name or index)])
    except rtnl.RtnlError as exc:
        if exc.errno in (errno.ENODEV, errno.EINVAL, errno.ERANGE):  # none such; a name too long
            return None
        raise
    return _dumped_link(replies[0][2]) if replies else None


def index_in(sock: rtnl.RtnlSocket, name: str) -> int | None:
    found = link_in(sock, name)
    return None if found is None else found.index


def set_request(index: int, up: bool | None = None, name: str | None = None, mtu: int | None = None,
                group: int | None = None, gone_ok: bool = True) -> rtnl.Request:
    """One change of a link, for a batch: set up or down (with an MTU), or renamed (a link must be down
    to be renamed, and the kernel renames before it applies the flags of the same message: two
    requests), or put in a group. ``gone_ok``: a link gone meanwhile (ENODEV) is no failure."""
    flags, change = (IFF_UP if up else 0), (IFF_UP if up is not None else 0)
    body = IFINFOMSG.pack(0, 0, index, flags, change)
    if name is not None:
        body += _name(name)
    if mtu is not None:
        body += attribute(IFLA_MTU, U32.pack(mtu))
    if group is not None:
        body += attribute(IFLA_GROUP, U32.pack(group))
    return rtnl.Request(RTM_SETLINK, 0, body, "link set", index, frozenset({errno.ENODEV} if gone_ok else ()))


def retired_name() -> str:
    return RETIRED_PREFIX + os.urandom(4).hex()


def find_link(ipr: IPRoute, name: str) -> LinkInfo | None:
    with rtnl.RtnlSocket.beside(ipr) as sock:
        return link_in(sock, name)


def link_by_index(ipr: IPRoute, index: int) -> LinkInfo:
    with rtnl.RtnlSocket.beside(ipr) as sock:
        found = link_in(sock, index=index)
    if found is None:
        raise rtnl.RtnlError(errno.ENODEV, f"no link with index {index}")
    return found


def all_links(ipr: IPRoute) -> list[LinkInfo]:
    """Every link of the handle's namespace. The dump is read by hand, only the attributes LinkInfo
    holds: pyroute2 decodes every attribute of every link (statistics, per-family settings), seconds
    for the thousand veths of a thousand containers, and the daemon's start reads it several times."""
    with rtnl.RtnlSocket.beside(ipr) as sock:
        return [_dumped_link(message) for kind, message in sock.dump(RTM_GETLINK, IFINFOMSG.pack(0, 0, 0, 0, 0))
                if kind == RTM_NEWLINK]


def _dumped_link(message: bytes) -> LinkInfo:
    _, _, index, flags, _ = IFINFOMSG.unpack_from(message)
    name, mtu, mac, kind, master = "", 0, "", None, 0
    for attr, payload in attributes(message, IFINFOMSG.size):
        if attr == IFLA_IFNAME:
            name = payload.rstrip(b"\0").decode()
        elif attr == IFLA_MTU:
            mtu = U32.unpack_from(payload)[0]
        elif attr == IFLA_MASTER:
            master = U32.unpack_from(payload)[0]
        elif attr == IFLA_ADDRESS:
            mac = ":".join(f"{b:02x}" for b in payload)
        elif attr == IFLA_LINKINFO:
            kind = next((value.rstrip(b"\0").decode() for info, value in attributes(payload)
                         if info == IFLA_INFO_KIND), None)
    return LinkInfo(index, name, mtu, mac, kind, bool(flags & IFF_LOOPBACK), bool(flags & IFF_UP), master)


def random_mac() -> str:
    """A locally administered unicast MAC in Docker's 02:42 range."""
    return "02:42:" + ":".join(f"{b:02x}" for b in os.urandom(4))


def ensure_up(ipr: IPRoute, index: int) -> None:
    ipr.link("set", index=index, state="up")


def ensure_mtu(ipr: IPRoute, index: int, mtu: int) -> None:
    if link_by_index(ipr, index).mtu != mtu:
        ipr.link("set", index=index, mtu=mtu)


def _ensure_link(ipr: IPRoute, name: str, kind: str, add: Callable[[rtnl.RtnlSocket], object],
                 ipv6: bool = True, mtu: int | None = None) -> int:
    """A link of this kind and name, made by ``add`` (which takes EEXIST as done; ``ipv6=False``: IPv6
    disabled before it is up) if missing, and set up (with ``mtu``). EOPNOTSUPP when the kernel lacks
    the kind."""
    with rtnl.RtnlSocket.beside(ipr) as sock:
        found = link_in(sock, name)
        if found is None:
            add(sock)
            found = link_in(sock, name)
            if found is None:  # EEXIST for something else than the name (a VLAN id taken on its base)
                raise FileExistsError(f"a {kind} link like {name} exists already under another name")
            if not ipv6:  # only a link made here: one that was there (a user's bridge) keeps its IPv6
                without_ipv6(ipr, name)
        elif found.kind != kind:
            raise FileExistsError(f"{name} exists and is not a {kind} link")
        sock.execute([set_request(found.index, up=True, mtu=mtu, gone_ok=False)])
    return found.index


def _added_by_pyroute2(ipr: IPRoute, name: str, kind: str, **attrs: object) -> Callable[[rtnl.RtnlSocket], None]:
    """``_ensure_link``'s ``add`` for the kinds whose attributes pyroute2 encodes (vlan, veth pair, dummy)."""
    def add(_: rtnl.RtnlSocket) -> None:
        try:
            ipr.link("add", ifname=name, kind=kind, **attrs)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
    return add


def ensure_bridge(ipr: IPRoute, name: str, mtu: int) -> int:
    """An IPv4-only bridge (see ``without_ipv6``), up. An existing bridge takes the wanted MTU too, in the
    same request that sets it up. Made by a raw request, as a container's veth: every network create
    makes one."""
    mac = bytes.fromhex(random_mac().replace(":", ""))
    body = (IFINFOMSG.pack(0, 0, 0, 0, 0) + _name(name) + attribute(IFLA_MTU, U32.pack(mtu))
            + attribute(IFLA_ADDRESS, mac) + attribute(IFLA_LINKINFO, attribute(IFLA_INFO_KIND, b"bridge")))
    request = rtnl.Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, "bridge add", name, frozenset({errno.EEXIST}))
    return _ensure_link(ipr, name, "bridge", lambda sock: sock.execute([request]), ipv6=False, mtu=mtu)


def ensure_vlan(ipr: IPRoute, name: str, base_index: int, vlan_id: int) -> int:
    return _ensure_link(ipr, name, "vlan", _added_by_pyroute2(ipr, name, "vlan", link=base_index, vlan_id=vlan_id))


def ensure_dummy(ipr: IPRoute, name: str) -> int:
    return _ensure_link(ipr, name, "dummy", _added_by_pyroute2(ipr, name, "dummy"))


def ensure_veth_pair(ipr: IPRoute, name: str, peer: str) -> int:
    """Both ends in this namespace and up; returns ``name``'s index."""
    index = _ensure_link(ipr, name, "veth", _added_by_pyroute2(ipr, name, "veth", peer=peer))
    peer_index = index_of(ipr, peer)
    if peer_index is not None:
        ensure_up(ipr, peer_index)
    return index


def add_veth_into(ipr: IPRoute, host_ifname: str, peer_ifname: str, netns_fd: int, mtu: int,
                  peer_mac: str, master_index: int, hairpin: bool = False) -> tuple[int, int | None]:
    """Create a veth pair whose peer is born inside the target namespace (no link move), host end on
    the bridge and up (``hairpin``: in hairpin mode, see ``hairpin_request``). Returns the host end's
    index and, when the kernel echoes the new link (older kernels ignore NLM_F_ECHO here), the peer's
    index in its namespace (the host end's IFLA_LINK), which spares a lookup there."""
    peer = (IFINFOMSG.pack(0, 0, 0, 0, 0) + _name(peer_ifname) + attribute(IFLA_NET_NS_FD, U32.pack(netns_fd))
            + attribute(IFLA_ADDRESS, bytes.fromhex(peer_mac.replace(":", ""))) + attribute(IFLA_MTU, U32.pack(mtu)))
    info = attribute(IFLA_INFO_KIND, b"veth") + attribute(IFLA_INFO_DATA, attribute(VETH_INFO_PEER, peer))
    body = (IFINFOMSG.pack(0, 0, 0, 0, 0) + _name(host_ifname) + attribute(IFLA_MTU, U32.pack(mtu))
            + attribute(IFLA_MASTER, U32.pack(master_index)) + attribute(IFLA_LINKINFO, info))
    with rtnl.RtnlSocket.beside(ipr) as sock:
        replies = sock.execute([rtnl.Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, body,
                                             "veth add", host_ifname)])
        echoed = [reply for _, kind, reply in replies if kind == RTM_NEWLINK]
        if echoed:
            index = IFINFOMSG.unpack_from(echoed[0])[2]
            peer_attribute = rtnl.attrs(echoed[0], IFINFOMSG.size).get(IFLA_LINK)
            peer_index = U32.unpack(peer_attribute)[0] if peer_attribute else None
        else:
            found = index_in(sock, host_ifname)
            assert found is not None
            index, peer_index = found, None
        without_ipv6(ipr, host_ifname)
        sock.execute([set_request(index, up=True), *([hairpin_request(index)] if hairpin else [])])
    return index, peer_index


def _name(name: str) -> bytes:
    return attribute(IFLA_IFNAME, name.encode() + b"\0")


def without_ipv6(ipr: IPRoute, name: str) -> None:
    """No IPv6 on the handle's link, set while it is down, before it makes a link-local address and
    routes. The engine is IPv4-only, and every IPv6 route in its namespace makes each later link change
    slower: the kernel walks the whole IPv6 table at every link down, and a thousand veths with their
    link-local routes added ~10 ms to each container's start and exit."""
    namespace = rtnl.namespace_of(ipr)
    try:
        here = os.fstat(namespace).st_ino == netns.current_inode()
        with contextlib.nullcontext() if here else netns.entered(f"/proc/self/fd/{namespace}"):
            with contextlib.suppress(FileNotFoundError):  # a kernel without IPv6
                netns.set_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
    finally:
        os.close(namespace)


def ensure_master(ipr: IPRoute, index: int, master_index: int) -> None:
    """The link is a port of this bridge."""
    if link_by_index(ipr, index).master != master_index:
        ipr.link("set", index=index, master=master_index)


def hairpin_request(port_index: int) -> rtnl.Request:
    """The bridge sends a port's frames back out of that port (a container reaching itself through
    its own published port): the port's IFLA_BRPORT_MODE, set through the bridge family."""
    body = (IFINFOMSG.pack(AF_BRIDGE, 0, port_index, 0, 0)
            + attribute(IFLA_PROTINFO | NLA_F_NESTED, attribute(IFLA_BRPORT_MODE, b"\1")))
    return rtnl.Request(RTM_SETLINK, 0, body, "hairpin on port", port_index)


def add_macvlan_into(ipr: IPRoute, ifname: str, parent_index: int, netns_fd: int, mode: str, mac: str) -> None:
    """A macvlan of the parent, born inside the target namespace under its final name."""
    ipr.link("add", ifname=ifname, kind="macvlan", link=parent_index, macvlan_mode=mode, address=mac,
             net_ns_fd=netns_fd)


def delete_link(ipr: IPRoute, name: str) -> bool:
    """Gone now (synchronously); False when there was no such link."""
    index = index_of(ipr, name)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
    return True


_reaper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="link-reaper")


def retire_link(ipr: IPRoute, name: str, addresses: list[IPv4Interface] | None = None) -> bool:
    """Take a link out of service now and delete it in the background.

    Deleting a netdev waits for RCU grace periods (20-40 ms here), which would dominate `network rm`
    and container stop. Setting it down stops its traffic at once; flushing its addresses and renaming
    it frees the subnet and the name for immediate reuse; the slow delete follows on a worker. Leftovers
    of a crash in between carry RETIRED_PREFIX and are removed by ``reap_retired``. ``addresses``: the
    ones the caller put on the link (without, the link's are read from a dump of the namespace's).
    """
    with rtnl.RtnlSocket.beside(ipr) as sock:
        index = index_in(sock, name)
        if index is None:
            return False
        if addresses is None:
            addresses = [found.address for found in address.ipv4_addresses(ipr, index)]
        try:
            sock.execute([set_request(index, up=False, gone_ok=False),
                          *(address.delete_request(index, gone) for gone in addresses), _retired_request(index)])
        except rtnl.RtnlError as exc:
            if exc.errno == errno.ENODEV:  # gone meanwhile (a veth whose peer was just deleted)
                return False
            raise
    _retire(ipr)
    return True


def retire_veth(ipr: IPRoute, host_name: str, peer_namespace: str, peer_name: str) -> bool:
    """``retire_link`` for a veth pair whose peer lives in another namespace (a container's, by path).

    The peer is renamed inside its namespace, so the name (eth0) is free for the next join at once;
    deleting the host end later takes the peer with it.
    """
    with rtnl.RtnlSocket(peer_namespace) as sock:
        peer = index_in(sock, peer_name)
        if peer is not None:
            sock.execute([set_request(peer, up=False), set_request(peer, name=retired_name())])
    with rtnl.RtnlSocket.beside(ipr) as sock:
        index = index_in(sock, host_name)
        if index is None:
            return False
        try:
            sock.execute([set_request(index, up=False, gone_ok=False), _retired_request(index)])
        except rtnl.RtnlError as exc:
            if exc.errno == errno.ENODEV:  # gone meanwhile, as retire_link answers it
                return False
            raise
    _retire(ipr)
    return True


def _retired_request(index: int) -> rtnl.Request:
    """Renamed (a crash before the reaper's delete leaves a link ``reap_retired`` knows to remove) and put
    in RETIRED_GROUP, in one request: a link in the group has been retired whole."""
    return set_request(index, name=retired_name(), group=RETIRED_GROUP, gone_ok=False)


_pending_lock = threading.Lock()
_pending: list[int] = []  # fds of the namespaces where links were retired since the reaper last ran


def _retire(ipr: IPRoute) -> None:
    """Hand the delete to the reaper, with the namespace of the handle (which need not be the reaper
    thread's)."""
    with _pending_lock:
        _pending.append(rtnl.namespace_of(ipr))
    _reaper.submit(_reap_pending)


def _reap_pending() -> None:
    """Delete every retired link of each namespace named since the last round, by one request per
    namespace for the whole group: the kernel then unregisters them together. Retirements that come
    in while a delete runs (containers stopping at once) wait for the next round, and share it: ten
    veths take 32 ms so, 168 ms one by one, and the rtnl lock, which every other netlink call waits
    for, is held about as much less."""
    with _pending_lock:
        namespaces = _pending[:]
        _pending.clear()
    seen: set[tuple[int, int]] = set()
    try:
        for namespace in namespaces:
            stat = os.fstat(namespace)
            if (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            with rtnl.RtnlSocket(f"/proc/self/fd/{namespace}") as sock:
                sock.execute([group_delete_request(RETIRED_GROUP)])
    finally:
        for namespace in namespaces:
            os.close(namespace)


def group_delete_request(group: int) -> rtnl.Request:
    """Every link of the group in the socket's namespace deleted (none left: no failure)."""
    return rtnl.Request(RTM_DELLINK, 0, IFINFOMSG.pack(0, 0, 0, 0, 0) + attribute(IFLA_GROUP, U32.pack(group)),
                        "delete of link group", group, frozenset({errno.ENODEV}))


def _delete_index(ipr: IPRoute, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise


def reap_retired(ipr: IPRoute, links: list[LinkInfo]) -> None:
    """Delete what a crash left between retiring a link and the reaper's delete (``links``: a dump of
    the handle's namespace)."""
    for link in links:
        if link.name.startswith(RETIRED_PREFIX):
            _delete_index(ipr, link.index)


def wait_for_reaper() -> None:
    _reaper.submit(lambda: None).result()


@dataclass(frozen=True)
class LinkCounters:
    """A link's traffic counters (IFLA_STATS64), what `docker stats` shows per interface."""

    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def counters(ipr: IPRoute) -> dict[str, LinkCounters]:
    """The counters of every link but loopback, by name."""
    out = {}
    for msg in ipr.get_links():
        if msg["flags"] & IFF_LOOPBACK:
            continue
        stats = msg.get_attr("IFLA_STATS64") or msg.get_attr("IFLA_STATS")
        if stats is None:
            continue
        out[msg.get_attr("IFLA_IFNAME")] = LinkCounters(
            stats["rx_bytes"], stats["rx_packets"], stats["rx_errors"], stats["rx_dropped"],
            stats["tx_bytes"], stats["tx_packets"], stats["tx_errors"], stats["tx_dropped"])
    return out
