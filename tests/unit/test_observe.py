"""Pure logic of the observer: the trace table's matches, trace event decoding, the order of passages,
and the drawing's graph."""

from __future__ import annotations

import socket
import struct
from dataclasses import replace

import pytest

from muslin.kernel import nftrace
from muslin.kernel.nftrace import Packet, Probe, TraceEvent
from muslin.observe import render_svg, render_text, trace
from muslin.observe.model import (
    Bridge,
    Container,
    Endpoint,
    FdbPeer,
    Host,
    Interface,
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
