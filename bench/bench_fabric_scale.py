"""The fabric at scale (issue #11, requirement 6): one muslin-flanneld facing thousands of peer leases.

    .venv/bin/python bench/bench_fabric_scale.py [--peers 2000] [--runs 3] [--samples 15] [--backend vxlan]

An etcd in one namespace and the agent in another, joined by a veth (the agent's real underlay link,
192.168.0.0/16). The peers are only leases, put straight into etcd under the flannel prefix as flanneld
writes them (one etcd lease with a 24 h TTL holds them all; the agent sees a TTL either way): no hosts.
For each backend that programs per-peer kernel state (vxlan: fdb entry + neighbour + route per peer;
host-gw: a route per peer; udp keeps its peers in the forwarder's memory only, so it is left out):

- initial sync: from the agent's start (the process, imports included) until the kernel holds every
  peer's state, read from the kernel over netlink (median of --runs, each from a clean kernel);
- RSS of the agent once synced and after the latency samples (VmRSS, and the peak VmHWM), and its CPU
  while idle (the periodic reconcile of every peer against the kernel);
- a new lease -> its route, at the full peer count (--samples, median and p95), and its removal;
- etcd traffic per lease change: watch messages and other requests from etcd's /metrics, and the bytes
  on the agent's link (the writer reaches etcd inside etcd's namespace, so they are the agent's alone).

No flanneld binary exists on this machine (no Debian package; building it needs Go modules from the
network), so flanneld's figures are those stated in issue #11 for the same setup, printed as such.
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
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muslin.kernel import neighbour, netns, route, rtnl  # noqa: E402
from muslin.lab.etcd import EtcdCluster  # noqa: E402
from muslin.lab.topology import Host  # noqa: E402

PREFIX = "/atomic.io/network"
NETWORK = IPv4Network("10.0.0.0/8")
AGENT_IP = IPv4Address("192.168.0.1")
ETCD_IP = IPv4Address("192.168.0.2")
UNDERLAY_LEN = 16
LEASE_TTL = 24 * 3600
TXN_OPS = 100  # etcd refuses transactions of more than 128 operations by default
# Issue #11's figures for flanneld v0.20.2 facing 2,000 peers on the same setup (not measured here).
FLANNELD = {"sync_s": 1.8, "rss_mb": 38.0, "new_lease_ms": 30.0}
GOALS = {"sync_s": FLANNELD["sync_s"] / 2, "rss_mb": FLANNELD["rss_mb"], "new_lease_ms": 30.0}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(ns: str, command: str) -> None:
    proc = subprocess.run(["nsenter", f"--net={netns.path_for(ns)}", "sh", "-c", command], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{command}: {proc.stderr}")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Gateway:
    """etcd's v3 JSON gateway over one kept-alive connection made inside etcd's namespace."""

    def __init__(self, ns: str, address: IPv4Address) -> None:
        self.ns = ns
        self.address = str(address)
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        with netns.entered(self.ns):
            conn = http.client.HTTPConnection(self.address, 2379, timeout=10)
            conn.connect()
        return conn

    def request(self, method: str, path: str, body: dict | None = None) -> bytes:
        for attempt in range(2):
            try:
                self.conn.request(method, path, json.dumps(body) if body is not None else None)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"etcd gateway answered {resp.status} to {path}: {data[:200]!r}")
                return data
            except (http.client.HTTPException, ConnectionError):
                if attempt:
                    raise
                self.conn.close()
                self.conn = self._connect()
        raise AssertionError("unreachable")

    def grant(self, ttl: int) -> str:
        return json.loads(self.request("POST", "/v3/lease/grant", {"TTL": ttl}))["ID"]

    def put(self, key: str, value: str, lease: str | None = None) -> None:
        body = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = lease
        self.request("POST", "/v3/kv/put", body)

    def put_many(self, items: list[tuple[str, str]], lease: str) -> None:
        for start in range(0, len(items), TXN_OPS):
            ops = [{"requestPut": {"key": b64(k), "value": b64(v), "lease": lease}}
                   for k, v in items[start:start + TXN_OPS]]
            self.request("POST", "/v3/kv/txn", {"success": ops})

    def delete(self, key: str, prefix: bool = False) -> None:
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(key[:-1] + chr(ord(key[-1]) + 1))
        self.request("POST", "/v3/kv/deleterange", body)

    def metrics(self) -> dict[str, float]:
        found = {}
        for line in self.request("GET", "/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                found[name] = float(value)
        return found

    def close(self) -> None:
        self.conn.close()


def peer_subnet(i: int) -> IPv4Network:
    return IPv4Network(f"10.{1 + i // 256}.{i % 256}.0/24")


def peer_ip(i: int) -> IPv4Address:
    return IPv4Address(f"192.168.{1 + i // 250}.{1 + i % 250}")


def lease_value(backend: str, public_ip: IPv4Address, i: int) -> str:
    """A lease exactly as flanneld writes it."""
    doc: dict[str, object] = {"PublicIP": str(public_ip), "PublicIPv6": None, "BackendType": backend}
    if backend == "vxlan":
        doc["BackendData"] = {"VNI": 1, "VtepMAC": f"0a:58:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01"}
    return json.dumps(doc, separators=(",", ":"))


def lease_key(subnet: IPv4Network) -> str:
    return f"{PREFIX}/subnets/{subnet.network_address}-{subnet.prefixlen}"


@dataclass
class Setup:
    prefix: str
    workdir: str
    etcd_ns: str
    agent_ns: str
    etcd: EtcdCluster
    nice: int = 0  # scheduling priority of etcd and the agent (negative: ahead of other processes)
    gateway: Gateway | None = None
    agent: subprocess.Popen | None = None

    @property
    def subnet_file(self) -> str:
        return os.path.join(self.workdir, "subnet.env")

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "agent.log")


def build(prefix: str, nice: int = 0) -> Setup:
    workdir = tempfile.mkdtemp(prefix=f"muslin-{prefix}-")
    etcd_ns, agent_ns = f"{prefix}etcd", f"{prefix}agent"
    netns.create(etcd_ns)
    netns.create(agent_ns)
    sh(agent_ns, f"ip link add eth0 type veth peer name eth0 netns {etcd_ns} && "
                 f"ip addr add {AGENT_IP}/{UNDERLAY_LEN} dev eth0 && ip link set eth0 up")
    sh(etcd_ns, f"ip addr add {ETCD_IP}/{UNDERLAY_LEN} dev eth0 && ip link set eth0 up")
    etcd = EtcdCluster([Host(etcd_ns, ETCD_IP)], os.path.join(workdir, "etcd"))
    setup = Setup(prefix, workdir, etcd_ns, agent_ns, etcd, nice)
    etcd.start()
    for pid in etcd.pids():
        os.setpriority(os.PRIO_PROCESS, pid, setup.nice)
    setup.gateway = Gateway(etcd_ns, ETCD_IP)
    return setup


def tear_down(setup: Setup) -> None:
    stop_agent(setup)
    if setup.gateway:
        setup.gateway.close()
    setup.etcd.stop()
    for ns in (setup.agent_ns, setup.etcd_ns):
        if netns.exists(ns):
            netns.remove(ns)
    shutil.rmtree(setup.workdir, ignore_errors=True)


def start_agent(setup: Setup) -> subprocess.Popen:
    if os.path.exists(setup.subnet_file):
        os.unlink(setup.subnet_file)
    args = [sys.executable, "-m", "muslin.fabric.cli", f"--etcd-endpoints=http://{ETCD_IP}:2379",
            f"--etcd-prefix={PREFIX}", "--iface=eth0", f"--subnet-file={setup.subnet_file}"]
    with open(setup.log_path, "a") as log:
        # nsenter execs the agent (no fork for a network namespace alone): the pid is the agent's.
        setup.agent = subprocess.Popen(["nsenter", f"--net={netns.path_for(setup.agent_ns)}", *args], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                                       preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, setup.nice))
    return setup.agent


def stop_agent(setup: Setup) -> None:
    if setup.agent is not None:
        if setup.agent.poll() is None:
            setup.agent.terminate()
            try:
                setup.agent.wait(15)
            except subprocess.TimeoutExpired:
                setup.agent.kill()
                setup.agent.wait()
        setup.agent = None


def clear_kernel(setup: Setup) -> None:
    """The agent's devices and routes gone, so the next run programs every peer from nothing."""
    sh(setup.agent_ns, f"ip link del flannel.1 2>/dev/null; ip route flush root {NETWORK} 2>/dev/null; true")
    if count_with_ip(setup):
        raise RuntimeError(f"routes in {NETWORK} left in {setup.agent_ns} after clearing it")


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


