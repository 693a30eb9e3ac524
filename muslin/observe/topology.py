"""Collect the live topology: the kernel of each host and container namespace (through
``muslin.kernel.snapshot``) joined with what each engine says over its Docker API.

A host is a network namespace with an engine in it. Its containers' namespaces are found through the
API (``State.Pid``), veth pairs are matched by the indexes both ends name (each end's IFLA_LINK is the
other's index), bridges by the links plugged into them, tunnels by their kind.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from muslin.kernel import netns, snapshot
from muslin.kernel.snapshot import Namespace

from . import bgp, overlays
from .engine_api import EngineClient
from .model import (
    BgpSession,
    Bridge,
    Container,
    Endpoint,
    FdbPeer,
    Host,
    Interface,
    Network,
    Overlay,
    OverlayPort,
    Port,
    Route,
    Topology,
    Tunnel,
    Underlay,
    VethPair,
)

TUNNEL_KINDS = ("vxlan", "tun", "gre", "ipip", "wireguard")
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


@dataclass(frozen=True)
class HostSpec:
    """Where to look: a host's name, its namespace (name or path) and its engine's DOCKER_HOST."""
    name: str
    netns: str
    docker_host: str | None


def engine_host(docker_host: str, name: str | None = None, by_netns: bool = False) -> HostSpec:
    """The host an engine runs in: its namespace is the engine process's (the socket's peer). Unnamed,
    it is called after the machine, or with ``by_netns`` (one of several engines on this machine)
    after that namespace's name in /run/netns when it has one."""
    with EngineClient(docker_host) as api:
        pid = api.daemon_pid()
    path = f"/proc/{pid}/ns/net"
    return HostSpec(name or (by_netns and netns_name(path)) or os.uname().nodename, path, docker_host)


def netns_name(path: str) -> str | None:
    try:
        inode = snapshot.inode_of(path)
        return next((entry.name for entry in sorted(os.scandir(netns.NETNS_RUN_DIR), key=lambda e: e.name)
                     if entry.is_file() and entry.stat().st_ino == inode), None)
    except OSError:
        return None


def collect(hosts: list[HostSpec], underlay: tuple[str, str] | None = None, backend: str | None = None,
            overlay: str | None = None) -> Topology:
    """Read every host (in parallel) and, when given, the underlay switch (namespace, bridge).
    ``overlay`` is the overlay network's CIDR, so routes into it are told apart."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, len(hosts) + 1)) as pool:
        switch = pool.submit(snapshot.read, underlay[0]) if underlay else None
        speakers = bgp.speakers()
        found = list(pool.map(lambda h: _host(h, overlay, speakers), hosts))
    under = None
    if underlay and switch is not None:
        under = _underlay(underlay[0], underlay[1], switch.result(), hosts, found)
    return Topology(hosts=tuple(h for h, _ in found), underlay=under, backend=backend,
                    collected_in_ms=round((time.monotonic() - started) * 1000, 1))


def _host(spec: HostSpec, overlay: str | None, speakers: dict[int, list[bgp.Speaker]]) -> tuple[Host, Namespace]:
    ns = snapshot.read(spec.netns)
    inspected: list[dict] = []
    networks: list[dict] = []
    found_overlays: list[overlays.Found] = []
    if spec.docker_host:
        with EngineClient(spec.docker_host) as api:
            inspected = api.containers()
            networks = api.networks()
            if any(n.get("Driver") == overlays.OVERLAY_DRIVER for n in networks):
                found_overlays = overlays.read(networks, api.daemon_pid(), ns)
    nets = tuple(_network(n, ns) for n in networks)
    overlay_ns = {f.overlay.network: f.ns for f in found_overlays}
    by_id = {c["Id"]: c["Name"].lstrip("/") for c in inspected}
    containers: list[Container] = []
    veths: list[VethPair] = []
    matched: set[int] = set()
    for c in inspected:
        container, pairs = _container(c, ns, nets, by_id, overlay_ns)
        containers.append(container)
        veths.extend(pairs)
        matched.update(ns.named(p.host_end).index for p in pairs if ns.named(p.host_end))  # type: ignore[union-attr]
    bridges = tuple(Bridge(name=b.name, addresses=b.addresses, mtu=b.mtu,
                           network=next((n.name for n in nets if n.bridge == b.name), None),
                           ports=tuple(sorted(p.name for p in ns.links if p.master == b.index)))
                    for b in ns.links if b.kind == "bridge")
    tunnels = tuple(_tunnel(link, ns) for link in ns.links if link.kind in TUNNEL_KINDS)
    parents = {e.host_ifname for c in containers for e in c.endpoints if e.kind == "macvlan"}
    # the host's own interfaces: addressed ones (the underlay), and the parents of macvlan containers
    interfaces = tuple(Interface(link.name, link.addresses, link.mac, link.mtu) for link in ns.links
                       if link.name != "lo" and link.index not in matched and
                       (link.name in parents or link.kind in ("device", "veth") and link.addresses))
    # veths of the host into namespaces no engine told us about (a hand-made pair, another host's)
    for link in ns.links:
        if link.kind == "veth" and link.index not in matched and not link.addresses:
            bridge = ns.link(link.master)
            veths.append(VethPair(link.name, "?", "?", bridge.name if bridge else None))
    tunnel_names = {t.name for t in tunnels}
    routes = tuple(_route(r, tunnel_names, overlay) for r in ns.routes)
    host = Host(name=spec.name, netns=spec.netns, docker_host=spec.docker_host, interfaces=interfaces,
                bridges=bridges, veths=tuple(veths), tunnels=tunnels, routes=routes, networks=nets,
                containers=tuple(sorted(containers, key=lambda c: c.name)),
                bgp=tuple(BgpSession(s.name, s.state, s.neighbor, s.neighbor_as, s.local_as)
                          for s in bgp.sessions_of(speakers.get(ns.inode, []))),
                overlays=tuple(_with_containers(f.overlay, containers) for f in found_overlays))
    return host, ns


def _with_containers(overlay: Overlay, containers: list[Container]) -> Overlay:
    """The overlay's bridge ports named by the containers whose veths they are."""
    ends = {e.host_ifname: (c, e) for c in containers for e in c.endpoints if e.overlay == overlay.network}
    ports = []
    for port in overlay.ports:
        c, e = ends.get(port.name, (None, None))
        ports.append(port if c is None or e is None else
                     OverlayPort(name=port.name, container=c.name, ifname=e.ifname, address=e.address, mac=e.mac))
    return dataclasses.replace(overlay, ports=tuple(sorted(ports, key=lambda p: (p.container, p.name))))


