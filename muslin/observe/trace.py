"""`muslin trace SRC DST`: send one real probe and tell its path from kernel evidence.

Every namespace of the topology (hosts, containers with a namespace of their own, the underlay switch)
gets a temporary nf_tables trace table (``muslin.kernel.nftrace``) that marks only the probe, and a
netlink listener for the trace events. The probe goes out from SRC's namespace; the events say, per
namespace, which hooks it passed, with which devices and headers, and which rules decided it. The
tables are removed in a ``finally`` that also runs on SIGINT/SIGTERM/SIGHUP.

Namespaces are put in path order by the probe's TTL (each routing hop takes one), outer tunnel packets
by the TTL of the packet they carry, and within one TTL: where it starts, bridged transit, routed
transit, where it is delivered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from muslin.kernel import nftrace, probe, snapshot
from muslin.kernel.nftrace import Packet, TraceEvent

from .model import Container, Host, Overlay, Topology
from .render_svg import node_id, overlay_ids
from .topology import HostSpec, collect, host_address

REPLY_TIMEOUT = 0.8  # seconds the probe waits for an answer (below TCP's first SYN retransmission)
SETTLE = 0.15  # seconds of quiet after the answer (or its absence) before the events are read
FLANNEL_UDP_PORT = 8285
IPTABLES_TABLES = ("raw", "mangle", "nat", "filter")
NAT_TARGETS = ("-j DNAT", "-j SNAT", "-j MASQUERADE", "-j REDIRECT")
# The same statements in nft's text (muslind's nftables backend): a word, not a set's name (@masquerade-subnets).
NFT_NAT = re.compile(r"(?:^|\s)(?:dnat|snat|masquerade|redirect)(?:\s|$)")


class TraceError(RuntimeError):
    """SRC or DST does not name anything the trace can use."""


@dataclass(frozen=True)
class Place:
    label: str  # what the user reads: "web (container on node1)", "node2", "10.1.2.3"
    address: str
    ns: str | None  # the namespace the probe leaves from (SRC) or arrives in (DST); None: outside
    node: str | None  # the drawing's id for it


@dataclass(frozen=True)
class Watched:
    ns: str
    label: str
    host: Host | None
    container: Container | None
    switch: bool = False
    overlay: Overlay | None = None  # an overlay network's namespace on ``host``


@dataclass
class Step:
    kind: str  # hook, rule, nat, route, encap, drop, deliver
    text: str


@dataclass
class Hop:
    where: str
    outer: bool  # the packet here is a tunnel's outer packet carrying the probe
    packet: str
    iif: str | None
    oif: str | None
    steps: list[Step] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)


@dataclass
class TraceResult:
    src: str
    dst: str
    protocol: str
    port: int | None
    ident: int
    hops: list[Hop]
    arrived: bool
    verdict: str
    reply: str
    path: list[str]  # drawing ids along the way
    elapsed_ms: float


# -- resolving SRC and DST ----------------------------------------------------------------------------
def _container_ns(host: Host, c: Container) -> str | None:
    if c.network_mode == "host":
        return host.netns
    if c.network_mode.startswith("container:"):
        other = next((o for o in host.containers if o.name == c.network_mode.split(":", 1)[1]), None)
        return _container_ns(host, other) if other else None
    return f"/proc/{c.pid}/ns/net" if c.pid else None


def _container_address(host: Host, c: Container, prefer: set[str] = frozenset()) -> str | None:
    if c.network_mode == "host":
        found = host_address(host)
        return str(found) if found else None
    if c.network_mode.startswith("container:"):
        other = next((o for o in host.containers if o.name == c.network_mode.split(":", 1)[1]), None)
        return _container_address(host, other, prefer) if other else None
    ordered = sorted(c.endpoints, key=lambda e: e.network not in prefer)
    for e in ordered:
        if e.address:
            return e.address.split("/")[0]
    return None


def resolve(topology: Topology, name: str, prefer: set[str] = frozenset(), as_source: bool = False) -> Place:
    found = topology.container(name)
    if found:
        host, c = found
        ns = _container_ns(host, c)
        address = _container_address(host, c, prefer)
        if ns is None or address is None and not as_source:  # a source's own address is the kernel's choice
            raise TraceError(f"container {c.name} has no network to trace ({c.network_mode})")
        return Place(f"{c.name} (container on {host.name})", address or "", ns, node_id("container", host.name, c.name))
    host = topology.host(name)
    if host:
        address = host_address(host)
        if address is None and not as_source:
            raise TraceError(f"host {host.name} has no address of its own")
        return Place(host.name, str(address or ""), host.netns, node_id("host", host.name))
    try:
        ip = IPv4Address(name)
    except ValueError:
        raise TraceError(f"{name!r} is no container, host or IPv4 address here") from None
    for host in topology.hosts:
        for c in host.containers:
            if any(e.address and e.address.split("/")[0] == str(ip) for e in c.endpoints):
                return dataclasses.replace(resolve(topology, c.name), address=str(ip))
        if any(IPv4Interface(a).ip == ip for i in host.interfaces for a in i.addresses):
            return Place(host.name, str(ip), host.netns, node_id("host", host.name))
    if as_source:
        raise TraceError(f"{ip} is not an address of any host or container here")
    return Place(str(ip), str(ip), None, None)


def _networks_of(topology: Topology, name: str) -> set[str]:
    found = topology.container(name)
    return {e.network for e in found[1].endpoints} if found else set()


def watched_namespaces(topology: Topology) -> list[Watched]:
    out: list[Watched] = []
    seen: set[int] = set()

    def add(w: Watched) -> None:
        try:
            inode = snapshot.inode_of(w.ns)
        except OSError:
            return  # a container that exited meanwhile
        if inode not in seen:
            seen.add(inode)
            out.append(w)

    for host in topology.hosts:
        add(Watched(host.netns, host.name, host, None))
        for c in host.containers:
            if c.pid and c.network_mode not in ("host", "none") and not c.network_mode.startswith("container:"):
                add(Watched(f"/proc/{c.pid}/ns/net", c.name, host, c))
        for o in host.overlays:
            add(Watched(o.netns, f"overlay {o.network} on {host.name}", host, None, overlay=o))
    if topology.underlay:
        add(Watched(topology.underlay.netns, "underlay switch", None, None, switch=True))
    return out


# -- the run ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _interrupts_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP end the trace like Ctrl-C does: through the finally that removes the tables."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(hosts: list[HostSpec], src: str, dst: str, protocol: str = "icmp", port: int | None = None,
        overlay: str | None = None, underlay: tuple[str, str] | None = None,
        topology: Topology | None = None) -> TraceResult:
    started = time.monotonic()
    if protocol in ("tcp", "udp") and not (port and 0 < port < 65536):
        raise TraceError(f"--{protocol} needs a port between 1 and 65535")
    topology = topology or collect(hosts, underlay=underlay, overlay=overlay)
    source = resolve(topology, src, _networks_of(topology, dst), as_source=True)
    target = resolve(topology, dst, _networks_of(topology, src))
    assert source.ns is not None
    ident = probe.pick_ident(avoid=port)
    vxlan_ports = tuple(sorted({t.port for h in topology.hosts for t in h.tunnels if t.kind == "vxlan" and t.port}
                               | {o.vxlan.port for h in topology.hosts for o in h.overlays if o.vxlan.port}))
    udp_ports = (FLANNEL_UDP_PORT,) if any(t.kind == "tun" for h in topology.hosts for t in h.tunnels) else ()
    spec = nftrace.Probe(protocol, ident, vxlan_ports, udp_ports)
    watched = watched_namespaces(topology)
    name = nftrace.table_name(f"{ident}")
    listeners: dict[str, nftrace.TraceListener] = {}
    events: dict[str, list[TraceEvent]] = {}
    with _interrupts_raise(), ThreadPoolExecutor(max_workers=min(8, len(watched))) as pool:
        installs: list[Future] = []
        try:
            for w in watched:
                listeners[w.ns] = nftrace.TraceListener(w.ns)

            def install(ns: str) -> None:
                nftrace.remove_orphans(ns)
                nftrace.add_table(ns, name, spec)

            installs = [pool.submit(install, w.ns) for w in watched]
            for future in installs:
                future.result()
            sender = probe.Sender(source.ns, protocol, ident)
            try:
                outcome = sender.send(target.address, port, REPLY_TIMEOUT)
                _settle(list(listeners.values()), SETTLE)
            finally:
                sender.close()
            events = {ns: list(listener.events) for ns, listener in listeners.items()}
        finally:
            # Interrupted while installing: an install still running would add its table after a
            # removal that ran beside it. Pending ones are cancelled, running ones awaited, then every
            # namespace's table is removed (idempotent, also where none was added).
            for future in installs:
                future.cancel()
            wait(installs)
            list(pool.map(lambda w: nftrace.delete_table(w.ns, name), watched))
            for listener in listeners.values():
                listener.close()
    result = analyse(topology, watched, events, source, target, protocol, port, ident, vxlan_ports, udp_ports)
    result.reply = outcome.text
    if not result.arrived and outcome.answered and protocol == "icmp" and target.ns is None:
        result.arrived, result.verdict = True, f"answered from outside the traced namespaces: {outcome.text}"
    result.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    return result


def _settle(listeners: list[nftrace.TraceListener], quiet: float) -> None:
    deadline = time.monotonic() + quiet
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select(listeners, [], [], remaining)
        for listener in readable:
            listener.drain()
    for listener in listeners:
        listener.drain()


# -- making sense of the events -----------------------------------------------------------------------
@dataclass
class _Segment:
    """One packet's passage through one namespace (one trace id, probe or outer packet)."""
    watched: Watched
    outer: bool
    order: int
    events: list[tuple[TraceEvent, Packet | None, int | None, int | None]] = field(default_factory=list)

    def hooks(self) -> list[str]:
        return [e.chain for e, *_ in self.events if e.table.startswith(nftrace.TABLE_PREFIX) and e.kind == "policy"]

    def first_packet(self) -> Packet | None:
        return next((p for _, p, *_ in self.events if p is not None), None)

    def last_packet(self) -> Packet | None:
        return next((p for _, p, *_ in reversed(self.events) if p is not None), None)