def check_agent(setup: Setup) -> None:
    if setup.agent is not None and setup.agent.poll() is not None:
        with open(setup.log_path) as f:
            raise RuntimeError(f"the agent exited {setup.agent.returncode}:\n{f.read()[-3000:]}")


def count_routes(sock: rtnl.RtnlSocket) -> tuple[int, int]:
    """(main-table /24 routes, the oif of one of them): the peers' routes (the underlay's is a /16), counted
    from the raw dump without decoding it, so the poll leaves the CPU to the agent it is timing."""
    count, oif, sample = 0, 0, b""
    for _, body in sock.dump(route.RTM_GETROUTE, route.RTMSG.pack(2, 0, 0, 0, 0, 0, 0, 0, 0)):
        if body[1] == 24 and body[4] == route.RT_TABLE_MAIN:
            count += 1
            sample = body
    if sample:
        oif = route.U32.unpack(rtnl.attrs(sample, route.RTMSG.size).get(route.RTA_OIF, bytes(4)))[0]
    return count, oif


def count_permanent(sock: rtnl.RtnlSocket, family: int, index: int) -> int:
    """Permanent neighbours (AF_INET) or fdb entries (AF_BRIDGE) of one link."""
    count = 0
    for _, body in sock.dump(neighbour.RTM_GETNEIGH, neighbour.NDMSG.pack(family, 0, 0, 0, 0)):
        _, ifindex, state, _, _ = neighbour.NDMSG.unpack_from(body)
        count += ifindex == index and bool(state & neighbour.NUD_PERMANENT)
    return count


