"""A bare multi-host rig: simulated hosts, an etcd cluster, flannel agents and "containers", with no
engine; what the fabric's integration tests (tests/fabric) and its benchmark (bench/bench_fabric.py)
build on.

A container is a namespace with a veth into bridge ``cbr0`` of its host, which carries the subnet's .1
(what muslind makes of FLANNEL_SUBNET). Whoever makes a rig removes it (the tests' ``make_rig`` fixture
does, also when a test fails, and checks that nothing of it is left).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Interface

from muslin.fabric.files import read_subnet_env
from muslin.kernel import address, link, netns, route
from muslin.lab.etcd import EtcdCluster, TlsConfig
from muslin.lab.topology import Host, Underlay

PREFIX = "/atomic.io/network"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class RigError(RuntimeError):
    """A step of the rig failed or timed out (the message says which)."""


def wait_for(predicate: Callable[[], object], timeout: float = 10, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RigError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def in_ns(host_ns: str, *cmd: str, env: dict[str, str] | None = None,
          timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={netns.path_for(host_ns)}", *cmd], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


class Rig:
    def __init__(self, underlay: Underlay, workdir: str, tls: TlsConfig | None = None) -> None:
        self.underlay = underlay
        self.workdir = workdir
        self.etcd = EtcdCluster(underlay.hosts, os.path.join(workdir, "etcd"), tls=tls)
        self.agents: dict[int, subprocess.Popen] = {}
        self.containers: list[str] = []
        self.tls = tls

    @property
    def hosts(self) -> tuple[Host, ...]:
        return self.underlay.hosts

    # etcd -------------------------------------------------------------------------------------------
    def etcdctl(self, *args: str, api: str = "3", host: int = 0) -> str:
        endpoints = ",".join(self.etcd.endpoints)
        flags = [f"--endpoints={endpoints}"]
        if self.tls:
            flags += ([f"--cacert={self.tls.cafile}", f"--cert={self.tls.certfile}", f"--key={self.tls.keyfile}"]
                      if api == "3" else
                      [f"--ca-file={self.tls.cafile}", f"--cert-file={self.tls.certfile}",
                       f"--key-file={self.tls.keyfile}"])
        proc = in_ns(self.hosts[host].name, "etcdctl", *flags, *args, env={"ETCDCTL_API": api})
        if proc.returncode != 0:
            raise RigError(f"etcdctl {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout

    def put_config(self, config: dict, api: str = "3") -> None:
        if api == "3":
            self.etcdctl("put", f"{PREFIX}/config", json.dumps(config))
        else:
            self.etcdctl("mk", f"{PREFIX}/config", json.dumps(config), api="2")

    def leases(self) -> dict[str, dict]:
        out = self.etcdctl("get", "--prefix", f"{PREFIX}/subnets/").splitlines()
        return {out[i].rsplit("/", 1)[1]: json.loads(out[i + 1]) for i in range(0, len(out) - 1, 2)}

    # agents -----------------------------------------------------------------------------------------
    def subnet_file(self, i: int) -> str:
        return os.path.join(self.workdir, f"node{i + 1}", "subnet.env")

    def bird_dir(self, i: int) -> str:
        return os.path.join(self.workdir, f"node{i + 1}", "bird")

    def log_path(self, i: int) -> str:
        return os.path.join(self.workdir, f"agent{i + 1}.log")

    def start_agent(self, i: int, *extra: str, ifaces: tuple[str, ...] = ("eth0",)) -> subprocess.Popen:
        if i in self.agents and self.agents[i].poll() is None:
            raise RigError(f"agent {i + 1} is already running")
        os.makedirs(os.path.dirname(self.subnet_file(i)), exist_ok=True)
        args = [sys.executable, "-m", "muslin.fabric.cli",
                f"--etcd-endpoints={','.join(self.etcd.endpoints)}",
                f"--etcd-prefix={PREFIX}", *(f"--iface={iface}" for iface in ifaces),
                f"--subnet-file={self.subnet_file(i)}", "--iptables-resync=1", *extra]
        if self.tls:
            args += [f"--etcd-cafile={self.tls.cafile}", f"--etcd-certfile={self.tls.certfile}",
                     f"--etcd-keyfile={self.tls.keyfile}"]
        with open(self.log_path(i), "a") as log:
            proc = subprocess.Popen(["nsenter", f"--net={self.hosts[i].netns}", *args], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
        self.agents[i] = proc
        return proc

    def wait_subnet_file(self, i: int, timeout: float = 20) -> dict[str, str]:
        def ready() -> dict[str, str] | None:
            proc = self.agents.get(i)
            if proc is not None and proc.poll() is not None:
                raise RigError(f"agent {i + 1} exited {proc.returncode}:\n{self.log(i)}")
            try:
                return read_subnet_env(self.subnet_file(i))
            except FileNotFoundError:
                return None
        return wait_for(ready, timeout, f"subnet file of node {i + 1}")  # type: ignore[return-value]

    def stop_agent(self, i: int, kill: bool = False) -> int:
        proc = self.agents.pop(i)
        if proc.poll() is None:
            proc.kill() if kill else proc.terminate()
        return proc.wait(15)

    def log(self, i: int) -> str:
        try:
            with open(self.log_path(i)) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # containers -------------------------------------------------------------------------------------
    def add_container(self, i: int, number: int = 2) -> str:
        """A container on host i at <subnet>.<number>, behind bridge cbr0 which holds <subnet>.1."""
        env = read_subnet_env(self.subnet_file(i))
        gateway = IPv4Interface(env["FLANNEL_SUBNET"])
        mtu = int(env["FLANNEL_MTU"])
        name = f"{self.underlay.prefix}c{i + 1}x{number}"
        netns.create(name)
        self.containers.append(name)
        own = IPv4Interface(f"{gateway.network[number]}/{gateway.network.prefixlen}")
        with netns.iproute(self.hosts[i].name) as h:
            bridge = link.ensure_bridge(h, "cbr0", mtu)
            address.ensure_address(h, bridge, gateway)
            fd = os.open(netns.path_for(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                link.add_veth_into(h, f"v{number}", "eth0", fd, mtu, link.random_mac(), bridge)
            finally:
                os.close(fd)
        with netns.iproute(name) as c:
            index = link.index_of(c, "eth0")
            assert index is not None
            address.ensure_address(c, index, own)
            link.ensure_up(c, index)
            route.ensure_default_route(c, index, gateway.ip)
        return name

    def container_ip(self, i: int, number: int = 2) -> str:
        env = read_subnet_env(self.subnet_file(i))
        return str(IPv4Interface(env["FLANNEL_SUBNET"]).network[number])


def ping(ns: str, address: str, count: int = 1, timeout: int = 2) -> bool:
    proc = in_ns(ns, "busybox", "ping", "-c", str(count), "-W", str(timeout), address, timeout=timeout * count + 5)
    return proc.returncode == 0
