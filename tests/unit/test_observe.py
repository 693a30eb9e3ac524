"""Pure logic of the observer: the trace table's matches, trace event decoding, the order of passages,
and the drawing's graph."""

from __future__ import annotations

import socket
import struct
from dataclasses import replace

import pytest

from muslin.kernel import nftrace
from muslin.kernel.nftrace import Packet, Probe, TraceEvent
from muslin.observe import overlays, render_svg, render_text, trace
from muslin.observe.model import (
    Bridge,
    Container,
    Endpoint,
    FdbPeer,
    Host,
    Interface,
    Overlay,
    OverlayPeer,
    OverlayPort,
    Route,
    Topology,
    Tunnel,
    Underlay,
)


def test_probe_matches_only_the_probe_and_its_tunnelled_copies() -> None:
    assert Probe("udp", 40000).matches() == ["udp sport 40000"]
    tcp = Probe("tcp", 40000, vxlan_ports=(8472,), flannel_udp_ports=(8285,)).matches()
    assert tcp[0] == "tcp sport 40000 tcp flags & (syn | ack) == syn"
    # behind UDP (8) + VXLAN (8) + Ethernet (14) + IPv4 (20): the inner source port at bit 400
    assert tcp[1] == "udp dport 8472 @th,400,16 40000 @th,504,8 & 0x12 == 0x02"
    assert tcp[2] == "udp dport 8285 @th,224,16 40000 @th,328,8 & 0x12 == 0x02"
    icmp = Probe("icmp", 555, vxlan_ports=(4789,)).matches()
    assert icmp == ["icmp type echo-request icmp id 555", "udp dport 4789 @th,400,8 8 @th,432,16 555"]


def test_ruleset_marks_first_and_watches_last() -> None:
    text = nftrace.ruleset("muslin-trace-1-2", Probe("udp", 40000))
    assert text.startswith("table ip muslin-trace-1-2 {")
    assert "type filter hook prerouting priority -350; policy accept;\n    udp sport 40000 meta nftrace set 1" in text
    assert "type filter hook output priority -350" in text
    for hook in ("forward", "input", "postrouting"):
        assert f"chain {hook} {{ type filter hook {hook} priority 500; policy accept; }}" in text


def _attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * ((4 - length % 4) % 4)


def test_trace_event_decoding() -> None:
    ip = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 63, 17, 0, 0]) + socket.inet_aton("10.0.0.1") + socket.inet_aton("10.0.0.2")
    udp = struct.pack(">HHHH", 40000, 53, 8, 0)
    body = b"\x02\x00\x00\x00" + b"".join([
        _attr(1, b"filter\0"), _attr(2, b"FORWARD\0"), _attr(3, struct.pack(">Q", 17)), _attr(4, struct.pack(">I", 3)),
        _attr(5 | 0x8000, _attr(1, struct.pack(">i", -3)) + _attr(2, b"MUSLIN-USER\0")),
        _attr(6, struct.pack(">I", 99)), _attr(8, ip), _attr(9, udp), _attr(10, struct.pack(">I", 4)),
        _attr(12, struct.pack(">I", 7))])
    event = nftrace.parse_event(body)
    assert event == TraceEvent(99, "filter", "FORWARD", "rule", 17, "jump", "MUSLIN-USER", 4, 7,
                               Packet("10.0.0.1", "10.0.0.2", 17, 63, 40000, 53, None, transport=udp))
    assert event.packet.describe() == "udp 10.0.0.1:40000 → 10.0.0.2:53 ttl 63"
    policy = nftrace.parse_event(b"\x02\x00\x00\x00" + _attr(1, b"filter\0") + _attr(2, b"INPUT\0")
                                 + _attr(4, struct.pack(">I", 1)) + _attr(16, struct.pack(">i", 0)))
    assert (policy.kind, policy.verdict, policy.packet) == ("policy", "drop", None)


def _watched(label: str) -> trace.Watched:
    return trace.Watched(ns=f"/run/netns/{label}", label=label, host=None, container=None)


def _pkt(ttl: int, proto: int = 1, saddr: str = "172.21.1.2", daddr: str = "172.21.2.2") -> Packet:
    return Packet(saddr, daddr, proto, ttl, icmp_id=7 if proto == 1 else None,
                  sport=None if proto == 1 else 50000, dport=None if proto == 1 else 8472)


def _events(table: str, hooks: list[tuple[str, Packet, int | None, int | None]]) -> list[TraceEvent]:
    return [TraceEvent(1, table, hook, "policy", None, "accept", None, iif, oif, packet) for hook, packet, iif, oif in hooks]