def _network(doc: dict, ns: Namespace) -> Network:
    config = (doc.get("IPAM") or {}).get("Config") or []
    subnet = config[0].get("Subnet") if config else None
    gateway = config[0].get("Gateway") if config else None
    bridge = (doc.get("Options") or {}).get(BRIDGE_NAME_OPTION)
    if doc.get("Driver") == "bridge" and not bridge and gateway:
        holder = next((link for link in ns.links if link.kind == "bridge"
                       and any(a.split("/")[0] == gateway for a in link.addresses)), None)
        bridge = holder.name if holder else None
    return Network(name=doc["Name"], id=doc["Id"], driver=doc.get("Driver", ""), subnet=subnet, gateway=gateway,
                   bridge=bridge, internal=bool(doc.get("Internal")))


def _container(doc: dict, host: Namespace, nets: tuple[Network, ...], names_by_id: dict[str, str],
               overlay_ns: dict[str, Namespace]) -> tuple[Container, list[VethPair]]:
    name = doc["Name"].lstrip("/")
    pid = int(doc["State"].get("Pid") or 0)
    mode = (doc.get("HostConfig") or {}).get("NetworkMode") or "default"
    if mode.startswith("container:"):
        target = mode.split(":", 1)[1]
        mode = "container:" + next((n for i, n in names_by_id.items() if i.startswith(target)), target)
    ports = []
    for key, bindings in ((doc.get("NetworkSettings") or {}).get("Ports") or {}).items():
        port, _, proto = key.partition("/")
        for b in bindings or []:
            ports.append(Port(int(port), proto or "tcp", b.get("HostIp") or "0.0.0.0", int(b.get("HostPort") or 0)))
    attached = (doc.get("NetworkSettings") or {}).get("Networks") or {}
    endpoints: list[Endpoint] = []
    pairs: list[VethPair] = []
    seen: set[int] = set()  # the container's links that an endpoint of the API names
    inner = None
    if pid and attached and mode not in ("host", "none") and not mode.startswith("container:"):
        try:
            inner = snapshot.read(f"/proc/{pid}/ns/net")
        except OSError:
            inner = None  # exited meanwhile
    for net_name, ep in attached.items():
        net = next((n for n in nets if n.name == net_name), None)
        mac = (ep.get("MacAddress") or "").lower()
        address = f"{ep['IPAddress']}/{ep.get('IPPrefixLen') or 32}" if ep.get("IPAddress") else None
        link = next((link for link in inner.links if link.mac.lower() == mac), None) if inner and mac else None
        kind, host_end, bridge, overlay = "veth", None, None, None
        if link is not None:
            kind = link.kind
            seen.add(link.index)
            if link.kind == "veth" and net_name in overlay_ns:
                # the other end is a port of the overlay's bridge, in the overlay's own namespace
                ov = overlay_ns[net_name]
                peer = next((o for o in ov.links if o.index == link.link and o.link == link.index), None)
                if peer is not None:
                    host_end, overlay = peer.name, net_name
            elif link.kind == "veth":
                peer = next((h for h in host.links if h.index == link.link and h.link == link.index), None)
                if peer is not None:
                    host_end = peer.name
                    master = host.link(peer.master)
                    bridge = master.name if master else None
                    pairs.append(VethPair(peer.name, link.name, name, bridge))
            elif link.kind == "macvlan":
                parent = host.link(link.link)
                host_end = parent.name if parent else None
        if net is not None and net.driver in ("host", "null"):
            continue
        endpoints.append(Endpoint(network=net_name, driver=net.driver if net else "", ifname=link.name if link else "",
                                  address=address, mac=mac, gateway=ep.get("Gateway") or None, kind=kind,
                                  host_ifname=host_end, bridge=bridge, overlay=overlay))
    if inner is not None and overlay_ns:
        # A container on overlays has a leg the API does not list: its veth into docker_gwbridge (egress, -p)
        for link in inner.links:
            if link.kind != "veth" or link.index in seen:
                continue
            peer = next((h for h in host.links if h.index == link.link and h.link == link.index), None)
            master = host.link(peer.master) if peer is not None else None
            if peer is None or master is None:
                continue
            net = next((n for n in nets if n.bridge == master.name), None)
            gateway = next((r.gateway for r in inner.routes if r.dst == "default" and r.dev == link.name), None)
            pairs.append(VethPair(peer.name, link.name, name, master.name))
            endpoints.append(Endpoint(network=net.name if net else master.name, driver="bridge", ifname=link.name,
                                      address=link.addresses[0] if link.addresses else None, mac=link.mac.lower(),
                                      gateway=gateway, kind="veth", host_ifname=peer.name, bridge=master.name))
    return Container(id=doc["Id"], name=name, network_mode=mode, pid=pid,
                     endpoints=tuple(sorted(endpoints, key=lambda e: e.ifname)),
                     ports=tuple(sorted(ports, key=lambda p: (p.host_port, p.protocol)))), pairs


