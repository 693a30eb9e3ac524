"""Fabric benchmark: container-to-container TCP throughput across two simulated hosts, per backend,
against the same path built by hand in the kernel, in the same run; and lease-to-route convergence.

    .venv/bin/python bench/bench_fabric.py [--seconds 4] [--trials 20] [--only throughput|convergence|udp|bgp]

bgp runs on its own routed underlay (two segments, the router's BIRD as top of rack): TCP through the
router against the same routes set by hand, and the time from a new node's lease to its route on a peer
behind the router and on the router.

Every iperf3 run is bounded (-t seconds, and a subprocess timeout); everything runs in namespaces this
script creates and removes. Prints one line per measurement and the ratios the issue sets goals for.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from ipaddress import IPv4Network
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muslin.kernel import netns, route  # noqa: E402
from muslin.lab import topology  # noqa: E402
from muslin.fabric.bird import Bird  # noqa: E402
from muslin.lab.rig import PREFIX, Rig, in_ns, ping, wait_for  # noqa: E402
from muslin.lab.tor import node_peers, start_tor  # noqa: E402


def sh(ns: str, command: str) -> None:
    proc = in_ns(ns, "sh", "-c", command)
    if proc.returncode != 0:
        raise RuntimeError(f"{command}: {proc.stderr}")


def iperf(client_ns: str, server_ns: str, server_ip: str, seconds: int) -> float:
    """Gbit/s received by an iperf3 server in server_ns from a client in client_ns."""
    server = subprocess.Popen(["nsenter", f"--net={netns.path_for(server_ns)}", "iperf3", "-s", "-1", "-B", server_ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        proc = in_ns(client_ns, "iperf3", "-c", server_ip, "-t", str(seconds), "-J", timeout=seconds + 20)
        if proc.returncode != 0:
            raise RuntimeError(f"iperf3 failed: {proc.stdout[-400:]} {proc.stderr[-400:]}")
        return json.loads(proc.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        server.kill()
        server.wait()


def clear_containers(rig: Rig) -> None:
    for name in rig.containers:
        netns.remove(name)
    rig.containers.clear()
    for host in rig.hosts:
        in_ns(host.name, "sh", "-c", "ip link del cbr0 2>/dev/null; ip link del v2 2>/dev/null; true")


def clear_overlay(rig: Rig) -> None:
    for host in rig.hosts:
        in_ns(host.name, "sh", "-c", "ip link del flannel.1 2>/dev/null; ip link del hv1 2>/dev/null; "
                                     "ip route flush 172.21.0.0/16 2>/dev/null; true")


def write_subnet_env(rig: Rig, i: int, subnet: IPv4Network, mtu: int) -> None:
    os.makedirs(os.path.dirname(rig.subnet_file(i)), exist_ok=True)
    with open(rig.subnet_file(i), "w") as f:
        f.write(f"FLANNEL_NETWORK=172.21.0.0/16\nFLANNEL_SUBNET={subnet[1]}/24\nFLANNEL_MTU={mtu}\n"
                "FLANNEL_IPMASQ=false\n")


HAND_SUBNETS = (IPv4Network("172.21.201.0/24"), IPv4Network("172.21.202.0/24"))


def hand_made(rig: Rig, kind: str) -> None:
    """The datapath flanneld would program, built with ip(8): vxlan device/fdb/neigh/route, or routes."""
    a, b = rig.hosts[:2]
    for me, peer, mine, theirs in ((a, b, HAND_SUBNETS[0], HAND_SUBNETS[1]), (b, a, HAND_SUBNETS[1], HAND_SUBNETS[0])):
        if kind == "vxlan":
            sh(me.name, f"ip link add hv1 type vxlan id 1 local {me.address} dev eth0 dstport 8472 nolearning && "
                        f"ip link set hv1 mtu 1450 address 02:00:00:00:00:{str(me.address).split('.')[-1][-2:]} up && "
                        f"ip addr add {mine.network_address}/32 dev hv1")
        else:
            sh(me.name, f"ip route add {theirs} via {peer.address} dev eth0")
    if kind == "vxlan":
        for me, peer, theirs in ((a, b, HAND_SUBNETS[1]), (b, a, HAND_SUBNETS[0])):
            mac = f"02:00:00:00:00:{str(peer.address).split('.')[-1][-2:]}"
            sh(me.name, f"ip neigh replace {theirs.network_address} lladdr {mac} dev hv1 nud permanent && "
                        f"bridge fdb append {mac} dev hv1 dst {peer.address} self permanent && "
                        f"ip route add {theirs} via {theirs.network_address} dev hv1 onlink")
    mtu = 1450 if kind == "vxlan" else 1500
    for i in range(2):
        write_subnet_env(rig, i, HAND_SUBNETS[i], mtu)


def measure_pair(rig: Rig, seconds: int) -> float:
    c1, c2 = rig.add_container(0), rig.add_container(1)
    wait_for(lambda: ping(c1, rig.container_ip(1)), 15, "ping before iperf")
    try:
        return iperf(c1, c2, rig.container_ip(1), seconds)
    finally:
        clear_containers(rig)


def run_agents(rig: Rig, backend: str) -> None:
    rig.etcdctl("del", "--prefix", PREFIX)
    rig.put_config({"Network": "172.21.0.0/16", "Backend": {"Type": backend}})
    for i in range(2):
        if os.path.exists(rig.subnet_file(i)):
            os.unlink(rig.subnet_file(i))
        rig.start_agent(i, "--iptables-resync=5")  # flanneld's default, not the tests' fast one
    for i in range(2):
        rig.wait_subnet_file(i)


def stop_agents(rig: Rig) -> None:
    for i in list(rig.agents):
        rig.stop_agent(i)
    clear_overlay(rig)


def v3_put(host_ns: str, address: str, key: str, value: str | None) -> None:
    """Put (or delete, value None) through etcd's v3 JSON gateway, from a socket inside host_ns."""
    with netns.entered(host_ns):
        conn = http.client.HTTPConnection(address, 2379, timeout=5)
        conn.connect()
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    path, body = (("/v3/kv/put", {"key": b64(key), "value": b64(value)}) if value is not None
                  else ("/v3/kv/deleterange", {"key": b64(key)}))
    conn.request("POST", path, json.dumps(body))
    resp = conn.getresponse()
    resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"etcd gateway answered {resp.status}")