def test_passages_in_path_order_with_the_outer_packets_between() -> None:
    t = "muslin-trace-1-7"
    a, n1, sw, n2, b = (_watched(x) for x in ("a", "node1", "switch", "node2", "b"))
    outer = _pkt(64, 17, "192.168.255.154", "192.168.255.155")
    # listed in an order that has nothing to do with the path
    events = {
        b.ns: _events(t, [("prerouting", _pkt(62), 2, None), ("input", _pkt(62), 2, None)]),
        n2.ns: _events(t, [("prerouting", outer, 2, None), ("input", outer, 2, None),
                           ("prerouting", _pkt(63), 5, None), ("forward", _pkt(63), 5, 3),
                           ("postrouting", _pkt(62), 5, 3)]),
        sw.ns: _events(t, [("prerouting", outer, 1, None), ("forward", outer, 1, 1), ("postrouting", outer, None, 1)]),
        n1.ns: _events(t, [("prerouting", _pkt(64), 3, None), ("forward", _pkt(64), 3, 5),
                           ("postrouting", _pkt(63), 3, 5), ("output", outer, None, 2), ("postrouting", outer, 5, 2)]),
        a.ns: _events(t, [("output", _pkt(64), None, 2), ("postrouting", _pkt(64), None, 2)]),
    }
    segs = trace.segments([b, n2, sw, n1, a], events, "icmp", 7)
    tunnels = {n1.ns: {5}, n2.ns: {5}}
    order = [(s.watched.label, s.outer) for s in trace.ordered(segs, tunnels)]
    assert order == [("a", False), ("node1", False), ("node1", True), ("switch", True), ("node2", True),
                     ("node2", False), ("b", False)]


def two_hosts() -> Topology:
    def host(n: int, other: int) -> Host:
        me = f"192.168.255.{153 + n}"
        return Host(
            name=f"node{n}", netns=f"/run/netns/lab-node{n}", docker_host=None,
            interfaces=(Interface("eth0", (f"{me}/24",), "aa:bb:cc:dd:ee:0" + str(n), 1500),),
            bridges=(Bridge("muslin0", (f"172.21.{n}.1/24",), 1450, "bridge", ("veth0",)),),
            tunnels=(Tunnel("flannel.1", "vxlan", (f"172.21.{n}.0/32",), 1450, 1, 8472, me, "eth0",
                            (FdbPeer("02:00:00:00:00:0" + str(other), f"192.168.255.{153 + other}"),)),),
            routes=(Route(f"172.21.{other}.0/24", f"172.21.{other}.0", "flannel.1", None, "overlay"),),
            containers=(Container("c" * 64, f"bb-node{n}", "default", 100 + n, (
                Endpoint("bridge", "bridge", "eth0", f"172.21.{n}.2/24", "02:42:ac:15:01:02", f"172.21.{n}.1",
                         "veth", "veth0", "muslin0"),)),))
    return Topology(hosts=(host(1, 2), host(2, 1)), underlay=Underlay("/run/netns/lab-sw", "br0", "192.168.255.0/24",
                                                                      ("node1", "node2")), backend="vxlan")


def test_drawing_graph_has_hosts_tunnels_and_the_switch() -> None:
    dot = render_svg.to_dot(two_hosts())
    assert 'subgraph "cluster_host/node1"' in dot and 'subgraph "cluster_host/node2"' in dot
    assert '"container/node1/bb-node1" -> "bridge/node1/muslin0"' in dot
    assert '"iface/node2/eth0" -> "switch/br0"' in dot
    # one tunnel edge between the two hosts, not one per direction
    assert dot.count('label="vxlan VNI 1 UDP 8472"') == 1


@pytest.mark.parametrize("backend, label", [("host-gw", "host-gw routes"), ("bgp", "routes learned over BGP")])
def test_direct_routes_between_hosts_are_named_by_the_backend(backend: str, label: str) -> None:
    """No tunnel: each host routes the other's subnet via its underlay address, as host-gw and bgp do."""
    topology = two_hosts()
    hosts = tuple(replace(h, tunnels=(), routes=(Route(f"172.21.{3 - n}.0/24", f"192.168.255.{156 - n}", "eth0", None,
                                                       "overlay"),))
                  for n, h in enumerate(topology.hosts, start=1))
    dot = render_svg.to_dot(replace(topology, hosts=hosts, backend=backend))
    assert dot.count(f'label="{label}\\n') == 1
    assert "node1: 172.21.2.0/24 via 192.168.255.155" in dot