def _is_probe(packet: Packet, protocol: str, ident: int) -> bool:
    if protocol == "icmp":
        return packet.protocol == 1 and packet.icmp_id == ident
    return packet.proto_name == protocol and packet.sport == ident


def segments(watched: list[Watched], events: dict[str, list[TraceEvent]], protocol: str, ident: int) -> list[_Segment]:
    """Split each namespace's events into passages. Trace ids are not stable across hooks, but our
    prerouting and output chains come before any other table, so their first event opens a passage."""
    out: list[_Segment] = []
    order = 0
    for w in watched:
        seg: _Segment | None = None
        packet: Packet | None = None
        iif = oif = None
        for e in events.get(w.ns, []):
            if e.packet is not None:  # the first event of each hook carries the headers and devices
                packet, iif, oif = e.packet, e.iif, e.oif
                opens = e.table.startswith(nftrace.TABLE_PREFIX) and e.chain in ("prerouting", "output")
                outer = not _is_probe(packet, protocol, ident)
                if seg is None or opens or seg.outer != outer:
                    seg = _Segment(w, outer, order)
                    order += 1
                    out.append(seg)
            if seg is None:
                continue
            seg.events.append((e, e.packet, iif, oif))
    return out


def _sort_key(seg: _Segment) -> tuple:
    first = seg.first_packet()
    hooks = seg.hooks()
    if first is None:
        return (0, 0, seg.order)
    if "output" in hooks:
        phase = 0
    elif "input" in hooks:
        phase = 3
    elif seg.watched.overlay is not None:  # bridged, so the TTL does not tell: the sender's side first
        phase = 1 if _local_port(seg.watched.overlay, first.saddr) else 2
    else:
        last = seg.last_packet()
        phase = 2 if last is not None and last.ttl < first.ttl else 1  # routed after bridged
    return (-first.ttl, phase, seg.order)