def convergence(rig: Rig, trials: int) -> list[float]:
    """Milliseconds from a new lease's put to its route on node 1 (vxlan)."""
    run_agents(rig, "vxlan")
    results = []
    try:
        with netns.iproute(rig.hosts[0].name) as ipr:
            for n in range(trials):
                subnet = IPv4Network(f"172.21.{100 + n}.0/24")
                lease = json.dumps({"PublicIP": str(rig.hosts[1].address), "PublicIPv6": None, "BackendType": "vxlan",
                                    "BackendData": {"VNI": 1, "VtepMAC": f"02:42:ac:15:{n:02x}:01"}})
                start = time.perf_counter()
                v3_put(rig.hosts[2].name, str(rig.hosts[2].address),
                       f"{PREFIX}/subnets/{subnet.network_address}-24", lease)
                deadline = start + 5
                while not any(r.dst == subnet for r in route.ipv4_routes(ipr)):
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"no route for {subnet} after 5 s")
                    time.sleep(0.0005)
                results.append((time.perf_counter() - start) * 1000)
                v3_put(rig.hosts[2].name, str(rig.hosts[2].address),
                       f"{PREFIX}/subnets/{subnet.network_address}-24", None)
                time.sleep(0.05)
    finally:
        stop_agents(rig)
    return results


def agent_pair(rig: Rig, backend: str, seconds: int) -> float:
    run_agents(rig, backend)
    try:
        return measure_pair(rig, seconds)
    finally:
        stop_agents(rig)


def hand_pair(rig: Rig, kind: str, seconds: int) -> float:
    hand_made(rig, kind)
    try:
        return measure_pair(rig, seconds)
    finally:
        clear_overlay(rig)


def throughput(rig: Rig, seconds: int, rounds: int) -> None:
    """Hand-made and agent-built paths measured in alternation, so load from elsewhere hits both alike."""
    a, b = rig.hosts[0], rig.hosts[1]
    print(f"raw underlay (host to host): {iperf(a.name, b.name, str(b.address), seconds):.2f} Gbit/s", flush=True)
    for backend, goal in (("vxlan", "hand-made vxlan"), ("host-gw", "hand-made routes")):
        hand: list[float] = []
        ours: list[float] = []
        for _ in range(rounds):
            hand.append(hand_pair(rig, backend, seconds))
            ours.append(agent_pair(rig, backend, seconds))
            print(f"  {backend}: hand-made {hand[-1]:.2f} Gbit/s, muslin-flanneld {ours[-1]:.2f} Gbit/s", flush=True)
        print(f"{backend}: best {max(ours):.2f} vs {max(hand):.2f} Gbit/s; ratio of bests {max(ours) / max(hand):.3f}, "
              f"of medians {statistics.median(ours) / statistics.median(hand):.3f} (goal vs {goal} >= 0.95)",
              flush=True)
    udp_throughput(rig, seconds, rounds)


