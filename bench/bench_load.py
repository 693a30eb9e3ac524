"""Cost under load (issue #11): muslind and the reference dockerd, each empty and then holding N user
networks, M running containers (busybox sleep, spread over those networks) and P published ports,
timed through the docker CLI side by side. Also muslind's restart time at that load and the memory of
both daemons (requirements 4 and 5).

Run: flock -o /tmp/muslin-refdocker.lock .venv/bin/python bench/bench_load.py \
         [--networks 200 --containers 1000 --ports 500] [--rounds 10] [--budget 2400] [--only muslind|docker]
         [--firewall-backend iptables|nftables|both]
(root; everything inside namespaces, everything removed after; the full load takes a while on 2 cores:
use e.g. --networks 20 --containers 100 --ports 50 for a quick run)

``--firewall-backend both`` loads muslind once and times it with each backend, restarting it on the
same data root in between (a restart with the other backend swaps the rules; the containers run on).

Loading goes through the Docker SDK with a few clients at once (it is set-up, not what is measured)
and stops when its share of ``--budget`` runs out: the load reached is printed with the figures.
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker as docker_sdk
from common import REFERENCE, REFERENCE_SOCK, bench_namespace, docker

from muslin.kernel import netns
from muslin.lab.lab import unmount_under
from muslin.runtime.runtime import shim_processes

LOAD_PREFIX = "load"
PUBLISHED_BASE = 20000  # host ports of the load: 20000, 20001, ...
BENCH_PORT = 18080  # the timed run -d -p
BENCH_SUBNET = "10.250.0.0/24"  # the timed network create (outside every load subnet)
LOADERS = 4  # SDK clients loading at once
START_SECONDS = 300.0  # a restart with a thousand containers on a busy machine: reported, however long


@dataclass
class Load:
    networks: int
    containers: int
    ports: int


@dataclass
class Figures:
    """Medians in seconds per operation, at each load."""

    ops: dict[str, dict[str, float]] = field(default_factory=dict)  # op -> "empty"/"loaded" -> s
    reached: Load | None = None
    load_seconds: float = 0.0
    restart_seconds: float | None = None
    memory: dict[str, str] = field(default_factory=dict)


def network_subnet(i: int) -> str:
    return f"10.{100 + i // 256}.{i % 256}.0/24"


# -- the timed operations (docker CLI, as a user runs them) ------------------------------------------------
def _check(proc: subprocess.CompletedProcess) -> None:
    if proc.returncode:
        raise RuntimeError(f"{proc.args}: {proc.stderr.strip()}")


def network_create_rm(host: str) -> None:
    _check(docker(host, "network", "create", "--subnet", BENCH_SUBNET, "benchnet"))
    _check(docker(host, "network", "rm", "benchnet"))


def run_rm(host: str) -> None:
    _check(docker(host, "run", "--rm", "busybox", "true"))


def run_publish_rm(host: str) -> None:
    _check(docker(host, "run", "-d", "--name", "benchpub", "-p", f"{BENCH_PORT}:80", "busybox", "sleep", "60"))
    _check(docker(host, "rm", "-f", "benchpub"))


OPERATIONS = {
    "network create + rm": network_create_rm,
    "run --rm busybox true": run_rm,
    "run -d -p + rm -f": run_publish_rm,
}


def time_operations(host: str, rounds: int, figures: Figures, label: str, note: str = "") -> None:
    for name, op in OPERATIONS.items():
        op(host)  # warm up (images, caches, the first network's rules)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            op(host)
            times.append(time.perf_counter() - t0)
        figures.ops.setdefault(name, {})[label] = statistics.median(times)
        print(f"  {label:6s} {name:24s} {statistics.median(times) * 1000:8.1f} ms {note}", flush=True)


# -- loading ----------------------------------------------------------------------------------------------
def load(host: str, want: Load, deadline: float) -> Load:
    """Networks, then containers round-robin over them (the first ``ports`` with one published port),
    until done or ``deadline``; what was reached."""
    client = docker_sdk.DockerClient(base_url=host, timeout=120)
    reached = Load(0, 0, 0)
    try:
        with ThreadPoolExecutor(LOADERS) as pool:
            def make_network(i: int) -> None:
                if time.monotonic() < deadline:
                    ipam = docker_sdk.types.IPAMConfig(pool_configs=[docker_sdk.types.IPAMPool(subnet=network_subnet(i))])
                    client.networks.create(f"{LOAD_PREFIX}net{i}", driver="bridge", ipam=ipam)
                    reached.networks += 1
            list(pool.map(make_network, range(want.networks)))

            def make_container(i: int) -> None:
                if time.monotonic() >= deadline:
                    return
                ports = {"80/tcp": PUBLISHED_BASE + i} if i < want.ports else {}
                network = f"{LOAD_PREFIX}net{i % reached.networks}" if reached.networks else "bridge"
                client.containers.run("busybox", ["sleep", "86400"], name=f"{LOAD_PREFIX}c{i}", detach=True,
                                      network=network, ports=ports)
                reached.containers += 1
                reached.ports += bool(ports)
                if reached.containers % 100 == 0:
                    print(f"    loaded {reached.containers} containers", flush=True)
            list(pool.map(make_container, range(want.containers)))
    finally:
        client.close()
    return reached


def unload(host: str) -> None:
    """Remove every container and every network of the load, a few clients at once."""
    client = docker_sdk.DockerClient(base_url=host, timeout=120)
    try:
        with ThreadPoolExecutor(LOADERS) as pool:
            containers = client.containers.list(all=True)
            list(pool.map(lambda c: c.remove(force=True), containers))
            networks = [n for n in client.networks.list() if n.name.startswith(LOAD_PREFIX)]
            list(pool.map(lambda n: n.remove(), networks))
    finally:
        client.close()


# -- memory -----------------------------------------------------------------------------------------------
def _kib(pid: int, key: str, source: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib(pids: list[int]) -> float:
    return sum(_kib(p, "VmRSS", "status") for p in pids) / 1024


def pss_mib(pids: list[int]) -> float:
    """Proportional set size: pages shared between the processes (forked shims) are counted once."""
    return sum(_kib(p, "Pss", "smaps_rollup") for p in pids) / 1024


def _pids_named(name: str, argument: str = "") -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and Path(cmdline[0].decode(errors="replace")).name == name and (
                    not argument or argument.encode() in cmdline):
                out.append(int(entry))
    return out


def memory_line(daemons: list[int], shims: list[int]) -> str:
    one = rss_mib(shims[:1])
    return (f"daemon RSS {rss_mib(daemons):7.1f} MiB | one shim RSS {one:5.1f} MiB | "
            f"{len(shims)} shims RSS {rss_mib(shims):7.1f} MiB, PSS {pss_mib(shims):7.1f} MiB")


# -- the two daemons --------------------------------------------------------------------------------------
class Muslind:
    """muslind in a namespace of its own, restartable on the same data root."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.ns = bench_namespace()
        self.root = Path(tempfile.mkdtemp(prefix="muslin-bench-"))
        self.host = f"unix://{self.root / 'docker.sock'}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start the daemon; seconds until it answers (its reconcile and recovery come first). It may
        write its bytecode (a development shell often sets PYTHONDONTWRITEBYTECODE): an installed
        muslind has it, and a restart that compiles every module first measures the checkout."""
        sock = self.root / "docker.sock"
        sock.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns.path_for(self.ns)}", str(Path(sys.executable).with_name("muslind")),
             "-H", self.host, "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "run"),
             "--firewall-backend", self.backend],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "muslind.log", "ab"), env=env)  # noqa: SIM115
        while time.perf_counter() - t0 < START_SECONDS:
            if self.proc.poll() is not None:
                raise RuntimeError(f"muslind exited; see {self.root / 'muslind.log'}")
            if sock.exists() and docker(self.host, "version").returncode == 0:
                return time.perf_counter() - t0
            time.sleep(0.02)
        log = (self.root / "muslind.log").read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"muslind did not answer within {START_SECONDS} s; its log ends:\n" + "\n".join(log))

    def start_steps(self) -> str:
        """What the daemon logged of its last start: its steps' times (engine.py)."""
        lines = (self.root / "muslind.log").read_text(errors="replace").splitlines()
        return " | ".join(line.split(" INFO ", 1)[1] for line in lines[-20:]
                          if " INFO start: " in line or " INFO engine ready " in line)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
            self.proc = None

    def pids(self) -> tuple[list[int], list[int]]:
        """(the daemon, its shims: the spawner last, it is one process per daemon). nsenter without
        --fork execs the daemon, so the Popen's pid is muslind's."""
        assert self.proc is not None
        shims = shim_processes(self.root / "run")
        spawners = [p for p in shims if _kib(p, "PPid", "status") == self.proc.pid]
        return [self.proc.pid], [p for p in shims if p not in spawners] + spawners

    def kill_containers(self) -> None:
        """What the unload left (it failed, or the daemon did): each container killed and deleted with
        runc itself, which also removes its cgroups. The shims are gone by now, and their containers
        would otherwise run on, orphaned."""
        runc = [shutil.which("runc") or "runc", "--root", str(self.root / "run" / "runtime" / "runc")]
        listed = subprocess.run([*runc, "list", "-q"], capture_output=True, text=True)
        for cid in listed.stdout.split():
            subprocess.run([*runc, "delete", "--force", cid], capture_output=True)

    @contextmanager
    def running(self) -> Iterator[Muslind]:
        netns.create(self.ns)
        try:
            self.start()
            yield self
        finally:
            try:
                if self.proc is not None:
                    unload(self.host)
            finally:
                self.stop()
                for pid in shim_processes(self.root):
                    os.kill(pid, signal.SIGKILL)
                self.kill_containers()
                unmount_under(self.root)
                netns.remove(self.ns)
                shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def reference() -> Iterator[str | None]:
    up = subprocess.run(["bash", str(REFERENCE), "up"], capture_output=True, text=True)
    host = f"unix://{REFERENCE_SOCK}"
    try:
        yield host if up.returncode == 0 else None
    finally:
        if up.returncode == 0:
            try:
                unload(host)
            except Exception as exc:  # the script's down removes what is left, one CLI call
                print(f"  unloading the reference failed: {exc}", flush=True)
        subprocess.run(["bash", str(REFERENCE), "down"], capture_output=True, text=True)