def programmed(sock: rtnl.RtnlSocket, backend: str, peers: int) -> bool:
    """Every peer's kernel state is there: routes (and, for vxlan, neighbours and fdb entries, which the
    agent writes before each route, so they are only counted once the routes are complete)."""
    routes, oif = count_routes(sock)
    if routes < peers:
        return False
    return backend != "vxlan" or min(count_permanent(sock, neighbour.AF_INET, oif),
                                     count_permanent(sock, neighbour.AF_BRIDGE, oif)) >= peers


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def initial_sync(setup: Setup, backend: str, peers: int, timeout: float = 120) -> tuple[float, float, float]:
    """Seconds from the agent's start to its lease (subnet file), and to every peer programmed; and the CPU
    seconds the agent used by then (what the wall time is made of on a machine to itself)."""
    with rtnl.RtnlSocket(setup.agent_ns) as sock:
        start = time.perf_counter()
        start_agent(setup)
        leased = None
        while True:
            now = time.perf_counter()
            if leased is None and os.path.exists(setup.subnet_file):
                leased = now - start
            if programmed(sock, backend, peers):
                assert setup.agent
                return leased or now - start, now - start, cpu_seconds(setup.agent.pid)
            check_agent(setup)
            if now - start > timeout:
                raise RuntimeError(f"not every peer programmed after {timeout} s")
            time.sleep(0.025)


def count_with_ip(setup: Setup) -> int:
    """The routes inside the network as ip(8) lists them: a check of the netlink reading above."""
    out = subprocess.run(["nsenter", f"--net={netns.path_for(setup.agent_ns)}", "ip", "-4", "route", "show",
                          "root", str(NETWORK)], capture_output=True, text=True, timeout=30).stdout
    return len(out.splitlines())


def wait_route(sock: rtnl.RtnlSocket, subnet: IPv4Network, present: bool, start: float,
               timeout: float = 5) -> float:
    """Milliseconds from start until the kernel routes (or no longer routes) into subnet."""
    probe = subnet.network_address + 1
    while True:
        gateway, oif = route.route_sources(sock, [probe])[probe]
        if (oif is not None) == present:
            return (time.perf_counter() - start) * 1000
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"route to {subnet} still {'missing' if present else 'there'} after {timeout} s")
        time.sleep(0.0005)


