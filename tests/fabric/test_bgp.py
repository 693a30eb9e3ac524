"""Backend bgp with real BIRD daemons: the mesh on one segment, a BGP router between two segments,
leases and peers coming and going, agent restarts under traffic, BIRD killed, and nothing left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from ipaddress import IPv4Network

from muslin.fabric.bird import Bird, parse_protocols
from muslin.lab.tor import node_peers, start_tor
from tests.fabric.rig import PREFIX, Rig, in_ns, ping, tcp_roundtrip, wait_for

pytestmark = pytest.mark.root

NETWORK = "172.21.0.0/16"


def bird_of(rig: Rig, i: int) -> Bird:
    return Bird(Path(rig.bird_dir(i)))


def sessions(rig: Rig, i: int) -> dict[str, str]:
    """name -> state, from `birdc show protocols` as a user would run it."""
    proc = in_ns(rig.hosts[i].name, "birdc", "-s", str(bird_of(rig, i).socket_path), "show", "protocols")
    assert proc.returncode == 0, proc.stderr
    return {p.name: p.session_state for p in parse_protocols(proc.stdout) if p.proto == "BGP"}


def bird_routes(rig: Rig, i: int) -> dict[str, str]:
    """Kernel routes BIRD installed on host i: destination -> gateway."""
    out = in_ns(rig.hosts[i].name, "ip", "-4", "route", "show", "proto", "bird").stdout
    return {m.group(1): m.group(2) for m in re.finditer(r"^(\S+) via (\S+)", out, re.M)}


def start_bgp(rig: Rig, count: int, backend: dict | None = None, first: int = 0) -> list[dict[str, str]]:
    rig.put_config({"Network": NETWORK, "Backend": {"Type": "bgp", **(backend or {})}})
    for i in range(first, count):
        rig.start_agent(i)
    return [rig.wait_subnet_file(i) for i in range(first, count)]


def subnet(env: dict[str, str]) -> str:
    net, length = env["FLANNEL_SUBNET"].split("/")
    return f"{net.rsplit('.', 1)[0]}.0/{length}"


def bird_pids(rig: Rig) -> list[int]:
    proc = subprocess.run(["pgrep", "-f", f"bird -c {rig.workdir}/"], capture_output=True, text=True)
    return [int(p) for p in proc.stdout.split()]


def test_mesh_on_one_segment(make_rig) -> None:
    rig = make_rig(3)
    envs = start_bgp(rig, 3, {"ASNumber": 64512})
    for env in envs:
        assert env["FLANNEL_MTU"] == "1500"  # no encapsulation: the underlay's MTU
    leases = rig.leases()
    assert {v["BackendType"] for v in leases.values()} == {"bgp"}
    for i in range(3):
        others = {str(h.address) for j, h in enumerate(rig.hosts) if j != i}
        wait_for(lambda i=i, others=others: set(sessions(rig, i)) == {f"mesh_{a.replace('.', '_')}" for a in others}
                 and set(sessions(rig, i).values()) == {"Established"}, 20, f"node {i + 1}'s mesh established")
        wanted = {subnet(env): str(rig.hosts[j].address) for j, env in enumerate(envs) if j != i}
        wait_for(lambda i=i, wanted=wanted: bird_routes(rig, i) == wanted, 10, f"node {i + 1}'s learned routes")
        own = in_ns(rig.hosts[i].name, "ip", "route", "show", "type", "blackhole").stdout
        assert subnet(envs[i]) in own and "proto bird" in own
        config = bird_of(rig, i).config_path.read_text()
        assert f"route {subnet(envs[i])} blackhole" in config
    for i in range(3):
        rig.add_container(i)
    assert ping(rig.containers[0], rig.container_ip(2))
    assert ping(rig.containers[2], rig.container_ip(1))
    tcp_roundtrip(rig.containers[1], rig.containers[0], rig.container_ip(0))
    # The agent logs each session's state changes.
    wait_for(lambda: "BGP session mesh_" in rig.log(0) and "-> Established" in rig.log(0), 5, "session log")


def start_routed(rig: Rig, count: int) -> tuple[list[dict[str, str]], Bird]:
    """Nodes on two segments, the router's BIRD as their top of rack, no node-to-node mesh (Calico's ToR model)."""
    tor = start_tor(rig.underlay, os.path.join(rig.workdir, "tor"), IPv4Network(NETWORK), 24, 64512)
    for key, value in node_peers(rig.underlay, PREFIX).items():
        rig.etcdctl("put", key, value)
    return start_bgp(rig, count, {"NodeToNodeMesh": False}), tor


def tor_sessions(tor: Bird) -> dict[str, str]:
    return {p.name: p.session_state for p in tor.protocols() if p.proto == "BGP"}


def test_routed_across_a_bgp_router(make_rig) -> None:
    rig = make_rig(3, routed=True)
    assert str(rig.hosts[1].address) == "192.168.254.155" and rig.underlay.router
    envs, tor = start_routed(rig, 3)
    wait_for(lambda: set(tor_sessions(tor).values()) == {"Established"} and len(tor_sessions(tor)) == 3, 20,
             "the router's sessions with every node")
    for i in range(3):
        assert set(sessions(rig, i)) == {f"peer_tor_node{i + 1}"}
        gateway = str(rig.hosts[i].gateway)
        # Node 2 is alone on its segment: everything goes through the router. Nodes 1 and 3 share one, and
        # the router passes on the other's own address as the next hop (no detour through it).
        wanted = {subnet(env): (str(rig.hosts[j].address) if rig.hosts[j].segment == rig.hosts[i].segment
                                else gateway) for j, env in enumerate(envs) if j != i}
        wait_for(lambda i=i, wanted=wanted: bird_routes(rig, i) == wanted, 10, f"node {i + 1}'s learned routes")
    router_routes = in_ns(rig.underlay.router, "ip", "-4", "route", "show", "proto", "bird").stdout
    for i, env in enumerate(envs):
        assert f"{subnet(env)} via {rig.hosts[i].address}" in router_routes
    for i in range(3):
        rig.add_container(i)
    assert ping(rig.containers[0], rig.container_ip(1))
    assert ping(rig.containers[1], rig.container_ip(2))
    tcp_roundtrip(rig.containers[0], rig.containers[1], rig.container_ip(1))
