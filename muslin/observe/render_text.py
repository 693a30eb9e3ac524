"""The topology as a tree for the terminal: hosts, their bridges with the veths plugged in (both ends),
tunnels with their peers, the routes that matter, and containers with their networks."""

from __future__ import annotations

from .model import Container, Host, Topology


def render(topology: Topology) -> str:
    lines: list[str] = []
    if topology.underlay:
        u = topology.underlay
        head = f"underlay {u.subnet or '?'} (switch {u.bridge} in {u.netns}): {', '.join(u.ports)}"
        lines.append(head + (f"; overlay backend {topology.backend}" if topology.backend else ""))
    for i, host in enumerate(topology.hosts):
        lines.extend(_host(host, last=i == len(topology.hosts) - 1))
    return "\n".join(lines) + "\n"


def _tree(items: list[tuple[str, list]], prefix: str) -> list[str]:
    """Items are (label, children); children are nested the same way."""
    out = []
    for i, (label, children) in enumerate(items):
        last = i == len(items) - 1
        out.append(f"{prefix}{'└── ' if last else '├── '}{label}")
        out.extend(_tree(children, prefix + ("    " if last else "│   ")))
    return out


def _host(host: Host, last: bool) -> list[str]:
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


def _container(c: Container) -> str:
    ports = ", ".join(f"{p.host_ip}:{p.host_port}->{p.container_port}/{p.protocol}" for p in c.ports)
    return f"{c.name} ({c.network_mode}, {c.id[:12]})" + (f"  ports {ports}" if ports else "")


def _endpoints(c: Container) -> list[tuple[str, list]]:
    out: list[tuple[str, list]] = []
    for e in c.endpoints:
        via = ""
        if e.kind == "veth" and e.host_ifname:
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
