"""The typed topology model: hosts, their bridges, veth pairs, tunnels, routes and containers.

Its JSON form (``to_json``) is the documented schema of ``muslin topo --format json`` (see README.md in
this package); field names here are that schema's, so renaming one is a schema change.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

SCHEMA = "muslin.topology/1"


@dataclass(frozen=True)
class Port:
    """A published port: host_ip:host_port on the host reaches container_port of the container."""
    container_port: int
    protocol: str
    host_ip: str
    host_port: int


@dataclass(frozen=True)
class Endpoint:
    """A container's interface on one network."""
    network: str
    driver: str
    ifname: str  # inside the container (eth0)
    address: str | None  # CIDR
    mac: str
    gateway: str | None
    kind: str  # veth, macvlan
    host_ifname: str | None  # the veth's host end (veth pairs), or the macvlan parent
    bridge: str | None  # the host bridge the host end is plugged into
    overlay: str | None = None  # an overlay network's name: the host end is a port of that network's br0,
    #                             in the network's own namespace (Host.overlays), not in the host's


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    network_mode: str  # bridge, host, none, container:<name>, or a network name
    pid: int
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[Port, ...] = ()


@dataclass(frozen=True)
class Bridge:
    name: str
    addresses: tuple[str, ...]
    mtu: int
    network: str | None  # the engine network it carries, when one does
    ports: tuple[str, ...]  # host-side links plugged into it


@dataclass(frozen=True)
class VethPair:
    """Both ends of a veth pair that crosses namespaces: ``host_end`` in the host, ``peer_end`` in
    ``peer_namespace`` (a container's name, or another host's)."""
    host_end: str
    peer_end: str
    peer_namespace: str
    bridge: str | None


@dataclass(frozen=True)
class FdbPeer:
    mac: str
    remote: str  # the remote VTEP's underlay address


@dataclass(frozen=True)
class Tunnel:
    name: str
    kind: str  # vxlan, tun
    addresses: tuple[str, ...]
    mtu: int
    vni: int | None = None
    port: int | None = None
    local: str | None = None
    underlay: str | None = None  # the device the outer packets leave by
    peers: tuple[FdbPeer, ...] = ()


@dataclass(frozen=True)
class Route:
    dst: str
    gateway: str | None
    dev: str | None
    src: str | None
    role: str  # default, connected, overlay (a remote host's subnet), other


@dataclass(frozen=True)
class BgpSession:
    """A BGP session of the host's BIRD (the bgp backend's, or a router's)."""
    name: str
    state: str  # Established, Active, Connect, Idle, ...
    neighbor: str | None
    neighbor_as: int | None
    local_as: int | None


@dataclass(frozen=True)
class Interface:
    """A host's own interface on the underlay (eth0)."""
    name: str
    addresses: tuple[str, ...]
    mac: str
    mtu: int


@dataclass(frozen=True)
class Network:
    name: str
    id: str
    driver: str
    subnet: str | None
    gateway: str | None
    bridge: str | None
    internal: bool


@dataclass(frozen=True)
class OverlayPort:
    """A port of an overlay network's bridge: the overlay end of a local container's veth."""
    name: str  # the veth end in the overlay's namespace
    container: str  # the container's name ("?" when no container of the engine has the other end)
    ifname: str  # the container's end (eth0)
    address: str | None  # the container's address on the overlay (CIDR)
    mac: str


@dataclass(frozen=True)
class OverlayPeer:
    """A remote endpoint of an overlay network, as this host's kernel knows it: the vxlan's forwarding
    entry (its MAC behind a VTEP) and its permanent neighbour (its IP with that MAC)."""
    vtep: str  # the remote engine's underlay address
    mac: str
    address: str | None  # None: a forwarding entry without a neighbour


@dataclass(frozen=True)
class Overlay:
    """An overlay network as one host runs it: a namespace of its own holding ``bridge`` (br0) and
    ``vxlan`` (vxlan0, whose UDP socket is the host's, on ``vxlan.underlay``), the local containers'
    veths as ``ports`` and every remote endpoint as a ``peer``."""
    network: str
    id: str
    netns: str  # the namespace's path (the engine's pin, seen through its process's root)
    subnet: str | None
    bridge: str
    mtu: int
    vxlan: Tunnel
    ports: tuple[OverlayPort, ...] = ()
    peers: tuple[OverlayPeer, ...] = ()


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    docker_host: str | None
    interfaces: tuple[Interface, ...] = ()
    bridges: tuple[Bridge, ...] = ()
    veths: tuple[VethPair, ...] = ()
    tunnels: tuple[Tunnel, ...] = ()
    routes: tuple[Route, ...] = ()
    networks: tuple[Network, ...] = ()
    containers: tuple[Container, ...] = ()
    bgp: tuple[BgpSession, ...] = ()
    overlays: tuple[Overlay, ...] = ()


@dataclass(frozen=True)
class Underlay:
    """The switch the hosts' eth0 are plugged into (the lab's ``<prefix>sw`` namespace)."""
    netns: str
    bridge: str
    subnet: str | None
    ports: tuple[str, ...]  # host names, in port order


@dataclass(frozen=True)
class Topology:
    hosts: tuple[Host, ...]
    underlay: Underlay | None = None
    backend: str | None = None  # the overlay backend, when the hosts run one
    schema: str = SCHEMA
    collected_in_ms: float = field(default=0.0, compare=False)

    def container(self, name: str) -> tuple[Host, Container] | None:
        for host in self.hosts:
            for c in host.containers:
                if name in (c.name, c.id) or (len(name) >= 12 and c.id.startswith(name)):
                    return host, c
        return None

    def host(self, name: str) -> Host | None:
        return next((h for h in self.hosts if h.name == name), None)


def to_dict(topology: Topology) -> dict:
    return dataclasses.asdict(topology)


def to_json(topology: Topology) -> str:
    return json.dumps(to_dict(topology), indent=2)