def _exit_device(seg: _Segment) -> int | None:
    return next((o for _, p, _, o in reversed(seg.events) if p is not None and o), None)


def _entry_device(seg: _Segment) -> int | None:
    return next((i for _, p, i, _ in seg.events if p is not None and i), None)


def _local_port(overlay: Overlay, address: str) -> bool:
    return any(p.address and p.address.split("/")[0] == address for p in overlay.ports)


def _remote_peer(overlay: Overlay, address: str) -> str | None:
    """The VTEP behind which the overlay's kernel state (neighbour, then fdb) puts ``address``."""
    return next((p.vtep for p in overlay.peers if p.address == address), None)


def _leaves_by_tunnel(seg: _Segment, tunnels: dict[str, set[int]]) -> bool:
    if seg.watched.overlay is not None:
        # bridged: the hooks name br0 on both sides; the bridge sends to vxlan0 what lives behind a VTEP
        last = seg.last_packet()
        return last is not None and _remote_peer(seg.watched.overlay, last.daddr) is not None
    return _exit_device(seg) in tunnels.get(seg.watched.ns, set())


def _socket_ns(w: Watched) -> str:
    """Where a tunnel's outer packets are: an overlay's vxlan has its socket in the host's namespace."""
    return w.host.netns if w.overlay is not None and w.host is not None else w.ns


