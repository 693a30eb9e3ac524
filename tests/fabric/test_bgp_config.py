"""Backend bgp's pure parts: the network config keys, BGPPeer resources, session planning, bird.conf
rendering (also parsed by the real BIRD when it is installed) and `show protocols` parsing."""

from __future__ import annotations

import shutil
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from muslin.fabric.backends.bgp import plan_neighbors
from muslin.fabric.bgppeers import BgpPeer, BgpResources, parse_resources
from muslin.fabric.bird import BgpNeighbor, BirdConfig, parse_protocols, render_config
from muslin.fabric.config import BgpSettings, ConfigError, parse_config
from muslin.etcd import Entry

A, B, C, D = (IPv4Address(f"192.168.255.{n}") for n in (154, 155, 156, 157))
TOR = IPv4Address("192.168.1.1")


def test_backend_bgp_keys_and_defaults() -> None:
    c = parse_config('{"Network":"172.21.0.0/16","Backend":{"Type":"bgp","ASNumber":64512,"NodeToNodeMesh":true}}')
    assert c.backend.type == "bgp" and c.backend.bgp == BgpSettings(as_number=64512)
    s = parse_config('{"Network":"172.21.0.0/16","Backend":{"type":"bgp","asnumber":65001,"nodetonodemesh":false,'
                     '"GracefulRestart":false,"RestartTime":30,"HoldTime":9,"BFD":true}}').backend.bgp
    assert s == BgpSettings(65001, False, False, 30, 9, True)
    assert parse_config('{"Network":"172.21.0.0/16","Backend":{"Type":"vxlan"}}').backend.bgp is None


@pytest.mark.parametrize("backend, message", [
    ('{"Type":"bgp","ASNumber":0}', "Backend.ASNumber 0 is out of range"),
    ('{"Type":"bgp","ASNumber":"64512"}', "Backend.ASNumber must be a number"),
    ('{"Type":"bgp","NodeToNodeMesh":"yes"}', "Backend.NodeToNodeMesh must be a bool"),
    ('{"Type":"bgp","HoldTime":2}', "Backend.HoldTime 2 must be 3..65535"),
    ('{"Type":"bgp","RestartTime":5000}', "Backend.RestartTime 5000 is out of range"),
    ('{"Type":"ipip"}', "Backend.Type 'ipip' is not supported: this kernel has no ipip module"),
    ('{"Type":"bgp","IPIPMode":"Always"}', "Backend.IPIPMode \"Always\" is not supported: this kernel has no ipip"),
])
def test_bad_bgp_keys_name_the_key(backend: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f'{{"Network":"172.21.0.0/16","Backend":{backend}}}')


def test_peers_and_reflectors_from_etcd_entries() -> None:
    entries = [
        Entry("/atomic.io/network/bgp/peers/tor-a", b'{"PeerIP":"192.168.1.1","ASNumber":65000,"Node":"192.168.255.154"}', 1, False),
        Entry("/atomic.io/network/bgp/peers/all", b'{"peerip":"10.0.0.1","asnumber":65000}', 2, False),
        Entry("/atomic.io/network/bgp/peers/bad", b'{"PeerIP":"nope","ASNumber":65000}', 3, False),
        Entry("/atomic.io/network/bgp/peers/noas", b'{"PeerIP":"10.0.0.2"}', 4, False),
        Entry("/atomic.io/network/bgp/nodes/192.168.255.155", b'{"RouteReflector":true}', 5, False),
        Entry("/atomic.io/network/bgp/nodes/192.168.255.156", b'{"RouteReflector":false}', 6, False),
    ]
    r = parse_resources(entries, "/atomic.io/network/")
    assert r.peers == (BgpPeer("all", IPv4Address("10.0.0.1"), 65000),
                       BgpPeer("tor-a", TOR, 65000, A))
    assert r.reflectors == {B}


def everyone_on_l2(_: IPv4Address) -> bool:
    return True


def test_full_mesh_then_peers_for_all_or_one_node() -> None:
    s = BgpSettings()
    peers = BgpResources((BgpPeer("tor", TOR, 65000, A), BgpPeer("elsewhere", IPv4Address("10.9.9.9"), 65000, B)))
    got = plan_neighbors(A, s, [A, B, C], peers, lambda ip: ip != TOR)
    assert got == (BgpNeighbor("mesh_192_168_255_155", B, 64512, True),
                   BgpNeighbor("mesh_192_168_255_156", C, 64512, True),
                   BgpNeighbor("peer_tor", TOR, 65000, False))
    no_mesh = plan_neighbors(A, BgpSettings(node_to_node_mesh=False), [B, C], peers, everyone_on_l2)
    assert [n.name for n in no_mesh] == ["peer_tor"]
    # A peer at a node's own address replaces that node's mesh session.
    same = plan_neighbors(A, s, [B], BgpResources((BgpPeer("b", B, 64512),)), everyone_on_l2)
    assert [n.name for n in same] == ["peer_b"]