def docker_pids() -> tuple[list[int], list[int]]:
    dockerd = [int(Path(REFERENCE_SOCK).with_name("docker.pid").read_text())]
    containerd = [p for p in _pids_named("containerd") if _kib(p, "PPid", "status") in dockerd]
    shims = _pids_named("containerd-shim-runc-v2", "ref")
    return dockerd + containerd, shims


# -- the bench --------------------------------------------------------------------------------------------
def bench_muslind(want: Load, rounds: int, budget: float, restart: bool, backends: list[str]) -> dict[str, Figures]:
    """Figures per firewall backend: the empty engine timed with each, loaded once, then timed loaded
    with each (a restart switches backend); the restart figure is a plain restart, at the end, of the
    backend then running."""
    figures = {backend: Figures() for backend in backends}
    print("muslind", flush=True)
    with Muslind(backends[0]).running() as m:

        def switch(backend: str) -> None:
            if m.backend != backend:
                m.stop()
                m.backend = backend
                print(f"  restarted with --firewall-backend {backend} in {m.start():.2f} s", flush=True)

        for backend in backends:
            switch(backend)
            time_operations(m.host, rounds, figures[backend], "empty", backend)
        t0 = time.monotonic()
        reached = load(m.host, want, t0 + budget)
        load_seconds = time.monotonic() - t0
        print(f"  load {reached} in {load_seconds:.0f} s", flush=True)
        for backend in reversed(backends):
            f = figures[backend]
            f.reached, f.load_seconds = reached, load_seconds
            switch(backend)
            daemon, shims = m.pids()
            f.memory["loaded"] = memory_line(daemon, shims)
            time_operations(m.host, rounds, f, "loaded", backend)
        last = figures[m.backend]
        if restart:
            m.stop()
            last.restart_seconds = m.start()
            print(f"  restart {last.restart_seconds:.2f} s ({m.start_steps()})", flush=True)
            time_operations(m.host, 1, last, "after restart")
    return figures