def ordered(segs: list[_Segment], tunnels: dict[str, set[int]]) -> list[_Segment]:
    """The probe's own passages in TTL order; between one that leaves by a tunnel device and the next,
    which comes in by one, the outer packets: sent by the first host, across the switch, received by
    the second (matched by the outer addresses)."""
    inner = sorted((s for s in segs if not s.outer), key=_sort_key)
    outer = [s for s in segs if s.outer and s.first_packet() is not None]
    out: list[_Segment] = []
    for n, seg in enumerate(inner):
        out.append(seg)
        following = inner[n + 1] if n + 1 < len(inner) else None
        if not _leaves_by_tunnel(seg, tunnels):
            continue
        sent = [o for o in outer if o.watched.ns == _socket_ns(seg.watched) and "output" in o.hooks()]
        if not sent:
            continue
        first = sent[0].first_packet()
        assert first is not None
        crossing = [o for o in outer if o is not sent[0] and (o.first_packet().saddr, o.first_packet().daddr)  # type: ignore[union-attr]
                    == (first.saddr, first.daddr)]
        received = [o for o in crossing if "input" in o.hooks()
                    and (following is None or o.watched.ns == _socket_ns(following.watched))]
        out.extend([sent[0]] + [o for o in crossing if o not in received] + received[:1])
    return out


def analyse(topology: Topology, watched: list[Watched], events: dict[str, list[TraceEvent]], source: Place,
            target: Place, protocol: str, port: int | None, ident: int, vxlan_ports: tuple[int, ...],
            udp_ports: tuple[int, ...]) -> TraceResult:
    names = {w.ns: _link_names(w.ns) for w in watched}
    tunnels = {ns: {i for i, link in links.items() if link.kind in ("vxlan", "tun")} for ns, links in names.items()}
    segs = ordered(segments(watched, events, protocol, ident), tunnels)
    rules = _rule_texts(segs)
    hops: list[Hop] = []
    arrived, verdict = False, ""
    dropped = False
    for seg in segs:
        hop = _hop(topology, seg, names[seg.watched.ns], rules, protocol, vxlan_ports, udp_ports)
        hops.append(hop)
        drop = next((s for s in hop.steps if s.kind == "drop"), None)
        if drop and not dropped and not arrived:
            dropped, verdict = True, f"dropped in {seg.watched.label}: {drop.text}"
        if not seg.outer and "input" in seg.hooks() and not arrived and not dropped:
            arrived = True
            first = seg.first_packet()
            verdict = f"arrived at {seg.watched.label}" + (f" ({first.daddr})" if first else "")
    if not arrived and not dropped:
        verdict = _lost(segs, names, source, target)
    path = _path(hops, source, target if arrived else None)
    return TraceResult(src=source.label, dst=target.label, protocol=protocol, port=port, ident=ident, hops=hops,
                       arrived=arrived, verdict=verdict, reply="", path=path, elapsed_ms=0.0)


def _link_names(ns: str) -> dict[int, snapshot.Link]:
    try:
        return {link.index: link for link in snapshot.read(ns).links}
    except OSError:
        return {}


