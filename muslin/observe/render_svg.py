"""The topology as a drawing, laid out by Graphviz ``dot``: containers inside their hosts, veths into
bridges, tunnels between hosts over the underlay switch, as in the article's figures.

Every drawn thing has a stable id (``node_id``), so the web page can find it to draw a trace's path.
"""

from __future__ import annotations

import html
import shutil
import subprocess

from .model import Host, Overlay, Topology

DOT_TIMEOUT = 10.0


class GraphvizMissing(RuntimeError):
    """``dot`` is not installed (setup.sh installs graphviz)."""


def node_id(*parts: str) -> str:
    """``container/node1/web``: the id of a drawn thing; the same one the web page and traces use."""
    return "/".join(parts)


def overlay_ids(host: str, overlay: Overlay) -> tuple[str, str, str]:
    """The drawing's ids of an overlay network's namespace on a host, its bridge and its vxlan."""
    return (node_id("overlay", host, overlay.network), node_id("bridge", host, overlay.network, overlay.bridge),
            node_id("tunnel", host, overlay.network, overlay.vxlan.name))


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(title: str, *lines: str) -> str:
    rows = [f"<b>{html.escape(title)}</b>"] + [f'<font point-size="9">{html.escape(line)}</font>' for line in lines if line]
    return "<" + "<br/>".join(rows) + ">"


def to_dot(topology: Topology) -> str:
    out = ["digraph muslin {",
           '  graph [rankdir=TB, fontname="DejaVu Sans", fontsize=11, compound=true, newrank=true, '
           'nodesep=0.3, ranksep=0.5, bgcolor="white"];',
           '  node [fontname="DejaVu Sans", fontsize=10, shape=box, style="rounded,filled", fillcolor="#ffffff"];',
           '  edge [fontname="DejaVu Sans", fontsize=8, dir=none, color="#555555"];']
    for host in topology.hosts:
        out.extend(_host(host))
    if topology.underlay:
        u = topology.underlay
        sw = node_id("switch", u.bridge)
        out.append(f'  {_q(sw)} [id={_q(sw)}, label={_label("underlay switch " + u.bridge, u.subnet or "")}, '
                   'shape=box, fillcolor="#e8e8e8", width=4];')
        for host in topology.hosts:
            for iface in host.interfaces:
                nid = node_id("iface", host.name, iface.name)
                out.append(f'  {_q(nid)} -> {_q(sw)} [id={_q(nid + "--" + sw)}, penwidth=2];')
    # tunnels between hosts: a vxlan fdb entry or an overlay route names the remote host's address
    addresses = {a.split("/")[0]: h for h in topology.hosts for i in h.interfaces for a in i.addresses}
    drawn: set[frozenset[str]] = set()
    out.extend(_overlay_tunnels(topology, addresses, drawn))
    routed: dict[tuple[str, str], list[str]] = {}
    for host in topology.hosts:
        for t in host.tunnels:
            remotes = {p.remote for p in t.peers} | {r.gateway for r in host.routes if r.dev == t.name and r.gateway}
            if t.kind == "tun":  # flannel's udp backend: the agent sends to every other host's agent
                remotes |= {a for a, h in addresses.items() if any(o.kind == "tun" for o in h.tunnels)}
            for remote in sorted(r for r in remotes if r):
                other = addresses.get(remote)
                if other is None or other is host:
                    continue
                peer_tunnel = next((o for o in other.tunnels if o.kind == t.kind), None)
                if peer_tunnel is None:
                    continue
                a, b = node_id("tunnel", host.name, t.name), node_id("tunnel", other.name, peer_tunnel.name)
                if frozenset((a, b)) in drawn:
                    continue
                drawn.add(frozenset((a, b)))
                label = (f"vxlan VNI {t.vni} UDP {t.port}" if t.kind == "vxlan"
                         else "flannel udp (the agents, UDP)" if t.kind == "tun" else f"{t.kind} tunnel")
                out.append(f'  {_q(a)} -> {_q(b)} [id={_q(a + "--" + b)}, style=dashed, color="#c0392b", '
                           f'fontcolor="#c0392b", label={_q(label)}, constraint=false, penwidth=1.5];')
        # host-gw: the overlay routes go straight to the other host over the underlay
        tunnel_names = {t.name for t in host.tunnels}
        for r in host.routes:
            other = addresses.get(r.gateway or "")
            if r.role == "overlay" and r.dev not in tunnel_names and other is not None and r.dev is not None:
                pair = tuple(sorted((node_id("iface", host.name, r.dev), node_id("iface", other.name, r.dev))))
                routed.setdefault(pair, []).append(f"{host.name}: {r.dst} via {r.gateway}")  # type: ignore[arg-type]
    for host in topology.hosts:
        for session in host.bgp:
            other = addresses.get(session.neighbor or "")
            if other is None or other is host or not other.bgp:
                continue
            a, b = node_id("bgp", host.name), node_id("bgp", other.name)
            if frozenset((a, b)) in drawn:
                continue
            drawn.add(frozenset((a, b)))
            up = session.state == "Established"
            out.append(f'  {_q(a)} -> {_q(b)} [id={_q(a + "--" + b)}, style={"solid" if up else "dashed"}, '
                       f'color="{"#9673a6" if up else "#c62828"}", label={_q("BGP " + session.state)}, '
                       'constraint=false];')
    # Direct routes between hosts: host-gw programs them itself, the bgp backend learns them from BIRD.
    routes_by = {"host-gw": "host-gw routes",
                 "bgp": "routes learned over BGP"}.get(topology.backend or "", "routes")
    for (a, b), lines in routed.items():
        label = "\\n".join([routes_by] + sorted(lines))
        out.append(f'  {_q(a)} -> {_q(b)} [id={_q(a + "--" + b)}, style=dashed, color="#2e7d32", '
                   f'fontcolor="#2e7d32", label="{label}", constraint=false];')
    out.append("}")
    return "\n".join(out) + "\n"