def test_text_tree() -> None:
    text = render_text.render(two_hosts())
    assert text.startswith("underlay 192.168.255.0/24 (switch br0 in /run/netns/lab-sw): node1, node2; "
                           "overlay backend vxlan\n")
    assert "├── tunnel flannel.1 vxlan VNI 1 UDP 8472 local 192.168.255.154 via eth0" in text
    assert "│   └── fdb 02:00:00:00:00:02 → 192.168.255.155" in text
    assert "        └── eth0 172.21.1.2/24 02:42:ac:15:01:02 [bridge]  veth ⇄ veth0 on muslin0" in text


def test_overlay_pins_are_read_from_the_engines_mount_table() -> None:
    mountinfo = "\n".join([
        "45 42 0:4 net:[4026532316] /run/netns/node1 rw shared:4 - nsfs nsfs rw",
        "50 48 0:4 net:[4026532541] /tmp/e1/run/overlay/228cf633885a rw shared:9 - nsfs nsfs rw",
        "51 49 0:4 net:[4026532529] /tmp/e\\0402/run/overlay/228cf633885a rw shared:10 - nsfs nsfs rw",
        "52 49 0:40 / /tmp/e1/run/overlay rw shared:11 - tmpfs tmpfs rw",
        "53 52 0:4 net:[4026532671] /tmp/e1/run/netns/4d898a060369 rw shared:12 - nsfs nsfs rw",
    ])
    pins = overlays.pins_in(mountinfo + "\n54 42 0:4 net:[4026532700] /var/run/docker/netns/1-228cf63388 rw - nsfs nsfs rw",
                            "/proc/7/root")
    assert pins == {
        "228cf633885a": ["/proc/7/root/tmp/e1/run/overlay/228cf633885a", "/proc/7/root/tmp/e 2/run/overlay/228cf633885a"],
        "4d898a060369": ["/proc/7/root/tmp/e1/run/netns/4d898a060369"],  # a container's: no network's name
        "1-228cf63388": ["/proc/7/root/var/run/docker/netns/1-228cf63388"]}
    # the network's own, muslind's and libnetwork's (<epoch>-<first 10 of the id>), not the container's
    assert overlays.pins_of(pins, "228cf633885a" + "0" * 52) == [
        "/proc/7/root/var/run/docker/netns/1-228cf63388", "/proc/7/root/tmp/e1/run/overlay/228cf633885a",
        "/proc/7/root/tmp/e 2/run/overlay/228cf633885a"]
    assert overlays.pins_of(pins, "ffff" * 16) == []


def overlay_hosts() -> Topology:
    """Two hosts sharing overlay ov1: a1 (10.0.9.2) on node1, b2 (10.0.9.3) on node2."""
    def host(n: int, other: int) -> Host:
        me, them = f"192.168.255.{153 + n}", f"192.168.255.{153 + other}"
        name = "a1" if n == 1 else "b2"
        mine, theirs = f"10.0.9.{1 + n}", f"10.0.9.{1 + other}"
        ov = Overlay("ov1", "228cf633885a" + "0" * 52, f"/tmp/e{n}/run/overlay/228cf633885a", "10.0.9.0/24", "br0", 1450,
                     Tunnel("vxlan0", "vxlan", (), 1450, 4096, 4789, me, "eth0", (FdbPeer(f"02:42:0a:00:09:0{1 + other}", them),)),
                     ports=(OverlayPort("veth1", name, "eth0", f"{mine}/24", f"02:42:0a:00:09:0{1 + n}"),),
                     peers=(OverlayPeer(them, f"02:42:0a:00:09:0{1 + other}", theirs),))
        return Host(
            name=f"node{n}", netns=f"/run/netns/lab-node{n}", docker_host=None,
            interfaces=(Interface("eth0", (f"{me}/24",), "aa:bb:cc:dd:ee:0" + str(n), 1500),),
            bridges=(Bridge("docker_gwbridge", ("172.18.0.1/16",), 1500, "docker_gwbridge", ("veth2",)),),
            containers=(Container("c" * 64, name, "ov1", 100 + n, (
                Endpoint("ov1", "overlay", "eth0", f"{mine}/24", f"02:42:0a:00:09:0{1 + n}", None, "veth", "veth1", None,
                         overlay="ov1"),
                Endpoint("docker_gwbridge", "bridge", "eth1", "172.18.0.2/16", "02:42:ac:12:00:02", "172.18.0.1",
                         "veth", "veth2", "docker_gwbridge"))),),
            overlays=(ov,))
    return Topology(hosts=(host(1, 2), host(2, 1)))


