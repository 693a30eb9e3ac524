"""Overlay benchmark: container-to-container TCP across two simulated hosts over muslind's overlay
network, against the same VXLAN path built by hand and against Docker 20.10's own classic overlay
(two reference dockerds on the same etcd), in the same run; and the time from `network create` on one
engine to the network being listed on the other.

    flock -o /tmp/muslin-refdocker.lock .venv/bin/python bench/bench_overlay.py [--seconds 4] [--trials 5] [--no-docker]

Each dockerd runs in a host's namespace under `unshare --uts` with a hostname of its own (Docker's
gossip refuses two nodes of one name), with `--cluster-store etcd://...` (etcd serves v2, which
Docker's libkv speaks). Every iperf3 run is bounded; everything runs in namespaces this script creates
and removes. Prints one line per measurement and the ratios the issue sets goals for.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_fabric import iperf  # noqa: E402
from muslin.kernel import netns  # noqa: E402
from muslin.lab import topology  # noqa: E402
from muslin.lab.etcd import EtcdCluster  # noqa: E402
from muslin.lab.lab import unmount_under  # noqa: E402
from muslin.lab.rig import in_ns, wait_for  # noqa: E402

MUSLIND = str(Path(sys.executable).with_name("muslind"))
DNS_REDIRECT = "iptables -t nat -A OUTPUT -d 127.0.0.11 -p udp --dport 53 -j DNAT --to-destination 127.0.0.11:5353"


class Engine:
    """A muslind or a dockerd in one host's namespace, driven by the docker CLI."""

    def __init__(self, host: topology.Host, root: Path, argv: list[str]) -> None:
        self.host, self.root = host, root
        self.sock = root / "docker.sock"
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen(["nsenter", f"--net={host.netns}", *argv], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: self.docker("version", check=False).returncode == 0, 60, f"the engine on {host.name}")

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(["docker", *args], env={**os.environ, "DOCKER_HOST": f"unix://{self.sock}"},
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} on {self.host.name}: {proc.stderr}")
        return proc

    def netns_of(self, container: str) -> str:
        pid = self.docker("inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
        return f"/proc/{pid}/ns/net"

    def stop(self) -> None:
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        unmount_under(self.root)


def ensure_busybox(engine: Engine, workdir: Path) -> None:
    """dockerd has no busybox image and no registry: imported from the host's busybox-static."""
    if engine.docker("image", "inspect", "busybox", check=False).returncode == 0:
        return
    tar = workdir / "busybox.tar"
    if not tar.exists():
        rootfs = workdir / "busybox-rootfs"
        for d in ("bin", "tmp", "etc", "proc", "sys", "dev"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        shutil.copy(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
        for applet in subprocess.run(["busybox", "--list"], capture_output=True, text=True).stdout.split():
            if applet != "busybox":
                (rootfs / "bin" / applet).symlink_to("busybox")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    engine.docker("import", "-c", 'CMD ["sh"]', "-c", "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin", str(tar),
                  "busybox:latest")


def listing_times(engines: list[Engine], trials: int) -> list[float]:
    """Seconds from `network create -d overlay` on the first engine to the network listed on the second."""
    one, two = engines
    listed: list[float] = []
    for i in range(trials):
        name = f"bench{i}"
        started = time.monotonic()
        one.docker("network", "create", "-d", "overlay", name)
        wait_for(lambda: name in two.docker("network", "ls", "--format", "{{.Name}}").stdout.split(), 30,
                 f"{name} on the second engine")
        listed.append(time.monotonic() - started)
        one.docker("network", "rm", name)
    return listed


class EnginePath:
    """A container on each engine on one overlay network: the engines' path between two hosts."""

    def __init__(self, engines: list[Engine], label: str) -> None:
        self.engines, self.label = engines, label

    def build(self) -> None:
        one, two = self.engines
        one.docker("network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "benchov")
        wait_for(lambda: "benchov" in two.docker("network", "ls", "--format", "{{.Name}}").stdout.split(), 30,
                 "benchov on the second engine")
        for d, name in ((one, "srv"), (two, "cli")):
            d.docker("run", "-d", "--name", name, "--network", "benchov", "busybox", "sleep", "3600")
        self.server_ip = one.docker("inspect", "-f", "{{.NetworkSettings.Networks.benchov.IPAddress}}",
                                    "srv").stdout.strip()
        # namespaces by path (a container's /proc/PID/ns/net): in_ns and iperf take those too
        self.client_ns, self.server_ns = two.netns_of("cli"), one.netns_of("srv")
        wait_for(lambda: in_ns(self.client_ns, "busybox", "ping", "-c1", "-W1", self.server_ip).returncode == 0, 30,
                 f"{self.label} ping")

    def measure(self, seconds: int) -> float:
        return iperf(self.client_ns, self.server_ns, self.server_ip, seconds)


def alternate(paths: list[EnginePath | HandMade], seconds: int, trials: int) -> list[list[float]]:
    """Trials of the paths in turn (A B A B ...), so the machine's changing load falls on each alike."""
    rates: list[list[float]] = [[] for _ in paths]
    for _ in range(trials):
        for i, path in enumerate(paths):
            rates[i].append(path.measure(seconds))
    return rates


class HandMade:
    """The path muslind programs (libnetwork's), with ip(8): per host a container namespace and a network
    namespace holding a bridge with a vxlan (made on the host, then moved in: its socket stays on the
    underlay; its own VNI, UDP 4789, nolearning, proxy), the container's veth on that bridge, MTU 1450,
    static fdb and neighbours. Built beside the engines' path, so trials of both alternate under the same
    load.

    ``dns_redirect``: the container namespaces also get the one NAT rule an engine's embedded DNS puts
    there (dockerd's and muslind's alike), which turns connection tracking on for every packet of the
    container: the same path as the engines' in full, where without it only the network part is."""

    def __init__(self, underlay: topology.Underlay, number: int, dns_redirect: bool) -> None:
        self.hosts = underlay.hosts[:2]
        self.number, self.dns_redirect = number, dns_redirect
        self.names = [f"{underlay.prefix}h{number}c{i}" for i in (1, 2)]
        self.networks = [f"{underlay.prefix}h{number}n{i}" for i in (1, 2)]
        self.subnet = f"10.7{number}.0"
        self.bridge, self.vxlan, self.veth = f"hbr{number}", f"hvx{number}", f"hve{number}"
        self.server_ip = f"{self.subnet}.2"

    def build(self) -> None:
        a, b = self.hosts
        br, vx, ve, n = self.bridge, self.vxlan, self.veth, self.number
        for i, (host, c, ov) in enumerate(((a, self.names[0], self.networks[0]), (b, self.names[1], self.networks[1]))):
            netns.create(c)
            netns.create(ov)
            mac = f"02:42:0a:4{n}:00:0{i + 2}"
            sh(host.name, f"ip link add {vx} type vxlan id {70 + n} local {host.address} dev eth0 dstport 4789 "
                          f"nolearning proxy && ip link set {vx} netns {netns.path_for(ov)}")
            sh(ov, f"ip link add {br} type bridge && ip link set {br} mtu 1450 up && "
                   f"ip link set {vx} mtu 1450 master {br} up && "
                   f"ip link add {ve} type veth peer name eth0 netns {netns.path_for(c)} && "
                   f"ip link set {ve} mtu 1450 master {br} up")
            sh(c, f"ip link set eth0 mtu 1450 address {mac} up && ip addr add {self.subnet}.{i + 2}/24 dev eth0 && "
                  "ip link set lo up" + (f" && {DNS_REDIRECT}" if self.dns_redirect else ""))
        for ov, peer, j in ((self.networks[0], b, 1), (self.networks[1], a, 0)):
            mac = f"02:42:0a:4{n}:00:0{j + 2}"
            sh(ov, f"bridge fdb append {mac} dev {vx} dst {peer.address} self permanent && "
                        f"ip neigh replace {self.subnet}.{j + 2} lladdr {mac} dev {vx} nud permanent")
        wait_for(lambda: in_ns(self.names[1], "busybox", "ping", "-c1", "-W1", self.server_ip).returncode == 0, 15,
                 "hand-made ping")

    def measure(self, seconds: int) -> float:
        return iperf(self.names[1], self.names[0], self.server_ip, seconds)

    def teardown(self) -> None:
        for ov in self.networks:
            in_ns(ov, "sh", "-c", f"ip link del {self.vxlan} 2>/dev/null; true")
        for name in self.names + self.networks:
            netns.remove(name)


def sh(ns: str, command: str) -> None:
    proc = in_ns(ns, "sh", "-c", command)
    if proc.returncode != 0:
        raise RuntimeError(f"{command}: {proc.stderr}")


def report(label: str, listed: list[float] | None, rates: list[float]) -> None:
    line = f"{label:<28} TCP {statistics.median(rates):6.2f} Gbit/s (median of {len(rates)}: " \
           f"{', '.join(f'{r:.2f}' for r in rates)})"
    if listed:
        line += f"; create -> listed on the other engine: median {statistics.median(listed) * 1000:.0f} ms, " \
                f"max {max(listed) * 1000:.0f} ms"
    print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--no-docker", action="store_true", help="skip Docker 20.10's overlay")
    args = parser.parse_args()
    prefix = f"bo{uuid.uuid4().hex[:5]}"
    underlay = topology.create(prefix, 2)
    workdir = Path(tempfile.mkdtemp(prefix=f"muslin-{prefix}-"))
    etcd = EtcdCluster(underlay.hosts, str(workdir / "etcd"))
    engines: list[Engine] = []
    results: dict[str, float] = {}
    try:
        etcd.start()
        store = "etcd://" + ",".join(f"{h.address}:2379" for h in underlay.hosts)
        for i, host in enumerate(underlay.hosts):
            root = workdir / f"muslind{i + 1}"
            engines.append(Engine(host, root, [MUSLIND, "-H", f"unix://{root / 'docker.sock'}", "--data-root",
                                               str(root / "data"), "--exec-root", str(root / "run"),
                                               "--cluster-store", store, "--cluster-advertise", "eth0:2376"]))
        listed = listing_times(engines, args.trials)
        hands = [HandMade(underlay, 1, dns_redirect=False), HandMade(underlay, 2, dns_redirect=True)]
        for hand in hands:
            hand.build()
        muslin = EnginePath(engines, "muslind")
        muslin.build()
        muslin_rates, bare_rates, full_rates = alternate([muslin, *hands], args.seconds, args.trials)
        report("muslind overlay", listed, muslin_rates)
        report("hand-made VXLAN path", None, bare_rates)
        report("hand-made + DNS redirect", None, full_rates)
        results["muslin"], results["hand"] = statistics.median(muslin_rates), statistics.median(bare_rates)
        results["hand+dns"] = statistics.median(full_rates)
        for e in engines:
            e.stop()
        engines.clear()
        for hand in hands:
            hand.teardown()

        if not args.no_docker and shutil.which("dockerd"):
            for i, host in enumerate(underlay.hosts):
                root = workdir / f"dockerd{i + 1}"
                name = f"{prefix}-ref{i + 1}"
                engines.append(Engine(host, root, [
                    "unshare", "--uts", "sh", "-c",
                    f"hostname {name} && exec dockerd --data-root {root / 'data'} --exec-root {root / 'exec'} "
                    f"-H unix://{root / 'docker.sock'} --pidfile {root / 'docker.pid'} "
                    f"--containerd-namespace {name} --containerd-plugins-namespace {name}-plugins "
                    f"--cluster-store {store} --cluster-advertise eth0:2376"]))
            for e in engines:
                ensure_busybox(e, workdir)
            listed = listing_times(engines, args.trials)
            docker = EnginePath(engines, "dockerd")
            docker.build()
            (rates,) = alternate([docker], args.seconds, args.trials)
            report("Docker 20.10 classic overlay", listed, rates)
            results["docker"] = statistics.median(rates)
    finally:
        for e in engines:
            e.stop()
        etcd.stop()
        topology.teardown(prefix)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"muslind / hand-made: {results['muslin'] / results['hand']:.2f} (goal >= 0.95); "
          f"/ hand-made with the DNS redirect: {results['muslin'] / results['hand+dns']:.2f}")
    if "docker" in results:
        print(f"muslind / Docker 20.10: {results['muslin'] / results['docker']:.2f} (goal >= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