def _overlay_tunnels(topology: Topology, addresses: dict[str, Host], drawn: set[frozenset[str]]) -> list[str]:
    """An overlay's vxlan to the same network's vxlan on each host its forwarding entries name."""
    out = []
    for host in topology.hosts:
        for o in host.overlays:
            for vtep in sorted({p.vtep for p in o.peers}):
                other = addresses.get(vtep)
                theirs = next((x for x in other.overlays if x.id == o.id), None) if other and other is not host else None
                if other is None or theirs is None:
                    continue
                a, b = overlay_ids(host.name, o)[2], overlay_ids(other.name, theirs)[2]
                if frozenset((a, b)) in drawn:
                    continue
                drawn.add(frozenset((a, b)))
                out.append(f'  {_q(a)} -> {_q(b)} [id={_q(a + "--" + b)}, style=dashed, color="#c0392b", '
                           f'fontcolor="#c0392b", label={_q(f"overlay {o.network}: VNI {o.vxlan.vni} UDP {o.vxlan.port}")}, '
                           'constraint=false, penwidth=1.5];')
    return out


def _overlay(host: Host, o: Overlay) -> list[str]:
    """The overlay's namespace as a cluster inside the host: br0 and vxlan0 (with its remote endpoints);
    the vxlan's socket is on the host's underlay interface."""
    cluster, bid, tid = overlay_ids(host.name, o)
    t = o.vxlan
    peers = [f"{p.address or '?'} {p.mac} @ {p.vtep}" for p in o.peers]
    vxlan_label = _label(t.name, f"VNI {t.vni} UDP {t.port}", f"local {t.local or '?'}", *peers)
    out = [f"    subgraph {_q('cluster_' + cluster)} {{",
           f'      id={_q(cluster)}; label={_label(f"overlay {o.network} (netns)", o.subnet or "")}; '
           'style="rounded,dashed,filled"; fillcolor="#fbeee6"; color="#b85450";',
           f'      {_q(bid)} [id={_q(bid)}, label={_label(o.bridge, f"mtu {o.mtu}")}, fillcolor="#dae8fc", '
           'color="#6c8ebf"];',
           f'      {_q(tid)} [id={_q(tid)}, label={vxlan_label}, '
           'fillcolor="#f8cecc", color="#b85450"];',
           f'      {_q(bid)} -> {_q(tid)} [id={_q(bid + "--" + tid)}];',
           "    }"]
    if t.underlay:
        iid = node_id("iface", host.name, t.underlay)
        out.append(f'    {_q(tid)} -> {_q(iid)} [id={_q(tid + "--" + iid)}, color="#b85450", label="UDP socket"];')
    return out