def _rule_texts(segs: list[_Segment]) -> dict[tuple[str, str, str, int], str]:
    """The text of every rule the events name: iptables' for rules iptables-nft wrote, nft's otherwise."""
    wanted: dict[tuple[str, str], set[tuple[str, int]]] = {}
    for seg in segs:
        for e, *_ in seg.events:
            if e.handle is not None and not e.table.startswith(nftrace.TABLE_PREFIX):
                wanted.setdefault((seg.watched.ns, e.table), set()).add((e.chain, e.handle))
    out: dict[tuple[str, str, str, int], str] = {}
    for (ns, table), rules in wanted.items():
        try:
            found = nftrace.iptables_rules(ns, table, {c for c, _ in rules}) if table in IPTABLES_TABLES else {}
            if not rules <= found.keys():
                found = {**nftrace.nft_rules(ns, table), **found}
        except (OSError, RuntimeError):
            continue  # a namespace gone meanwhile: the rule shows by its handle
        for (chain, handle), text in found.items():
            out[(ns, table, chain, handle)] = text
    return out


def _is_nat(text: str) -> bool:
    return any(t in text for t in NAT_TARGETS) or NFT_NAT.search(text) is not None


def _hop(topology: Topology, seg: _Segment, links: dict[int, snapshot.Link],
         rules: dict[tuple[str, str, str, int], str], protocol: str, vxlan_ports: tuple[int, ...],
         udp_ports: tuple[int, ...]) -> Hop:
    first, last = seg.first_packet(), seg.last_packet()
    name: Callable[[int | None], str | None] = lambda i: links[i].name if i in links else (str(i) if i else None)  # noqa: E731
    # A packet made here (output hook) has no input device; postrouting's "in" is then the device the
    # packet was last on, for a tunnel's outer packet a device of another namespace: not shown.
    made_here = "output" in seg.hooks()
    iif = None if made_here else next((name(i) for e, p, i, o in seg.events if p is not None and i), None)
    oif = next((name(o) for e, p, i, o in reversed(seg.events) if p is not None and o), None)
    hop = Hop(where=seg.watched.label + (" (outer packet)" if seg.outer else ""), outer=seg.outer,
              packet=first.describe() if first else "", iif=iif, oif=oif)
    if seg.outer and first is not None:
        if first.dport in vxlan_ports and len(first.transport) >= 16:
            vni = int.from_bytes(first.transport[12:15], "big")
            hop.steps.append(Step("encap", f"vxlan VNI {vni}, outer udp {first.saddr}:{first.sport} → "
                                           f"{first.daddr}:{first.dport}"))
        elif first.dport in udp_ports:
            hop.steps.append(Step("encap", f"flannel udp, outer udp {first.saddr}:{first.sport} → "
                                           f"{first.daddr}:{first.dport}"))
    for e, packet, i, o in seg.events:
        i = None if made_here else i
        if e.table.startswith(nftrace.TABLE_PREFIX):
            if e.kind == "policy":
                devices = " ".join(x for x in (f"in {name(i)}" if i else "", f"out {name(o)}" if o else "") if x)
                hop.steps.append(Step("hook", f"{e.chain}" + (f" ({devices})" if devices else "")
                                      + (f": {packet.describe()}" if packet else "")))
            continue
        if e.kind == "rule" and e.handle is None:
            continue  # the end of a rule list that decided nothing
        if e.kind == "rule":
            text = rules.get((seg.watched.ns, e.table, e.chain, e.handle or 0)) or f"rule handle {e.handle}"
            what = e.verdict + (f" {e.target}" if e.target else "") if e.verdict else ""
            kind = "drop" if e.verdict == "drop" else "nat" if _is_nat(text) else "rule"
            hop.steps.append(Step(kind, f"{e.table} {e.chain}: {text}  → {what}"))
        elif e.kind == "policy":
            kind = "drop" if e.verdict == "drop" else "rule"
            hop.steps.append(Step(kind, f"{e.table} {e.chain}: policy {(e.verdict or '').upper()}"))
    host_bridges = seg.watched.host.bridges if seg.watched.host and seg.watched.container is None else ()
    bridge = next((b for b in host_bridges if b.name == iif == oif), None)
    overlay = seg.watched.overlay
    if overlay is not None and not seg.outer:
        hop.steps[:0] = _overlay_steps(topology, overlay, first, last, iif, oif)
        bridge = None  # the overlay's br0, not one of the host's
    elif bridge is not None and not seg.outer:
        hop.steps.insert(0, Step("bridge", f"bridged by {bridge.name} (iif and oif are the bridge: "
                                           "L2 between two of its ports, seen through br_netfilter)"))
    if first and last and not seg.outer:
        if (first.daddr, first.dport) != (last.daddr, last.dport):
            to = _who(topology, last.daddr)
            hop.steps.append(Step("nat", f"DNAT {_hostport(first.daddr, first.dport)} → "
                                         f"{_hostport(last.daddr, last.dport)}" + (f" ({to})" if to else "")))
        if (first.saddr, first.sport) != (last.saddr, last.sport):
            hop.steps.append(Step("nat", f"SNAT {_hostport(first.saddr, first.sport)} → "
                                         f"{_hostport(last.saddr, last.sport)}"))
    local = "output" in seg.hooks()
    routed = (not seg.watched.switch and bridge is None and overlay is None and "input" not in seg.hooks()
              and iif != "lo")
    if not seg.outer and last is not None and (local or (iif and routed)):
        # routing comes after DNAT (prerouting) and before SNAT (postrouting)
        choice = snapshot.route_get(seg.watched.ns, IPv4Address(last.daddr), IPv4Address(first.saddr),  # type: ignore[union-attr]
                                    None if local else iif)
        hop.steps.insert(0, Step("route", _route_text(choice)))
    if "input" in seg.hooks() and not seg.outer:
        hop.steps.append(Step("deliver", f"delivered to {seg.watched.label}'s own stack"))
    hop.nodes = _nodes(topology, seg.watched, iif, oif, first, last)
    return hop


def _overlay_steps(topology: Topology, overlay: Overlay, first: Packet | None, last: Packet | None,
                   iif: str | None, oif: str | None) -> list[Step]:
    """How the overlay's namespace passed the probe on, from its kernel state: the bridge, and which of
    its ports: a local container's veth, or vxlan0 to the VTEP its forwarding entry names."""
    t = overlay.vxlan
    steps = [Step("bridge", f"bridged by {overlay.bridge} in overlay {overlay.network}'s namespace (iif and oif "
                            f"are {iif or '?'}: L2 between two of its ports, seen through br_netfilter)")]
    if first is not None and (vtep := _remote_peer(overlay, first.saddr)) is not None:
        steps.insert(0, Step("encap", f"came in by {t.name}: VXLAN VNI {t.vni} from VTEP {vtep}"
                                      f"{_host_named(topology, vtep)}, decapsulated into {overlay.bridge}"))
    if last is None:
        return steps
    peer = next((p for p in overlay.peers if p.address == last.daddr), None)
    port = next((p for p in overlay.ports if p.address and p.address.split("/")[0] == last.daddr), None)
    if peer is not None:
        sender = (f", from {t.local}" if t.local else "") + (f" over {t.underlay}" if t.underlay else "")
        steps.append(Step("encap", f"{overlay.bridge} → {t.name}: {last.daddr} is {peer.mac} (permanent neighbour), "
                                   f"fdb {peer.mac} dst {peer.vtep}{_host_named(topology, peer.vtep)}: VXLAN VNI "
                                   f"{t.vni}, UDP {t.port}{sender}"))
    elif port is not None:
        steps.append(Step("bridge", f"{overlay.bridge} → {port.name} ⇄ {port.container}:{port.ifname} "
                                    f"({port.mac})"))
    else:
        steps.append(Step("bridge", f"{last.daddr} is neither a local endpoint nor a remote one of overlay "
                                    f"{overlay.network} as collected (no port, neighbour or fdb entry for it)"))
    return steps


def _host_named(topology: Topology, address: str) -> str:
    for host in topology.hosts:
        if any(a.split("/")[0] == address for i in host.interfaces for a in i.addresses):
            return f" ({host.name})"
    return ""


def _hostport(address: str, port: int | None) -> str:
    return f"{address}:{port}" if port is not None else address


def _route_text(choice: snapshot.RouteChoice) -> str:
    if choice.error or choice.kind != "unicast" and choice.kind != "local":
        return f"no route to {choice.dst} ({choice.kind}{': ' + choice.error if choice.error else ''})"
    return (f"route to {choice.dst}" + (f" via {choice.gateway}" if choice.gateway else "")
            + (f" dev {choice.dev}" if choice.dev else "") + (f" src {choice.src}" if choice.src else "")
            + (" (local)" if choice.kind == "local" else ""))


def _who(topology: Topology, address: str) -> str | None:
    for host in topology.hosts:
        for c in host.containers:
            if any(e.address and e.address.split("/")[0] == address for e in c.endpoints):
                return f"container {c.name} on {host.name}"
    return None


def _nodes(topology: Topology, w: Watched, iif: str | None, oif: str | None, first: Packet | None = None,
           last: Packet | None = None) -> list[str]:
    if w.switch and topology.underlay:
        return [node_id("switch", topology.underlay.bridge)]
    if w.container is not None and w.host is not None:
        return [node_id("container", w.host.name, w.container.name)]
    if w.overlay is not None and w.host is not None:
        _, bridge_id, vxlan_id = overlay_ids(w.host.name, w.overlay)
        out = [bridge_id]
        if first is not None and _remote_peer(w.overlay, first.saddr):
            out.insert(0, vxlan_id)
        if last is not None and _remote_peer(w.overlay, last.daddr):
            out.append(vxlan_id)
        return out
    host = w.host
    if host is None:
        return []
    out = []
    for dev in (iif, oif):
        if dev is None:
            continue
        bridge = next((b.name for b in host.bridges if b.name == dev or dev in b.ports), None)
        if bridge:
            out.append(node_id("bridge", host.name, bridge))
        elif any(t.name == dev for t in host.tunnels):
            out.append(node_id("tunnel", host.name, dev))
        elif any(i.name == dev for i in host.interfaces):
            out.append(node_id("iface", host.name, dev))
    return out or [node_id("host", host.name)]


def _path(hops: list[Hop], source: Place, target: Place | None) -> list[str]:
    out: list[str] = []
    for node in ([source.node] if source.node else []) + [n for h in hops for n in h.nodes]:
        if not out or out[-1] != node:
            out.append(node)
    return out


def _lost(segs: list[_Segment], names: dict[str, dict[int, snapshot.Link]], source: Place, target: Place) -> str:
    """No delivery and no rule dropped it: ask the kernel for the route where it was seen last."""
    probes = [s for s in segs if not s.outer]
    if not probes:
        choice = snapshot.route_get(source.ns or "", IPv4Address(target.address))
        if choice.kind not in ("unicast", "local"):
            return f"not sent: {source.label} has no route to {target.address} ({choice.error or choice.kind})"
        return f"never seen leaving {source.label}"
    last = probes[-1]
    packet = last.last_packet()
    if packet is not None:
        iif = next((names[last.watched.ns].get(i) for _, p, i, _ in last.events if p is not None and i), None)
        choice = snapshot.route_get(last.watched.ns, IPv4Address(packet.daddr), IPv4Address(packet.saddr),
                                    iif.name if iif else None)
        if choice.kind not in ("unicast", "local"):
            return f"dropped in {last.watched.label}: no route to {packet.daddr} ({choice.error or choice.kind})"
    hooks = last.hooks()
    return f"lost after {last.watched.label} (last seen at its {hooks[-1] if hooks else 'first'} hook)"


# -- output -------------------------------------------------------------------------------------------
def to_json(result: TraceResult) -> str:
    return json.dumps(dataclasses.asdict(result), indent=2)


def render_text(result: TraceResult) -> str:
    port = f" port {result.port}" if result.port else ""
    lines = [f"trace {result.protocol}{port} from {result.src} to {result.dst} (probe id {result.ident})"]
    for n, hop in enumerate(result.hops, 1):
        devices = " ".join(x for x in (f"in {hop.iif}" if hop.iif else "", f"out {hop.oif}" if hop.oif else "") if x)
        lines.append(f"{n:2}. {hop.where}" + (f"  [{devices}]" if devices else ""))
        if hop.packet:
            lines.append(f"      packet {hop.packet}")
        for step in hop.steps:
            mark = {"drop": "✗", "nat": "⇄", "encap": "⧉", "route": "→", "deliver": "✓"}.get(step.kind, "·")
            lines.append(f"      {mark} {step.text}")
    lines.append(f"reply: {result.reply}")
    lines.append(("ARRIVED: " if result.arrived else "NOT DELIVERED: ") + result.verdict)
    lines.append(f"({result.elapsed_ms:.0f} ms)")
    return "\n".join(lines) + "\n"