def bench_docker(want: Load, rounds: int, budget: float) -> Figures | None:
    print("reference dockerd", flush=True)
    with reference() as host:
        if host is None:
            print("  reference not available", flush=True)
            return None
        figures = Figures()
        time_operations(host, rounds, figures, "empty")
        t0 = time.monotonic()
        figures.reached = load(host, want, t0 + budget)
        figures.load_seconds = time.monotonic() - t0
        print(f"  load {figures.reached} in {figures.load_seconds:.0f} s", flush=True)
        figures.memory["loaded"] = memory_line(*docker_pids())
        time_operations(host, rounds, figures, "loaded")
        return figures


def print_table(ours: Figures | None, ref: Figures | None) -> None:
    print()
    if ours is None:
        assert ref is not None
        for name in OPERATIONS:
            d = ref.ops[name]
            print(f"{name:24s} docker empty {d['empty'] * 1000:8.1f} ms, loaded {d['loaded'] * 1000:8.1f} ms "
                  f"({d['loaded'] / d['empty']:4.2f}x) at {ref.reached}")
        print(f"docker memory (dockerd + containerd): {ref.memory['loaded']}")
        return
    print(f"muslind load {ours.reached} (loaded in {ours.load_seconds:.0f} s)")
    if ref:
        print(f"dockerd load {ref.reached} (loaded in {ref.load_seconds:.0f} s)")
    print(f"{'operation':24s} {'muslind empty':>14s} {'loaded':>9s} {'x':>6s} | {'docker empty':>13s} "
          f"{'loaded':>9s} {'x':>6s} | {'loaded m/d':>10s} (goals: x <= 1.3, m/d <= 0.25)")
    for name in OPERATIONS:
        m = ours.ops[name]
        line = f"{name:24s} {m['empty'] * 1000:11.1f} ms {m['loaded'] * 1000:6.1f} ms {m['loaded'] / m['empty']:5.2f}x |"
        if ref:
            d = ref.ops[name]
            line += (f" {d['empty'] * 1000:10.1f} ms {d['loaded'] * 1000:6.1f} ms {d['loaded'] / d['empty']:5.2f}x |"
                     f" {m['loaded'] / d['loaded']:9.2f}x")
        print(line)
    if ours.restart_seconds is not None:
        print(f"muslind restart at this load: {ours.restart_seconds:.2f} s (goal < 3 s)")
    print(f"muslind memory: {ours.memory['loaded']}")
    if ref:
        print(f"docker memory (dockerd + containerd): {ref.memory['loaded']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=200)
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--ports", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds of loading per daemon, at most")
    parser.add_argument("--only", choices=("muslind", "docker"), help="one daemon (the other's column stays empty)")
    parser.add_argument("--no-restart", action="store_true", help="skip timing muslind's restart")
    parser.add_argument("--firewall-backend", choices=("iptables", "nftables", "both"), default="nftables",
                        help="muslind's --firewall-backend (nftables: its default where nf_tables works); both: "
                             "one load, timed with each, the restart on nftables")
    args = parser.parse_args()
    want = Load(args.networks, args.containers, min(args.ports, args.containers))
    backends = ["nftables", "iptables"] if args.firewall_backend == "both" else [args.firewall_backend]
    ours = {} if args.only == "docker" else bench_muslind(want, args.rounds, args.budget, not args.no_restart, backends)
    ref = None if args.only == "muslind" else bench_docker(want, args.rounds, args.budget)
    if not ours:
        print_table(None, ref)
    for backend, figures in ours.items():
        print(f"\n== muslind --firewall-backend {backend}")
        print_table(figures, ref)


if __name__ == "__main__":
    main()