def _host(host: Host) -> list[str]:
    hid = node_id("host", host.name)
    addr = ", ".join(a for i in host.interfaces for a in i.addresses)
    out = [f"  subgraph {_q('cluster_' + hid)} {{",
           f'    id={_q(hid)}; label={_label("host " + host.name, addr)}; style="rounded,filled"; '
           'fillcolor="#f4f7fb"; color="#6c8ebf";']
    for c in host.containers:
        cid = node_id("container", host.name, c.name)
        lines = [f"{e.ifname} {e.address or ''} {e.mac}" for e in c.endpoints]
        if c.network_mode in ("host", "none") or c.network_mode.startswith("container:"):
            lines.append(f"--network {c.network_mode}")
        lines += [f"{p.host_ip}:{p.host_port} → {p.container_port}/{p.protocol}" for p in c.ports]
        out.append(f'    {_q(cid)} [id={_q(cid)}, label={_label(c.name, *lines)}, fillcolor="#fff2cc", '
                   'color="#d6b656"];')
    for b in host.bridges:
        bid = node_id("bridge", host.name, b.name)
        sub = " ".join(b.addresses) + (f" [{b.network}]" if b.network else "")
        out.append(f'    {_q(bid)} [id={_q(bid)}, label={_label("bridge " + b.name, sub)}, fillcolor="#dae8fc", '
                   'color="#6c8ebf", shape=box];')
    for t in host.tunnels:
        tid = node_id("tunnel", host.name, t.name)
        sub = f"VNI {t.vni} UDP {t.port}" if t.kind == "vxlan" else t.kind
        out.append(f'    {_q(tid)} [id={_q(tid)}, label={_label(t.name, sub, " ".join(t.addresses))}, '
                   'fillcolor="#f8cecc", color="#b85450", shape=box];')
    for o in host.overlays:
        out.extend(_overlay(host, o))
    for i in host.interfaces:
        iid = node_id("iface", host.name, i.name)
        out.append(f'    {_q(iid)} [id={_q(iid)}, label={_label(i.name, " ".join(i.addresses))}, '
                   'fillcolor="#d5e8d4", color="#82b366"];')
    for c in host.containers:
        cid = node_id("container", host.name, c.name)
        for e in c.endpoints:
            overlay = next((o for o in host.overlays if o.network == e.overlay), None)
            if overlay is not None:
                bid = overlay_ids(host.name, overlay)[1]
                out.append(f'    {_q(cid)} -> {_q(bid)} [id={_q(cid + "--" + bid)}, '
                           f'label={_q(f"{e.ifname} ⇄ {e.host_ifname}")}];')
            elif e.bridge:
                bid = node_id("bridge", host.name, e.bridge)
                out.append(f'    {_q(cid)} -> {_q(bid)} [id={_q(cid + "--" + bid)}, '
                           f'label={_q(f"{e.ifname} ⇄ {e.host_ifname}")}];')
            elif e.kind == "macvlan" and e.host_ifname:
                iid = node_id("iface", host.name, e.host_ifname)
                out.append(f'    {_q(cid)} -> {_q(iid)} [id={_q(cid + "--" + iid)}, label="macvlan", style=dotted];')
        if c.network_mode.startswith("container:"):
            other = node_id("container", host.name, c.network_mode.split(":", 1)[1])
            out.append(f'    {_q(cid)} -> {_q(other)} [id={_q(cid + "--" + other)}, style=dotted, '
                       'label="same netns"];')
    # the host's stack joins bridges, tunnels and its own interface (it routes between them)
    uplink = host.interfaces[0].name if host.interfaces else None
    if uplink:
        iid = node_id("iface", host.name, uplink)
        for b in host.bridges:
            bid = node_id("bridge", host.name, b.name)
            out.append(f'    {_q(bid)} -> {_q(iid)} [id={_q(bid + "--" + iid)}, style=dotted, color="#999999", '
                       'label="routing"];')
        for t in host.tunnels:
            tid = node_id("tunnel", host.name, t.name)
            out.append(f'    {_q(tid)} -> {_q(iid)} [id={_q(tid + "--" + iid)}, color="#b85450"];')
    if host.bgp:
        gid = node_id("bgp", host.name)
        local = next((b.local_as for b in host.bgp if b.local_as), None)
        lines = [f"{b.neighbor} AS {b.neighbor_as}: {b.state}" for b in host.bgp]
        out.append(f'    {_q(gid)} [id={_q(gid)}, label={_label("BIRD" + (f" AS {local}" if local else ""), *lines)}, '
                   'fillcolor="#e1d5e7", color="#9673a6"];')
    out.append("  }")
    return out


def render(topology: Topology, fmt: str = "svg") -> bytes:
    """Lay the topology out with dot; ``fmt`` is any of dot's output formats (svg, png)."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizMissing("graphviz's `dot` is not installed (setup.sh installs it)")
    proc = subprocess.run([dot, f"-T{fmt}"], input=to_dot(topology).encode(), capture_output=True,
                          timeout=DOT_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout
