"""The topology as a tree for the terminal: hosts, their bridges with the veths plugged in (both ends),
tunnels with their peers, the routes that matter, and containers with their networks."""

from __future__ import annotations

from .model import Container, Host, Overlay, Topology


def render(topology: Topology) -> str:
    lines: list[str] = []
    if topology.underlay:
        u = topology.underlay
        head = f"underlay {u.subnet or '?'} (switch {u.bridge} in {u.netns}): {', '.join(u.ports)}"
        lines.append(head + (f"; overlay backend {topology.backend}" if topology.backend else ""))
    hosts_by_address = {a.split("/")[0]: h.name for h in topology.hosts for i in h.interfaces for a in i.addresses}
    for i, host in enumerate(topology.hosts):
        lines.extend(_host(host, last=i == len(topology.hosts) - 1, hosts_by_address=hosts_by_address))
    return "\n".join(lines) + "\n"


def _tree(items: list[tuple[str, list]], prefix: str) -> list[str]:
    """Items are (label, children); children are nested the same way."""
    out = []
    for i, (label, children) in enumerate(items):
        last = i == len(items) - 1
        out.append(f"{prefix}{'└── ' if last else '├── '}{label}")
        out.extend(_tree(children, prefix + ("    " if last else "│   ")))
    return out


def _host(host: Host, last: bool, hosts_by_address: dict[str, str]) -> list[str]:
    addrs = ", ".join(f"{i.name} {' '.join(i.addresses)}" for i in host.interfaces) or "no underlay address"
    head = f"host {host.name}  {addrs}  (netns {host.netns})"
    items: list[tuple[str, list]] = []
    by_host_end = {v.host_end: v for v in host.veths}
    for b in host.bridges:
        plugged = []
        for port in b.ports:
            v = by_host_end.get(port)
            plugged.append((f"{port} ⇄ {v.peer_namespace}:{v.peer_end}" if v else port, []))
        net = f" [network {b.network}]" if b.network else ""
        items.append((f"bridge {b.name} {' '.join(b.addresses) or '(no address)'} mtu {b.mtu}{net}", plugged))
    for t in host.tunnels:
        if t.kind == "vxlan":
            label = (f"tunnel {t.name} vxlan VNI {t.vni} UDP {t.port} local {t.local or '-'} "
                     f"via {t.underlay or '-'} {' '.join(t.addresses)} mtu {t.mtu}")
        else:
            label = f"tunnel {t.name} {t.kind} {' '.join(t.addresses)} mtu {t.mtu}"
        items.append((label, [(f"fdb {p.mac} → {p.remote}", []) for p in t.peers]))
    items.extend(_overlay(o, host, hosts_by_address) for o in host.overlays)
    if host.bgp:
        items.append(("bgp (BIRD)", [(f"{b.name}: neighbor {b.neighbor or '?'} AS {b.neighbor_as or '?'} "
                                      f"(local AS {b.local_as or '?'}) {b.state}", []) for b in host.bgp]))
    routes = [(f"{r.dst}{' via ' + r.gateway if r.gateway else ''}{' dev ' + r.dev if r.dev else ''}"
               f"{' src ' + r.src if r.src else ''}  ({r.role})", []) for r in host.routes]
    if routes:
        items.append(("routes", routes))
    if host.containers:
        items.append(("containers", [(_container(c), _endpoints(c)) for c in host.containers]))
    lines = [head]
    lines.extend(_tree(items, ""))
    if not last:
        lines.append("")
    return lines


def _overlay(o: Overlay, host: Host, hosts_by_address: dict[str, str]) -> tuple[str, list]:
    """An overlay network's namespace: its bridge with the containers' veths and the vxlan, the remote
    endpoints behind each VTEP, and the containers' other leg, on docker_gwbridge."""
    t = o.vxlan
    ports: list[tuple[str, list]] = [(f"{p.name} ⇄ {p.container}:{p.ifname or '?'} {p.address or '-'} {p.mac}", [])
                                     for p in o.ports]
    ports.append((f"{t.name} (vxlan port)", []))
    socket = f"on {host.name}'s {t.underlay}" if t.underlay else f"in {host.name}'s namespace"
    vtep_label = f"vxlan {t.name} VNI {t.vni} UDP {t.port} local {t.local or '-'} (socket {socket}) mtu {t.mtu}"
    by_vtep: dict[str, list[str]] = {}
    for peer in o.peers:
        by_vtep.setdefault(peer.vtep, []).append(f"{peer.mac} {peer.address or '(no neighbour)'}")
    peers = [(f"{vtep}" + (f" ({hosts_by_address[vtep]})" if vtep in hosts_by_address else "")
              + f": {', '.join(found)}", []) for vtep, found in sorted(by_vtep.items())]
    local = {p.container for p in o.ports}
    egress = [(f"{c.name}:{e.ifname} {e.address or '-'} ⇄ {e.host_ifname} on {e.bridge}", [])
              for c in host.containers if c.name in local
              for e in c.endpoints if e.bridge is not None and e.overlay is None and e.network == "docker_gwbridge"]
    children: list[tuple[str, list]] = [(f"bridge {o.bridge} mtu {o.mtu}", ports), (vtep_label, [])]
    children.append((f"remote endpoints (vxlan fdb → VTEP, permanent neighbours){'' if peers else ': none'}", peers))
    if egress:
        children.append(("egress and published ports: docker_gwbridge", egress))
    return (f"overlay {o.network} {o.subnet or ''} (network {o.id[:12]}, netns {o.netns})", children)


def _container(c: Container) -> str:
    ports = ", ".join(f"{p.host_ip}:{p.host_port}->{p.container_port}/{p.protocol}" for p in c.ports)
    return f"{c.name} ({c.network_mode}, {c.id[:12]})" + (f"  ports {ports}" if ports else "")


def _endpoints(c: Container) -> list[tuple[str, list]]:
    out: list[tuple[str, list]] = []
    for e in c.endpoints:
        via = ""
        if e.kind == "veth" and e.host_ifname and e.overlay:
            via = f"  veth ⇄ {e.host_ifname} on br0 of overlay {e.overlay}'s namespace"
        elif e.kind == "veth" and e.host_ifname:
            via = f"  veth ⇄ {e.host_ifname}" + (f" on {e.bridge}" if e.bridge else "")
        elif e.kind == "macvlan":
            via = f"  macvlan of {e.host_ifname}"
        out.append((f"{e.ifname or '?'} {e.address or '-'} {e.mac} [{e.network}]{via}", []))
    if c.network_mode == "host":
        out.append(("shares the host's network namespace", []))
    elif c.network_mode.startswith("container:"):
        out.append((f"shares {c.network_mode.split(':', 1)[1]}'s network namespace", []))
    elif c.network_mode == "none" or not c.endpoints:
        out.append(("loopback only", []))
    return out