@dataclass
class Traffic:
    watch_messages: float
    other_requests: dict[str, float]
    received_bytes: float  # by the agent's host on its underlay link, headers included
    sent_bytes: float


WATCH_SENT = 'grpc_server_msg_sent_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"}'


def _started(metrics: dict[str, float]) -> dict[str, float]:
    """Unary requests started, by method (the gateway's calls included; Put and DeleteRange are the writer's)."""
    found: dict[str, float] = {}
    for name, value in metrics.items():
        if name.startswith("grpc_server_started_total{") and 'grpc_type="unary"' in name:
            method = name.split('grpc_method="', 1)[1].split('"', 1)[0]
            found[method] = found.get(method, 0) + value
    return found


def link_bytes(ns: str) -> tuple[int, int]:
    """(received, sent) bytes of eth0 in ns: all the agent's traffic with etcd, whatever the protocol."""
    out = subprocess.run(["nsenter", f"--net={netns.path_for(ns)}", "ip", "-s", "-j", "link", "show", "dev", "eth0"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    stats = json.loads(out)[0]["stats64"]
    return stats["rx"]["bytes"], stats["tx"]["bytes"]


def latency_and_traffic(setup: Setup, backend: str, samples: int) -> tuple[list[float], list[float], Traffic]:
    """New-lease -> route and removal -> no route (ms), and etcd traffic per lease change. The writer talks
    to etcd inside etcd's namespace, so the agent's link carries only the agent's own traffic."""
    assert setup.gateway
    gw = setup.gateway
    added, removed = [], []
    with rtnl.RtnlSocket(setup.agent_ns) as sock:
        before, link_before = gw.metrics(), link_bytes(setup.agent_ns)
        for n in range(samples):
            subnet = IPv4Network(f"10.250.{n}.0/24")
            start = time.perf_counter()
            gw.put(lease_key(subnet), lease_value(backend, peer_ip(5000 + n), 60000 + n))
            added.append(wait_route(sock, subnet, True, start))
            start = time.perf_counter()
            gw.delete(lease_key(subnet))
            removed.append(wait_route(sock, subnet, False, start))
            time.sleep(0.05)
        after, link_after = gw.metrics(), link_bytes(setup.agent_ns)
    changes = 2 * samples
    requests = _started(after)
    for method, count in _started(before).items():
        requests[method] = requests.get(method, 0) - count
    other = {m: v / changes for m, v in requests.items() if v and m not in ("Put", "DeleteRange")}
    traffic = Traffic((after.get(WATCH_SENT, 0) - before.get(WATCH_SENT, 0)) / changes, other,
                      (link_after[0] - link_before[0]) / changes, (link_after[1] - link_before[1]) / changes)
    return added, removed, traffic


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def bench_backend(setup: Setup, backend: str, peers: int, runs: int, samples: int, idle_seconds: float) -> None:
    assert setup.gateway
    gw = setup.gateway
    gw.delete(f"{PREFIX}/", prefix=True)
    gw.put(f"{PREFIX}/config", json.dumps({"Network": str(NETWORK), "Backend": {"Type": backend}}))
    lease = gw.grant(LEASE_TTL)
    gw.put_many([(lease_key(peer_subnet(i)), lease_value(backend, peer_ip(i), i)) for i in range(peers)], lease)
    syncs, leases, cpus = [], [], []
    rss_synced = 0.0
    for run in range(runs):
        clear_kernel(setup)
        leased, synced, cpu = initial_sync(setup, backend, peers)
        leases.append(leased)
        syncs.append(synced)
        cpus.append(cpu)
        assert setup.agent
        rss_synced = memory_mb(setup.agent.pid)[0]
        print(f"  {backend} run {run + 1}: lease taken at {leased:.2f} s, every peer programmed at {synced:.2f} s "
              f"(agent CPU {cpu:.2f} s), RSS {rss_synced:.1f} MB", flush=True)
        if run < runs - 1:
            stop_agent(setup)
    # Idle: only the periodic reconcile runs (every 5 s, flanneld's --iptables-resync default).
    assert setup.agent
    cpu_before = cpu_seconds(setup.agent.pid)
    time.sleep(idle_seconds)
    idle_cpu = (cpu_seconds(setup.agent.pid) - cpu_before) / idle_seconds
    listed = count_with_ip(setup)
    if listed < peers:
        raise RuntimeError(f"ip route lists {listed} routes in {NETWORK}, not {peers}")
    added, removed, traffic = latency_and_traffic(setup, backend, samples)
    assert setup.agent
    check_agent(setup)
    rss, hwm = memory_mb(setup.agent.pid)
    stop_agent(setup)
    clear_kernel(setup)

    sync = statistics.median(syncs)
    new = statistics.median(added)
    print(f"{backend} at {peers} peers (muslin-flanneld measured here; flanneld v0.20.2: issue #11's figures, "
          "not measured here)", flush=True)
    print(f"  initial sync: median {sync:.2f} s of {runs} (lease taken at {statistics.median(leases):.2f} s; agent CPU "
          f"{statistics.median(cpus):.2f} s; machine load {os.getloadavg()[0]:.1f}, nice {setup.nice}) | "
          f"flanneld {FLANNELD['sync_s']:.1f} s | ratio {sync / FLANNELD['sync_s']:.2f} "
          f"(goal <= {GOALS['sync_s']:.2f} s: {'met' if sync <= GOALS['sync_s'] else 'NOT met'})", flush=True)
    print(f"  idle (periodic reconcile every 5 s): agent CPU {100 * idle_cpu:.1f} % of a core over {idle_seconds:.0f} s",
          flush=True)
    print(f"  RSS: {rss_synced:.1f} MB synced, {rss:.1f} MB after the samples, peak {hwm:.1f} MB | "
          f"flanneld {FLANNELD['rss_mb']:.0f} MB | ratio {rss / FLANNELD['rss_mb']:.2f} "
          f"(goal <= {GOALS['rss_mb']:.0f} MB: {'met' if rss <= GOALS['rss_mb'] else 'NOT met'})", flush=True)
    print(f"  new lease -> route: median {new:.1f} ms, p95 {p95(added):.1f} ms over {samples} | "
          f"flanneld {FLANNELD['new_lease_ms']:.0f} ms | ratio {new / FLANNELD['new_lease_ms']:.2f} "
          f"(goal <= {GOALS['new_lease_ms']:.0f} ms: {'met' if new <= GOALS['new_lease_ms'] else 'NOT met'}); "
          f"lease removed -> no route: median {statistics.median(removed):.1f} ms, p95 {p95(removed):.1f} ms",
          flush=True)
    others = ", ".join(f"{m} {v:.2f}" for m, v in sorted(traffic.other_requests.items())) or "none"
    print(f"  etcd per lease change: {traffic.watch_messages:.2f} watch messages, other requests: {others}; "
          f"agent's link: {traffic.received_bytes:.0f} bytes in, {traffic.sent_bytes:.0f} out, headers and TCP "
          f"acks included (one lease value is {len(lease_value(backend, peer_ip(0), 0))} bytes)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="initial syncs per backend (median)")
    parser.add_argument("--samples", type=int, default=15, help="new leases per backend")
    parser.add_argument("--backend", choices=("vxlan", "host-gw"), action="append")
    parser.add_argument("--nice", type=int, default=0,
                        help="run etcd and the agent at this niceness (e.g. -10 on a machine shared with other load, "
                             "so that its wall times show the agent's own cost; printed with the results)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle agent CPU measured after sync")
    args = parser.parse_args()
    if not 1 <= args.peers <= 250 * 200:
        parser.error("--peers must be between 1 and 50000")
    setup = build(f"fs{uuid.uuid4().hex[:5]}", args.nice)
    try:
        for backend in args.backend or ["vxlan", "host-gw"]:
            bench_backend(setup, backend, args.peers, args.runs, args.samples, args.idle)
    finally:
        tear_down(setup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