def udp_throughput(rig: Rig, seconds: int, rounds: int) -> None:
    udp = [agent_pair(rig, "udp", seconds) for _ in range(rounds)]
    print(f"udp: best {max(udp):.2f} Gbit/s, median {statistics.median(udp):.2f} "
          "(goal >= 1.0; flanneld's udp measured ~0.33 here)", flush=True)


def bgp_agents(rig: Rig, hosts: range) -> None:
    for i in hosts:
        if os.path.exists(rig.subnet_file(i)):
            os.unlink(rig.subnet_file(i))
        rig.start_agent(i, "--iptables-resync=5")
    for i in hosts:
        rig.wait_subnet_file(i)


def bgp_stop(rig: Rig, hosts: range) -> None:
    """Agents and their BIRDs stopped (a clean BIRD stop withdraws its routes), leases deleted."""
    for i in hosts:
        if i in rig.agents:
            rig.stop_agent(i)
        Bird(Path(rig.bird_dir(i))).stop()
        rig.etcdctl("del", "--prefix", f"{PREFIX}/subnets/")


def routed_hand_made(rig: Rig, router: str, add: bool) -> None:
    """The routes BGP would install, by hand: each node via the router, the router via each node."""
    a, b = rig.hosts[0], rig.hosts[1]
    verb = "add" if add else "del"
    sh(a.name, f"ip route {verb} {HAND_SUBNETS[1]} via {a.gateway}")
    sh(b.name, f"ip route {verb} {HAND_SUBNETS[0]} via {b.gateway}")
    sh(router, f"ip route {verb} {HAND_SUBNETS[0]} via {a.address} && "
               f"ip route {verb} {HAND_SUBNETS[1]} via {b.address}")
    if add:
        for i in range(2):
            write_subnet_env(rig, i, HAND_SUBNETS[i], 1500)


def has_route(ipr, subnet: IPv4Network) -> bool:
    return any(r.get_attr("RTA_DST") == str(subnet.network_address) and r["dst_len"] == subnet.prefixlen
               for r in ipr.get_routes(family=2, table=254))


def bgp_convergence(rig: Rig, router: str, trials: int) -> tuple[list[float], list[float]]:
    """Milliseconds from node 3's new lease (seen in etcd) to its route on node 2 (behind the router) and on
    the router, node 3's agent and BIRD starting afresh each trial."""
    on_peer: list[float] = []
    on_router: list[float] = []
    node3 = rig.hosts[2]
    with netns.iproute(rig.hosts[1].name) as peer, netns.iproute(router) as rtr:
        for _ in range(trials):
            if os.path.exists(rig.subnet_file(2)):
                os.unlink(rig.subnet_file(2))
            before = set(lease_keys(node3.name, str(node3.address)))
            rig.start_agent(2, "--iptables-resync=5")
            leased: float | None = None
            seen: dict[str, float] = {}
            deadline = time.perf_counter() + 30
            subnet: IPv4Network | None = None
            while len(seen) < 2:
                now = time.perf_counter()
                if now > deadline:
                    raise RuntimeError("node 3's route did not arrive in 30 s")
                if leased is None:
                    keys = lease_keys(node3.name, str(node3.address))
                    mine = [k for k in keys if k not in before]
                    if mine:
                        leased = time.perf_counter()
                        subnet = IPv4Network(mine[0].rsplit("/", 1)[1].replace("-", "/"))
                    continue
                assert subnet is not None
                for name, ipr in (("peer", peer), ("router", rtr)):
                    if name not in seen and has_route(ipr, subnet):
                        seen[name] = (time.perf_counter() - leased) * 1000
                time.sleep(0.0005)
            on_peer.append(seen["peer"])
            on_router.append(seen["router"])
            rig.stop_agent(2)
            Bird(Path(rig.bird_dir(2))).stop()
            assert subnet is not None
            rig.etcdctl("del", f"{PREFIX}/subnets/{subnet.network_address}-{subnet.prefixlen}")
            gone = subnet
            wait_for(lambda: not has_route(peer, gone), 10, "node 3's route withdrawn")
    return on_peer, on_router


