"""Simulated hosts on one L2 underlay, all inside network namespaces.

``<prefix>sw`` holds the bridge ``br0`` (the switch); ``<prefix>node1..N`` are the hosts, each with an
``eth0`` plugged into it and addressed 192.168.255.154, .155, ... /24 as in the article. Nothing is added
to the caller's namespace. Everything is found again by prefix, so teardown works after a crash too.

Routed (``routed=True``): two L2 segments joined by a router, as hosts in two racks. Odd nodes stay on
``<prefix>sw`` (192.168.255.0/24), even nodes go to ``<prefix>sw2`` (192.168.254.0/24, so node2 is
192.168.254.155); the router ``<prefix>rtr`` holds .1 on both (eth0, eth1) and is every host's default
gateway. Only the router joins the segments: nothing floods from one to the other.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from muslin.kernel import address, link, netns, route

UNDERLAY = IPv4Network("192.168.255.0/24")
SECOND_SEGMENT = IPv4Network("192.168.254.0/24")
ROUTER_IFACES = ("eth0", "eth1")  # on the first and the second segment
FIRST_HOST = 154
HOST_IFACE = "eth0"
SWITCH_BRIDGE = "br0"
UNDERLAY_MTU = 1500


@dataclass(frozen=True)
class Host:
    name: str  # the namespace name: <prefix>node<i>
    address: IPv4Address
    iface: str = HOST_IFACE
    segment: IPv4Network = UNDERLAY
    gateway: IPv4Address | None = None  # the router, when routed

    @property
    def netns(self) -> str:
        return netns.path_for(self.name)


@dataclass(frozen=True)
class Underlay:
    prefix: str
    switch: str  # namespace holding the bridge
    hosts: tuple[Host, ...]
    router: str | None = None  # namespace of the router between the segments, when routed

    @property
    def router_addresses(self) -> tuple[IPv4Address, ...]:
        """The router's address on each segment (first segment first)."""
        return tuple(segment.network_address + 1 for segment in (UNDERLAY, SECOND_SEGMENT)) if self.router else ()


def switch_name(prefix: str, segment: int = 0) -> str:
    return f"{prefix}sw{segment + 1 if segment else ''}"


def router_name(prefix: str) -> str:
    return f"{prefix}rtr"


def host_name(prefix: str, number: int) -> str:
    return f"{prefix}node{number}"


def create(prefix: str, count: int, first_host: int = FIRST_HOST, routed: bool = False) -> Underlay:
    """Build (or complete) the underlay with ``count`` hosts; idempotent."""
    if not 1 <= count <= 254 - first_host:
        raise ValueError(f"host count {count} does not fit in {UNDERLAY} from .{first_host}")
    segments = (UNDERLAY, SECOND_SEGMENT) if routed else (UNDERLAY,)
    hosts = []
    for index, segment in enumerate(segments):
        switch = switch_name(prefix, index)
        netns.create(switch)
        with netns.iproute(switch) as sw:
            bridge = link.ensure_bridge(sw, SWITCH_BRIDGE, UNDERLAY_MTU)
            for number in range(1, count + 1):
                if (number - 1) % len(segments) != index:
                    continue
                gateway = segment.network_address + 1 if routed else None
                host = Host(host_name(prefix, number), segment.network_address + first_host + number - 1,
                            segment=segment, gateway=gateway)
                _plug(sw, bridge, host, f"p{number}")
                hosts.append(host)
            if routed:
                _plug_router(prefix, sw, bridge, index, segment)
    hosts.sort(key=lambda h: int(h.name[len(prefix) + len("node"):]))
    for host in hosts:
        if host.gateway is not None:
            with netns.iproute(host.name) as h:
                index = link.index_of(h, host.iface)
                assert index is not None  # plugged above
                route.ensure_default_route(h, index, host.gateway)
    return Underlay(prefix, switch_name(prefix), tuple(hosts), router_name(prefix) if routed else None)


def _plug_router(prefix: str, sw, bridge: int, index: int, segment: IPv4Network) -> None:
    """The router's leg on one segment: a host-like port holding the segment's .1."""
    router = router_name(prefix)
    leg = Host(router, segment.network_address + 1, ROUTER_IFACES[index], segment)
    _plug(sw, bridge, leg, f"r{index}")


def _plug(sw, bridge: int, host: Host, port: str) -> None:
    netns.create(host.name)
    with netns.iproute(host.name) as h:
        index = link.index_of(h, host.iface)
        if index is None:
            link.delete_link(sw, port)  # a port whose host end never arrived (a crashed run)
            fd = os.open(host.netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                link.add_veth_into(sw, port, host.iface, fd, UNDERLAY_MTU, link.random_mac(), bridge)
            finally:
                os.close(fd)
            index = link.index_of(h, host.iface)
            assert index is not None
        address.ensure_address(h, index, IPv4Interface(f"{host.address}/{host.segment.prefixlen}"))
        link.ensure_up(h, index)
    with netns.entered(host.name):
        netns.set_sysctl("net/ipv4/ip_forward", "1")


def names(prefix: str) -> list[str]:
    """Namespaces of an underlay with this prefix that exist now (hosts first, the switch last)."""
    if not os.path.isdir(netns.NETNS_RUN_DIR):
        return []
    infrastructure = (switch_name(prefix), switch_name(prefix, 1), router_name(prefix))
    found = sorted(n for n in os.listdir(netns.NETNS_RUN_DIR)
                   if n.startswith(prefix) and (n in infrastructure or n[len(prefix):].startswith("node")))
    return [n for n in found if n not in infrastructure] + [n for n in found if n in infrastructure]


def processes_in(name: str) -> list[int]:
    """Pids of processes whose network namespace is this one."""
    try:
        target = os.stat(netns.path_for(name)).st_ino
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                    pids.append(int(entry))
            except OSError:
                continue  # exited meanwhile
    return pids


def teardown(prefix: str) -> None:
    """Remove every namespace of the underlay (their links go with them); idempotent.

    Processes still running inside them (left by a crashed run) are killed first, or they would keep
    the namespaces, and the overlay devices in them, alive.
    """
    for name in names(prefix):
        for pid in processes_in(name):
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        netns.remove(name)