def test_overlay_text_and_drawing() -> None:
    topology = overlay_hosts()
    text = render_text.render(topology)
    assert "├── overlay ov1 10.0.9.0/24 (network 228cf633885a, netns /tmp/e1/run/overlay/228cf633885a)" in text
    assert "│   │   ├── veth1 ⇄ a1:eth0 10.0.9.2/24 02:42:0a:00:09:02" in text
    assert "│   ├── vxlan vxlan0 VNI 4096 UDP 4789 local 192.168.255.154 (socket on node1's eth0) mtu 1450" in text
    assert "│   │   └── 192.168.255.155 (node2): 02:42:0a:00:09:03 10.0.9.3" in text
    assert "│       └── a1:eth1 172.18.0.2/16 ⇄ veth2 on docker_gwbridge" in text
    dot = render_svg.to_dot(topology)
    assert 'subgraph "cluster_overlay/node1/ov1"' in dot
    assert '"container/node1/a1" -> "bridge/node1/ov1/br0"' in dot
    assert '"bridge/node1/ov1/br0" -> "tunnel/node1/ov1/vxlan0"' in dot
    assert '"tunnel/node1/ov1/vxlan0" -> "iface/node1/eth0"' in dot
    # one edge between the two hosts' vxlans of the network, not one per direction
    assert dot.count('label="overlay ov1: VNI 4096 UDP 4789"') == 1


def test_overlay_passages_in_path_order() -> None:
    """a1 → b2 over ov1: both overlay namespaces bridge the probe at the same TTL; the sender's comes
    first, and the outer packets go between them, sent and received by the hosts (the vxlan's socket)."""
    topology = overlay_hosts()
    n1, n2 = topology.hosts
    t = "muslin-trace-1-7"
    a = trace.Watched("/proc/101/ns/net", "a1", n1, n1.containers[0])
    b = trace.Watched("/proc/102/ns/net", "b2", n2, n2.containers[0])
    ov1, ov2 = (trace.Watched(h.overlays[0].netns, f"overlay ov1 on {h.name}", h, None, overlay=h.overlays[0])
                for h in (n1, n2))
    h1, h2 = (trace.Watched(h.netns, h.name, h, None) for h in (n1, n2))
    probe = _pkt(64, saddr="10.0.9.2", daddr="10.0.9.3")
    outer = _pkt(64, 17, "192.168.255.154", "192.168.255.155")
    events = {
        b.ns: _events(t, [("prerouting", probe, 2, None), ("input", probe, 2, None)]),
        ov2.ns: _events(t, [("prerouting", probe, 2, None), ("forward", probe, 2, 2), ("postrouting", probe, 2, 2)]),
        h2.ns: _events(t, [("prerouting", outer, 2, None), ("input", outer, 2, None)]),
        h1.ns: _events(t, [("output", outer, None, 2), ("postrouting", outer, 3, 2)]),
        ov1.ns: _events(t, [("prerouting", probe, 2, None), ("forward", probe, 2, 2), ("postrouting", probe, 2, 2)]),
        a.ns: _events(t, [("output", probe, None, 2), ("postrouting", probe, None, 2)]),
    }
    segs = trace.segments([h2, ov2, b, h1, ov1, a], events, "icmp", 7)
    order = [(s.watched.label, s.outer) for s in trace.ordered(segs, {})]
    assert order == [("a1", False), ("overlay ov1 on node1", False), ("node1", True), ("node2", True),
                     ("overlay ov1 on node2", False), ("b2", False)]
    steps = trace._overlay_steps(topology, n1.overlays[0], probe, probe, "br0", "br0")
    assert steps[-1].kind == "encap" and "fdb 02:42:0a:00:09:03 dst 192.168.255.155 (node2)" in steps[-1].text
    arriving = trace._overlay_steps(topology, n2.overlays[0], probe, probe, "br0", "br0")
    assert arriving[0].text.startswith("came in by vxlan0: VXLAN VNI 4096 from VTEP 192.168.255.154 (node1)")
    assert arriving[-1].text == "br0 → veth1 ⇄ b2:eth0 (02:42:0a:00:09:03)"


@pytest.mark.parametrize("text, nat", [
    ("-A MUSLIN -p tcp -m tcp --dport 8081 -j DNAT --to-destination 172.17.0.2:80", True),
    ("-A POSTROUTING -s 10.0.0.0/24 ! -o br0 -j MASQUERADE", True),
    ('dnat ip to meta l4proto . th dport map @dnat-any-address comment "to any host address"', True),
    ('ip saddr @masquerade-subnets masquerade comment "outgoing"', True),
    ('iifname . oifname @own-bridge return comment "staying on its bridge"', False),
    ('oifname @internal-bridges ip saddr != @internal-subnets drop', False),
    ("-A MUSLIN-FORWARD -i br0 -o br0 -j ACCEPT", False),
])
def test_nat_rules_are_told_in_iptables_and_nft_text(text: str, nat: bool) -> None:
    """A trace marks the rule that rewrote the packet as NAT, written by either firewall backend."""
    assert trace._is_nat(text) is nat
