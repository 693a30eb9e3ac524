"""Backend bgp with real BIRD daemons: the mesh on one segment, a BGP router between two segments,
leases and peers coming and going, agent restarts under traffic, BIRD killed, and nothing left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from muslin.fabric.bird import Bird, parse_protocols
from muslin.lab.rig import PREFIX, Rig, in_ns, ping, wait_for
from muslin.lab.tor import node_peers, start_tor
from tests.fabric.traffic import tcp_roundtrip

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


def test_node_leaving_takes_its_route_everywhere(make_rig) -> None:
    rig = make_rig(3)
    envs = start_bgp(rig, 3)
    leaving = subnet(envs[2])
    for i in range(2):
        wait_for(lambda i=i: leaving in bird_routes(rig, i), 20, f"node {i + 1} learns node 3's route")
    # The agent polls session states: wait until it has seen the session up, or the drop below could
    # come before it ever logged "Established".
    wait_for(lambda: re.search(r"BGP session mesh_192_168_255_156: \S+ -> Established", rig.log(0)),
             10, "the session logged up")
    # Node 3 goes away: agent and BIRD. Graceful restart keeps its routes as stale while its lease lasts...
    rig.stop_agent(2)
    os.kill(bird_of(rig, 2).pid() or 0, 9)  # a crash: a clean stop would withdraw the routes at once
    wait_for(lambda: "BGP session mesh_192_168_255_156: Established -> " in rig.log(0), 10, "the session drop logged")
    assert all(leaving in bird_routes(rig, i) for i in range(2))
    # ...and its lease going (expiry, or deleted here) removes the session and the route on every node.
    rig.etcdctl("del", f"{PREFIX}/subnets/{leaving.replace('/', '-')}")
    for i in range(2):
        wait_for(lambda i=i: leaving not in bird_routes(rig, i), 10, f"node 3's route gone from node {i + 1}")
        assert "mesh_192_168_255_156" not in sessions(rig, i)
        assert leaving not in in_ns(rig.hosts[i].name, "ip", "route").stdout
    assert f"peer {leaving} (192.168.255.156) left" in rig.log(0)


def test_peer_removed_and_added_in_etcd_without_restart(make_rig) -> None:
    rig = make_rig(2, routed=True)
    envs, tor = start_routed(rig, 2)
    wait_for(lambda: bird_routes(rig, 0).get(subnet(envs[1])) == "192.168.255.1", 20, "node 1 learns node 2's route")
    pid = bird_of(rig, 1).pid()
    wait_for(lambda: "BGP session peer_tor_node2: new -> " in rig.log(1), 5, "the session logged")
    key = f"{PREFIX}/bgp/peers/tor-node2"
    value = rig.etcdctl("get", "--print-value-only", key).strip()
    rig.etcdctl("del", key)
    wait_for(lambda: sessions(rig, 1) == {}, 10, "node 2's session with the router removed")
    wait_for(lambda: subnet(envs[1]) not in bird_routes(rig, 0), 10, "node 2's route gone from node 1")
    wait_for(lambda: bird_routes(rig, 1) == {}, 10, "node 2's learned routes gone")
    wait_for(lambda: "BGP session peer_tor_node2: removed" in rig.log(1), 5, "the removal logged")
    rig.etcdctl("put", key, value)
    wait_for(lambda: sessions(rig, 1) == {"peer_tor_node2": "Established"}, 20, "node 2's session back")
    wait_for(lambda: bird_routes(rig, 0).get(subnet(envs[1])) == "192.168.255.1", 10, "node 2's route back")
    assert bird_of(rig, 1).pid() == pid, "BIRD was restarted instead of reconfigured"


def ping_loss(rig: Rig, client: str, address: str, action, seconds: float = 6, interval: float = 0.05) -> int:
    """Packets lost by a ping running while action() runs (busybox ping: -i takes fractions of a second)."""
    count = int(seconds / interval)
    ping_proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{client}", "busybox", "ping", "-q", "-i", str(interval),
                                  "-W", "1", "-c", str(count), address], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        action()
        out, _ = ping_proc.communicate(timeout=seconds + 15)
    finally:
        if ping_proc.poll() is None:
            ping_proc.kill()
            ping_proc.wait()
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out).groups())
    assert sent == count, out
    return sent - received


def test_agent_restart_under_a_running_ping(make_rig) -> None:
    rig = make_rig(2)
    envs = start_bgp(rig, 2)
    wait_for(lambda: subnet(envs[1]) in bird_routes(rig, 0) and subnet(envs[0]) in bird_routes(rig, 1), 20, "routes")
    for i in range(2):
        rig.add_container(i)
    pids = [bird_of(rig, i).pid() for i in range(2)]

    def restart_both() -> None:
        for i in range(2):
            rig.stop_agent(i)
            rig.start_agent(i)
        for i in range(2):
            wait_for(lambda i=i: rig.log(i).count("BGP peers from etcd") >= 2, 10, f"agent {i + 1} running again")

    lost = ping_loss(rig, rig.containers[0], rig.container_ip(1), restart_both)
    assert lost <= 3, f"{lost} packets lost across agent restarts"
    assert [bird_of(rig, i).pid() for i in range(2)] == pids  # the same daemons, sessions never dropped
    assert sorted(bird_pids(rig)) == sorted(pids)
    assert set(sessions(rig, 0).values()) == {"Established"}


def test_bird_killed_is_restarted_and_traffic_goes_on(make_rig) -> None:
    rig = make_rig(2)
    envs = start_bgp(rig, 2)
    wait_for(lambda: subnet(envs[1]) in bird_routes(rig, 0) and subnet(envs[0]) in bird_routes(rig, 1), 20, "routes")
    for i in range(2):
        rig.add_container(i)
    old = bird_of(rig, 0).pid()
    assert old is not None

    def kill_bird() -> None:
        os.kill(old, 9)
        wait_for(lambda: bird_of(rig, 0).pid() not in (None, old), 10, "a new BIRD on node 1")

    # The kernel keeps BIRD's routes when it dies and node 2 keeps ours (graceful restart) meanwhile.
    lost = ping_loss(rig, rig.containers[0], rig.container_ip(1), kill_bird)
    assert lost <= 3, f"{lost} packets lost while BIRD restarted"
    wait_for(lambda: set(sessions(rig, 0).values()) == {"Established"}, 20, "the session back")
    assert subnet(envs[1]) in bird_routes(rig, 0)
    assert "BIRD does not answer" in rig.log(0) and rig.log(0).count("BIRD started") == 2
    assert len(bird_pids(rig)) == 2


def test_nothing_left_behind(make_rig) -> None:
    rig = make_rig(2)
    start_bgp(rig, 2)
    wait_for(lambda: len(bird_pids(rig)) == 2, 10, "two BIRDs")
    sockets = [bird_of(rig, i).socket_path for i in range(2)]
    assert all(s.exists() for s in sockets)
    for i in range(2):
        rig.stop_agent(i)
        bird_of(rig, i).stop()
    assert bird_pids(rig) == []
    for i in range(2):
        # A stopped BIRD removes its socket; the routes it installed go with it.
        assert in_ns(rig.hosts[i].name, "ip", "route", "show", "proto", "bird").stdout == ""


def test_route_reflector_instead_of_the_full_mesh(make_rig) -> None:
    rig = make_rig(3)
    reflector = rig.hosts[0].address
    rig.etcdctl("put", f"{PREFIX}/bgp/nodes/{reflector}", json.dumps({"RouteReflector": True}))
    envs = start_bgp(rig, 3)
    rr = f"mesh_{str(reflector).replace('.', '_')}"
    for i in (1, 2):
        wait_for(lambda i=i: sessions(rig, i) == {rr: "Established"}, 20, f"node {i + 1} peers only with the reflector")
    wait_for(lambda: len(sessions(rig, 0)) == 2 and set(sessions(rig, 0).values()) == {"Established"}, 20,
             "the reflector's sessions with its clients")
    assert "rr client;" in bird_of(rig, 0).config_path.read_text()
    # Node 2 learns node 3's subnet through the reflector, with node 3 itself as the next hop.
    wait_for(lambda: bird_routes(rig, 1).get(subnet(envs[2])) == str(rig.hosts[2].address), 10, "a reflected route")
    rig.add_container(1)
    rig.add_container(2)
    assert ping(rig.containers[0], rig.container_ip(2))
    # No reflector any more: back to the full mesh, without a restart.
    rig.etcdctl("del", f"{PREFIX}/bgp/nodes/{reflector}")
    wait_for(lambda: len(sessions(rig, 1)) == 2, 10, "the full mesh again")