def test_route_reflectors_replace_the_mesh() -> None:
    reflectors = BgpResources(reflectors=frozenset({B, C}))
    client = plan_neighbors(A, BgpSettings(), [B, C, D], reflectors, everyone_on_l2)
    assert [(n.address, n.rr_client, n.reflect) for n in client] == [(B, False, False), (C, False, False)]
    rr = plan_neighbors(B, BgpSettings(), [A, C, D], reflectors, everyone_on_l2)
    assert [(n.address, n.rr_client, n.reflect) for n in rr] == [(A, True, True), (C, False, True), (D, True, True)]
    # A reflector that holds no lease is no reflector: the mesh stays whole.
    gone = plan_neighbors(A, BgpSettings(), [C, D], BgpResources(reflectors=frozenset({B})), everyone_on_l2)
    assert [n.address for n in gone] == [C, D]


def node_config(**kw: object) -> BirdConfig:
    base = dict(router_id=A, as_number=64512, network=IPv4Network("172.21.0.0/16"), subnet_len=24,
                own_subnet=IPv4Network("172.21.5.0/24"),
                neighbors=(BgpNeighbor("mesh_b", B, 64512, True),
                           BgpNeighbor("peer_tor", TOR, 65000, False),
                           BgpNeighbor("mesh_c", C, 64512, True, rr_client=True, reflect=True)),
                source_address=A)
    return BirdConfig(**{**base, **kw})  # type: ignore[arg-type]


def block(text: str, header: str) -> str:
    start = text.index(header)
    return text[start:text.index("\n}\n", start)]


def test_rendered_config_exports_only_our_subnet_and_imports_the_network() -> None:
    text = render_config(node_config())
    assert "router id 192.168.255.154;" in text
    assert "route 172.21.5.0/24 blackhole;" in block(text, "protocol static own_subnet")
    assert "if net ~ [ 172.21.0.0/16{24,32} ] && net != 172.21.5.0/24 then accept;" in block(text, "filter import_network")
    kernel = block(text, "protocol kernel")
    assert 'export where source = RTS_BGP || proto = "own_subnet";' in kernel and "graceful restart;" in kernel
    mesh = block(text, "protocol bgp mesh_b")
    assert "local 192.168.255.154 as 64512;" in mesh and "neighbor 192.168.255.155 as 64512;" in mesh
    assert "direct;" in mesh and "export filter export_own;" in mesh and "allow local as" not in mesh
    assert "hold time 90;" in mesh and "graceful restart time 120;" in mesh and "bfd on" not in mesh
    tor = block(text, "protocol bgp peer_tor")
    assert "multihop;" in tor and "gateway recursive;" in tor and "allow local as;" in tor
    rr = block(text, "protocol bgp mesh_c")
    assert "rr client;" in rr and "export filter export_learned;" in rr


def test_rendered_options_hold_time_bfd_and_no_graceful_restart() -> None:
    text = render_config(node_config(hold_time=9, bfd=True, graceful_restart=False))
    mesh = block(text, "protocol bgp mesh_b")
    assert "hold time 9;" in mesh and "keepalive time 3;" in mesh and "bfd on;" in mesh
    assert "graceful restart" not in text
    assert "protocol bfd {" in text


@pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed (setup.sh installs bird2)")
@pytest.mark.parametrize("options", [{}, {"bfd": True, "graceful_restart": False, "hold_time": 3},
                                     {"own_subnet": None, "export_all": True, "next_hop_self": True}])
def test_bird_accepts_what_we_render(tmp_path: Path, options: dict) -> None:
    path = tmp_path / "bird.conf"
    path.write_text(render_config(node_config(**options, log_file=str(tmp_path / "bird.log"))))
    proc = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr


BIRDC_OUTPUT = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     2026-12-01 14:51:03
kernel1    Kernel     master4    up     2026-12-01 14:51:03
own_subnet Static     master4    up     2026-12-01 14:51:03
mesh_192_168_255_155 BGP        ---        up     2026-12-01 14:51:04  Established
peer_tor   BGP        ---        start  2026-12-01 14:51:03  Active        Socket: Connection refused
"""

SOCKET_REPLY = """2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     2026-12-01 14:51:03
 mesh_b     BGP        ---        start  2026-12-01 14:51:03  Connect
 peer_tor   BGP        ---        up     2026-12-01 14:51:04  Established
0000 
"""


def test_show_protocols_from_birdc_and_from_the_socket() -> None:
    rows = parse_protocols(BIRDC_OUTPUT)
    assert [r.name for r in rows] == ["device1", "kernel1", "own_subnet", "mesh_192_168_255_155", "peer_tor"]
    tor = rows[-1]
    assert (tor.proto, tor.state, tor.since, tor.session_state) == ("BGP", "start", "2026-12-01 14:51:03", "Active")
    assert tor.info == "Active Socket: Connection refused"
    assert rows[3].session_state == "Established" and rows[0].session_state == "up"
    rows = parse_protocols(SOCKET_REPLY)
    assert [(r.name, r.session_state) for r in rows] == [("device1", "up"), ("mesh_b", "Connect"),
                                                         ("peer_tor", "Established")]