def lease_keys(host_ns: str, address: str) -> list[str]:
    """Lease keys now in etcd, through the v3 JSON gateway (a socket inside host_ns: no process per look)."""
    with netns.entered(host_ns):
        conn = http.client.HTTPConnection(address, 2379, timeout=5)
        conn.connect()
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    start = f"{PREFIX}/subnets/"
    body = {"key": b64(start), "range_end": b64(start[:-1] + "0"), "keys_only": True}
    conn.request("POST", "/v3/kv/range", json.dumps(body))
    resp = json.loads(conn.getresponse().read())
    conn.close()
    return [base64.b64decode(kv["key"]).decode() for kv in resp.get("kvs", [])]


def bgp_bench(seconds: int, rounds: int, trials: int) -> None:
    prefix = f"bg{uuid.uuid4().hex[:5]}"
    workdir = tempfile.mkdtemp(prefix=f"muslin-{prefix}-")
    underlay = topology.create(prefix, 3, routed=True)
    rig = Rig(underlay, workdir)
    router = underlay.router
    assert router
    try:
        rig.etcd.start()
        start_tor(underlay, os.path.join(workdir, "tor"), IPv4Network("172.21.0.0/16"), 24, 64512)
        for key, value in node_peers(underlay, PREFIX).items():
            rig.etcdctl("put", key, value)
        rig.put_config({"Network": "172.21.0.0/16", "Backend": {"Type": "bgp", "NodeToNodeMesh": False}})
        hand: list[float] = []
        ours: list[float] = []
        for _ in range(rounds):
            routed_hand_made(rig, router, True)
            try:
                hand.append(measure_pair(rig, seconds))
            finally:
                routed_hand_made(rig, router, False)
            bgp_agents(rig, range(2))
            try:
                ours.append(measure_pair(rig, seconds))
            finally:
                bgp_stop(rig, range(2))
            print(f"  bgp through the router: hand-made routes {hand[-1]:.2f} Gbit/s, "
                  f"muslin-flanneld + BIRD {ours[-1]:.2f} Gbit/s", flush=True)
        print(f"bgp: best {max(ours):.2f} vs {max(hand):.2f} Gbit/s; ratio of bests {max(ours) / max(hand):.3f}, "
              f"of medians {statistics.median(ours) / statistics.median(hand):.3f} (goal vs hand-made routes >= 0.95)",
              flush=True)
        bgp_agents(rig, range(2))
        peer, on_router = bgp_convergence(rig, router, trials)
        print(f"bgp convergence new lease -> route over {len(peer)} trials: on a peer behind the router median "
              f"{statistics.median(peer):.1f} ms (max {max(peer):.1f}), on the router median "
              f"{statistics.median(on_router):.1f} ms (max {max(on_router):.1f})", flush=True)
    finally:
        tear_down(rig, prefix, workdir)


def tear_down(rig: Rig, prefix: str, workdir: str) -> None:
    """Everything a bench rig made: agents, etcd, containers, the underlay and its files."""
    for i in list(rig.agents):
        rig.stop_agent(i, kill=True)
    rig.etcd.stop()
    clear_containers(rig)
    topology.teardown(prefix)
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating hand-made/agent rounds per backend (the machine is shared: noise)")
    parser.add_argument("--only", choices=("throughput", "convergence", "udp", "bgp"), default=None)
    args = parser.parse_args()
    if args.only == "bgp":
        bgp_bench(args.seconds, args.rounds, args.trials)
        return 0
    prefix = f"bf{uuid.uuid4().hex[:5]}"
    workdir = tempfile.mkdtemp(prefix=f"muslin-{prefix}-")
    underlay = topology.create(prefix, 3)
    rig = Rig(underlay, workdir)
    try:
        rig.etcd.start()
        if args.only == "udp":
            udp_throughput(rig, args.seconds, args.rounds)
        if args.only in (None, "throughput"):
            throughput(rig, args.seconds, args.rounds)
        if args.only in (None, "convergence"):
            ms = convergence(rig, args.trials)
            print(f"convergence lease->route over {len(ms)} trials: median {statistics.median(ms):.1f} ms, "
                  f"max {max(ms):.1f} ms (goal: median <= 50 ms)")
    finally:
        tear_down(rig, prefix, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