def _tunnel(link: snapshot.Link, ns: Namespace) -> Tunnel:
    underlay = ns.link(link.vxlan.underlay_index) if link.vxlan else None
    return Tunnel(name=link.name, kind=link.kind, addresses=link.addresses, mtu=link.mtu,
                  vni=link.vxlan.vni if link.vxlan else None, port=link.vxlan.port if link.vxlan else None,
                  local=link.vxlan.local if link.vxlan else None, underlay=underlay.name if underlay else None,
                  peers=tuple(sorted(FdbPeer(f.mac, f.remote) for f in link.fdb)))


def _route(r: snapshot.Route, tunnels: set[str], overlay: str | None) -> Route:
    if r.dst == "default":
        role = "default"
    elif r.dev in tunnels or (overlay and _within(r.dst, overlay) and r.gateway):
        role = "overlay"
    elif r.gateway is None:
        role = "connected"
    else:
        role = "other"
    return Route(dst=r.dst, gateway=r.gateway, dev=r.dev, src=r.src, role=role)


def _within(cidr: str, network: str) -> bool:
    try:
        return IPv4Network(cidr, strict=False).subnet_of(IPv4Network(network))
    except (ValueError, TypeError):
        return False


def _underlay(ns_path: str, bridge_name: str, switch: Namespace, specs: list[HostSpec],
              found: list[tuple[Host, Namespace]]) -> Underlay:
    """Which host sits on which switch port: the port's veth peer is the host's interface."""
    bridge = switch.named(bridge_name)
    ports = [p for p in switch.links if bridge is not None and p.master == bridge.index]
    hosts = []
    subnet = None
    for port in ports:
        for host, ns in found:
            end = next((link for link in ns.links if link.index == port.link and link.link == port.index), None)
            if end is not None:
                hosts.append(host.name)
                if end.addresses and subnet is None:
                    subnet = str(IPv4Interface(end.addresses[0]).network)
    return Underlay(netns=ns_path, bridge=bridge_name, subnet=subnet, ports=tuple(hosts))


def host_address(host: Host) -> IPv4Address | None:
    for iface in host.interfaces:
        for a in iface.addresses:
            return IPv4Interface(a).ip
    return None
