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
HAND_VNI = 77
HAND_SUBNET = "10.77.0"


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


def measure_engines(engines: list[Engine], seconds: int, trials: int, label: str) -> tuple[list[float], list[float]]:
    """Create-to-listed times (seconds) and iperf3 Gbit/s between a container on each engine."""
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
    one.docker("network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "benchov")
    wait_for(lambda: "benchov" in two.docker("network", "ls", "--format", "{{.Name}}").stdout.split(), 30,
             "benchov on the second engine")
    for d, name in ((one, "srv"), (two, "cli")):
        d.docker("run", "-d", "--name", name, "--network", "benchov", "busybox", "sleep", "3600")
    server_ip = one.docker("inspect", "-f", "{{.NetworkSettings.Networks.benchov.IPAddress}}", "srv").stdout.strip()
    client_ns, server_ns = two.netns_of("cli"), one.netns_of("srv")
    # namespaces by path (a container's /proc/PID/ns/net): in_ns and iperf take those too
    wait_for(lambda: in_ns(client_ns, "busybox", "ping", "-c1", "-W1", server_ip).returncode == 0, 30, f"{label} ping")
    rates = [iperf(client_ns, server_ns, server_ip, seconds) for _ in range(trials)]
    for d, name in ((one, "srv"), (two, "cli")):
        d.docker("rm", "-f", name)
    one.docker("network", "rm", "benchov")
    return listed, rates


def hand_made(underlay: topology.Underlay, seconds: int, trials: int) -> list[float]:
    """The path muslind programs, with ip(8): per host a container namespace, a veth into a bridge
    with a vxlan (same VNI, UDP 4789, nolearning, proxy), MTU 1450, static fdb and neighbours."""
    a, b = underlay.hosts[:2]
    names = [f"{underlay.prefix}hc{i}" for i in (1, 2)]
    try:
        for i, (host, c) in enumerate(((a, names[0]), (b, names[1]))):
            netns.create(c)
            mac = f"02:42:0a:4d:00:0{i + 2}"
            sh(host.name, f"ip link add hbr type bridge && ip link set hbr mtu 1450 up && "
                          f"ip link add hvx type vxlan id {HAND_VNI} local {host.address} dev eth0 dstport 4789 "
                          f"nolearning proxy && ip link set hvx mtu 1450 master hbr up && "
                          f"ip link add hve type veth peer name eth0 netns {netns.path_for(c)} && "
                          f"ip link set hve mtu 1450 master hbr up")
            sh(c, f"ip link set eth0 mtu 1450 address {mac} up && ip addr add {HAND_SUBNET}.{i + 2}/24 dev eth0 && "
                  "ip link set lo up")
        for me, peer, j in ((a, b, 1), (b, a, 0)):
            mac = f"02:42:0a:4d:00:0{j + 2}"
            sh(me.name, f"bridge fdb append {mac} dev hvx dst {peer.address} self permanent && "
                        f"ip neigh replace {HAND_SUBNET}.{j + 2} lladdr {mac} dev hvx nud permanent")
        server_ip = f"{HAND_SUBNET}.2"
        wait_for(lambda: in_ns(names[1], "busybox", "ping", "-c1", "-W1", server_ip).returncode == 0, 15, "hand-made ping")
        return [iperf(names[1], names[0], server_ip, seconds) for _ in range(trials)]
    finally:
        for name in names:
            netns.remove(name)
        for host in (a, b):
            in_ns(host.name, "sh", "-c", "ip link del hvx 2>/dev/null; ip link del hbr 2>/dev/null; true")


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
        listed, rates = measure_engines(engines, args.seconds, args.trials, "muslind")
        report("muslind overlay", listed, rates)
        results["muslin"] = statistics.median(rates)
        for e in engines:
            e.stop()
        engines.clear()

        rates = hand_made(underlay, args.seconds, args.trials)
        report("hand-made VXLAN path", None, rates)
        results["hand"] = statistics.median(rates)

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
            listed, rates = measure_engines(engines, args.seconds, args.trials, "dockerd")
            report("Docker 20.10 classic overlay", listed, rates)
            results["docker"] = statistics.median(rates)
    finally:
        for e in engines:
            e.stop()
        etcd.stop()
        topology.teardown(prefix)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"muslind / hand-made: {results['muslin'] / results['hand']:.2f} (goal >= 0.95)")
    if "docker" in results:
        print(f"muslind / Docker 20.10: {results['muslin'] / results['docker']:.2f} (goal >= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
