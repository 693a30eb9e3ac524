"""`muslin lab`: the article's multi-host setup (§5.5–5.8) on one machine, out of network namespaces.

Hosts are namespaces ``lab-node1..N`` on an underlay switch ``lab-sw`` (192.168.255.154, .155, ...).
Each host gets, in the article's order: an etcd member (one cluster), the flannel network config,
muslin-flanneld configured from a sysconfig-style file, muslind started with the options flannel
wrote (the article's ExecStart line), then a busybox container. Each host's files live under
``<root>/<node>/`` at the article's paths (``<root>/node1/run/flannel/subnet.env`` is node1's
/run/flannel/subnet.env). Everything is found again from the root directory and the namespace prefix,
so ``down`` works after a crash or a half-finished ``up``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from muslin.fabric.bird import parse_protocols
from muslin.fabric.config import DEFAULT_BACKEND
from muslin.fabric.files import read_subnet_env
from muslin.kernel import netns
from muslin.lab import topology
from muslin.lab.etcd import EtcdCluster
from muslin.lab.tor import TOR_AS, node_peers, start_tor
from muslin.processes import running
from muslin.runtime import shim_processes

PREFIX = "lab-"
DEFAULT_ROOT = Path("/run/muslin-lab")
NETWORK = "172.21.0.0/16"
ETCD_PREFIX = "/atomic.io/network"
BACKENDS = ("vxlan", "udp", "host-gw", "bgp")
NODE_AS = 64512
NODE_BIRD_SOCKET = "/run/flannel/bird/bird.ctl"  # the agent's default: bird/ next to /run/flannel/subnet.env
STATE_FILE = "lab.json"


class LabError(RuntimeError):
    """A step failed; the message names it."""


@dataclass
class Node:
    name: str  # node1, as the article calls it
    ns: str  # lab-node1
    address: str
    root: str  # <root>/node1: this host's view of the file system

    def path(self, article_path: str) -> Path:
        """Where this host's copy of an article path (/run/flannel/subnet.env, ...) lives."""
        return Path(self.root) / article_path.lstrip("/")

    @property
    def sock(self) -> str:
        return str(self.path("/run/muslin.sock"))

    @property
    def docker_host(self) -> str:
        return f"unix://{self.sock}"


def bin_path(name: str) -> str:
    """Our console scripts next to this interpreter (the venv), else PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


class Lab:
    def __init__(self, root: Path = DEFAULT_ROOT, out: Callable[[str], None] = print, prefix: str = PREFIX) -> None:
        self.root = Path(root)
        self.out = out
        self.prefix = prefix  # of the namespaces: <prefix>node1, <prefix>sw

    # -- state ---------------------------------------------------------------------------------
    def _state(self) -> dict:
        try:
            return json.loads((self.root / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def nodes(self) -> list[Node]:
        return [Node(**n) for n in self._state().get("nodes", [])]

    def backend(self) -> str:
        return self._state().get("backend", "")

    def routed(self) -> bool:
        return bool(self._state().get("routed", False))

    def router(self) -> Node:
        """The router between the segments (routed labs), as a node the lab's commands can run on."""
        return Node(name="router", ns=topology.router_name(self.prefix), address=str(topology.UNDERLAY[1]),
                    root=str(self.root / "router"))

    def node(self, name: str) -> Node:
        for n in self.nodes():
            if name in (n.name, n.ns, n.address):
                return n
        known = ", ".join(n.name for n in self.nodes()) or "none (run `muslin lab up`)"
        raise LabError(f"no lab node {name!r}; nodes: {known}")

    # -- running things on a node --------------------------------------------------------------
    def env(self, node: Node) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": node.docker_host, "ETCDCTL_API": "3",
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def argv(self, node: Node, cmd: list[str], view: bool = False) -> list[str]:
        """cmd in the node's network namespace; with ``view``, also seeing the node's files at the article's
        paths (/run/flannel, /etc/sysconfig: see nodeview)."""
        if view:
            return [sys.executable, "-m", "muslin.lab.nodeview", node.root, netns.path_for(node.ns), "--", *cmd]
        return ["nsenter", f"--net={netns.path_for(node.ns)}", *cmd]

    def run(self, node: Node, *cmd: str, check: bool = True, env: dict[str, str] | None = None,
            timeout: float = 60, view: bool = False) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv(node, list(cmd), view), capture_output=True, text=True,
                              env=env or self.env(node), timeout=timeout)
        if check and proc.returncode != 0:
            raise LabError(f"on {node.name}: `{shlex.join(cmd)}` failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def show(self, node: Node, shown: str, *cmd: str, env: dict[str, str] | None = None, view: bool = False) -> str:
        """Run a command on a node and print it as the article does: prompt, command, output (stdout, then
        stderr, as a terminal shows both: etcdctl prints `endpoint health` on stderr)."""
        proc = self.run(node, *cmd, env=env, view=view)
        output = proc.stdout + proc.stderr
        self.out(f"[root@{node.name} ~]# {shown}")
        self.out(output.rstrip("\n"))
        return output

    def spawn(self, node: Node, name: str, cmd: list[str], env: dict[str, str] | None = None,
              view: bool = False) -> int:
        """A long-running process on the node, detached from us (its own session), logging to a file."""
        log_path = node.path(f"/var/log/{name}.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(self.argv(node, cmd, view), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env or self.env(node), start_new_session=True)
        node.path(f"/run/{name}.pid").write_text(f"{proc.pid}\n")  # nodeview and nsenter exec: the same pid
        return proc.pid

    # -- up --------------------------------------------------------------------------------------
    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        started = time.monotonic()
        self.out(f"\n==> {title}")
        try:
            yield
        except LabError:
            raise
        except Exception as exc:
            raise LabError(f"step '{title}' failed: {type(exc).__name__}: {exc}") from exc
        self.out(f"    ok ({time.monotonic() - started:.1f}s)")

    def up(self, count: int = 2, backend: str | None = None, routed: bool = False, overlay: bool = False) -> float:
        """``backend`` None: the article's config as written, without Backend, so udp (flanneld's default).
        ``overlay``: the engines also share the lab's etcd as their cluster store, and an overlay network
        (Docker's own multi-host networking, beside flannel's) is shown across the nodes."""
        if backend is not None and backend not in BACKENDS:
            raise LabError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if not 2 <= count <= 8:
            raise LabError("the lab runs 2 to 8 nodes")
        if self.nodes() or topology.names(self.prefix):
            raise LabError("a lab is already up (or left over): run `muslin lab down` first")
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            nodes = self._hosts(count, backend or DEFAULT_BACKEND, routed)
            self._etcd(nodes)
            self._network_config(nodes[0], backend, routed)
            if backend == "bgp" and routed:
                self._top_of_rack(nodes)
            self._flannel(nodes)
            self._engines(nodes, overlay)
            if backend == "bgp":
                self._bgp_sessions(nodes, routed)
            self._containers(nodes, expect_failure=routed and backend == "host-gw")
            if overlay:
                self._overlay(nodes)
        except BaseException:
            self.out("\nlab up failed; `muslin lab down` removes what was made")
            raise
        total = time.monotonic() - started
        chosen = backend or f"{DEFAULT_BACKEND} (the article's config names none: flanneld's default)"
        self.out(f"\nlab is up: {count} nodes{' on two routed segments' if routed else ''}, backend {chosen}, "
                 f"in {total:.1f}s")
        self._drawing()
        self.out("try: muslin lab exec node1 -- docker run -it --rm busybox")
        return total

    def _drawing(self) -> None:
        from muslin.lab.views import write_drawing  # views builds on this module

        try:
            self.out(f"topology drawing: {write_drawing(self)}")
        except RuntimeError as exc:  # no graphviz: the lab works all the same
            self.out(f"no topology drawing: {exc}")

    def _hosts(self, count: int, backend: str, routed: bool) -> list[Node]:
        where = "two L2 segments joined by a router" if routed else "an underlay switch"
        with self.step(f"5.5.1-5.5.4 hosts: {count} namespaces on {where}, ip_forward on"):
            underlay = topology.create(self.prefix, count, routed=routed)
            nodes = [Node(name=f"node{i + 1}", ns=h.name, address=str(h.address), root=str(self.root / f"node{i + 1}"))
                     for i, h in enumerate(underlay.hosts)]
            for n in nodes:
                for d in ("/run/flannel", "/etc/sysconfig", "/var/lib/muslin", "/run/muslin", "/var/log", "/var/lib/etcd"):
                    n.path(d).mkdir(parents=True, exist_ok=True)
                n.path("/etc/hosts").write_text("".join(f"{m.address} {m.name}\n" for m in nodes))
            (self.root / STATE_FILE).write_text(json.dumps({"backend": backend, "routed": routed,
                                                            "nodes": [asdict(n) for n in nodes]}))
            for n, h in zip(nodes, underlay.hosts):
                via = f", default via the router {h.gateway}" if h.gateway else ""
                self.out(f"    {n.name}: {n.address}/24 on eth0{via} (netns {n.ns}, files under {n.root})")
            if underlay.router:
                self.out(f"    router: {', '.join(map(str, underlay.router_addresses))} (netns {underlay.router})")
        return nodes

    def _etcd(self, nodes: list[Node]) -> None:
        with self.step("5.5.5-5.5.9 etcd cluster: one member per node"):
            hosts = [topology.Host(n.ns, IPv4Address(n.address)) for n in nodes]
            cluster = EtcdCluster(hosts, str(self.root / "etcd"), names=[n.name for n in nodes], detached=True)
            cluster.start(timeout=30)
            for n, pid in zip(nodes, cluster.pids()):
                n.path("/run/etcd.pid").write_text(f"{pid}\n")
            endpoints = ",".join(f"http://{n.address}:2379" for n in nodes)
            self.show(nodes[0], f"etcdctl --endpoints={endpoints} endpoint health",
                      "etcdctl", f"--endpoints={endpoints}", "endpoint", "health")
            self.show(nodes[0], "etcdctl member list", "etcdctl", f"--endpoints={endpoints}", "member", "list")

    def _network_config(self, node: Node, backend: str | None, routed: bool) -> None:
        with self.step("5.6.3 the flannel network config in etcd (the article's v2 `etcdctl mk`)"):
            settings: dict[str, object] = {"Type": backend}
            if backend == "bgp":
                # Across a router, nodes peer with the top of rack rather than with each other (Calico's model).
                settings.update({"ASNumber": NODE_AS, "NodeToNodeMesh": not routed})
            config = json.dumps({"Network": NETWORK, **({"Backend": settings} if backend else {})},
                                separators=(",", ":"))
            env = {**self.env(node), "ETCDCTL_API": "2"}
            self.show(node, f"etcdctl mk {ETCD_PREFIX}/config '{config}'", "etcdctl",
                      f"--endpoints=http://{node.address}:2379", "mk", f"{ETCD_PREFIX}/config", config, env=env)

    def _top_of_rack(self, nodes: list[Node]) -> None:
        with self.step(f"5.2.2.2 the router's BIRD as both segments' BGP peer (AS {TOR_AS}), one BGPPeer per node"):
            underlay = topology.create(self.prefix, len(nodes), routed=True)  # idempotent: the one built
            tor = start_tor(underlay, str(self.router().path("/run/bird")), IPv4Network(NETWORK), 24, NODE_AS)
            self.out(f"    router: bird -c {tor.config_path} -s {tor.socket_path}")
            env = {**self.env(nodes[0]), "ETCDCTL_API": "2"}
            for key, value in node_peers(underlay, ETCD_PREFIX).items():
                self.show(nodes[0], f"etcdctl mk {key} '{value}'", "etcdctl",
                          f"--endpoints=http://{nodes[0].address}:2379", "mk", key, value, env=env)

    def _bgp_sessions(self, nodes: list[Node], routed: bool) -> None:
        with self.step("BGP: every node's sessions (birdc show protocols) and the routes BIRD installed"):
            shown = [*nodes, self.router()] if routed else nodes
            for n in shown:
                wait_for(lambda n=n: self._sessions_established(n), 30,
                         f"BGP sessions on {n.name} not established; see {self._bird_socket(n).with_suffix('.log')}")
            for n in shown:
                # A node's BIRD, as its agent started it, at the node's own paths; the router's under the lab root.
                view = n.name != "router"
                sock = NODE_BIRD_SOCKET if view else str(self._bird_socket(n))
                self.show(n, f"birdc -s {sock} show protocols", "birdc", "-s", sock, "show", "protocols", view=view)
                wanted = len(nodes) if n.name == "router" else len(nodes) - 1
                wait_for(lambda n=n, wanted=wanted: len(self._bird_routes(n)) >= wanted, 20,
                         f"{n.name} did not learn every subnet")
                self.show(n, "ip route show proto bird", "ip", "route", "show", "proto", "bird")

    def _bird_socket(self, node: Node) -> Path:
        """BIRD's control socket as seen from here (the router's runs under the lab root, not a node's view)."""
        return node.path("/run/bird/tor.ctl" if node.name == "router" else NODE_BIRD_SOCKET)

    def _sessions_established(self, node: Node) -> bool:
        proc = self.run(node, "birdc", "-s", str(self._bird_socket(node)), "show", "protocols", check=False)
        states = [p.session_state for p in parse_protocols(proc.stdout) if p.proto == "BGP"]
        return proc.returncode == 0 and bool(states) and all(s == "Established" for s in states)

    def _bird_routes(self, node: Node) -> list[str]:
        return self.run(node, "ip", "route", "show", "proto", "bird", check=False).stdout.splitlines()

    def _flannel(self, nodes: list[Node]) -> None:
        with self.step("5.6.2-5.6.5 muslin-flanneld on every node, from /etc/sysconfig/flanneld"):
            endpoints = ",".join(f"http://{n.address}:2379" for n in nodes)
            for n in nodes:
                # The agent sees the node's files at the article's paths, so its defaults hold:
                # /run/flannel/subnet.env, and mk-docker-opts.sh's /run/flannel/docker next to it.
                sysconfig = n.path("/etc/sysconfig/flanneld")
                sysconfig.write_text("# Flanneld configuration options\n"
                                     f'FLANNEL_ETCD_ENDPOINTS="{endpoints}"\n'
                                     f'FLANNEL_ETCD_PREFIX="{ETCD_PREFIX}"\n'
                                     'FLANNEL_OPTIONS="--iface=eth0 --iptables-resync=2"\n')
                env = {**self.env(n), **read_shell_vars(sysconfig)}
                self.spawn(n, "muslin-flanneld", [bin_path("muslin-flanneld")], env=env, view=True)
            for n in nodes:
                # Both files: the agent writes one after the other, each atomically.
                wait_for(lambda n=n: all(n.path(f).exists() for f in ("/run/flannel/docker", "/run/flannel/subnet.env")), 20,
                         f"muslin-flanneld on {n.name} wrote no subnet file; see {n.path('/var/log/muslin-flanneld.log')}")
            first = nodes[0]
            self.show(first, "cat /etc/sysconfig/flanneld", "cat", "/etc/sysconfig/flanneld", view=True)
            for n in nodes:
                self.show(n, "cat /run/flannel/subnet.env", "cat", "/run/flannel/subnet.env", view=True)
            self.show(first, "cat /run/flannel/docker", "cat", "/run/flannel/docker", view=True)

    def _engines(self, nodes: list[Node], overlay: bool = False) -> None:
        with self.step("5.7 muslind with the options flannel wrote (the article's ExecStart line)"):
            store = "etcd://" + ",".join(f"{n.address}:2379" for n in nodes)
            for n in nodes:
                opts = read_shell_vars(n.path("/run/flannel/docker")).get("DOCKER_NETWORK_OPTIONS", "")
                cluster = ["--cluster-store", store, "--cluster-advertise", f"{topology.HOST_IFACE}:2376"] if overlay else []
                cmd = [bin_path("muslind"), "-H", n.docker_host, "--data-root", str(n.path("/var/lib/muslin")),
                       "--exec-root", str(n.path("/run/muslin")), *shlex.split(opts), *cluster]
                self.out(f"    {n.name}: ExecStart={shlex.join(['muslind', *cmd[1:]])}")
                self.spawn(n, "muslind", cmd)
            device = {"vxlan": "flannel.1", "udp": "flannel0", "host-gw": "eth0", "bgp": "eth0"}[self.backend()]
            for n in nodes:
                wait_for(lambda n=n: self.run(n, "docker", "version", check=False).returncode == 0, 20,
                         f"muslind on {n.name} did not come up; see {n.path('/var/log/muslind.log')}")
                self.show(n, f"ip a s muslin0; ip a s {device}", "sh", "-c", f"ip a s muslin0; ip a s {device}")

    def _containers(self, nodes: list[Node], expect_failure: bool = False) -> None:
        with self.step("5.8 containers on every node, and a cross-host ping"):
            addresses = []
            for n in nodes:
                self.run(n, "docker", "run", "-d", "--name", f"bb-{n.name}", "busybox", "sleep", "infinity")
                out = self.show(n, f"docker exec bb-{n.name} ifconfig eth0", "docker", "exec", f"bb-{n.name}",
                                "ifconfig", "eth0")
                addresses.append(out.split("inet addr:")[1].split()[0])
            first, last = nodes[0], nodes[1] if self.routed() else nodes[-1]  # node2: across the router
            result = self.run(first, "docker", "exec", f"bb-{first.name}", "ping", "-c", "3", "-W", "2",
                              addresses[nodes.index(last)], check=False)
            self.out(f"[root@{first.name} ~]# docker exec bb-{first.name} ping -c 3 {addresses[nodes.index(last)]}"
                     f"   # on {last.name}")
            self.out(result.stdout.rstrip())
            if expect_failure:
                self._explain_host_gw_across_router(first, last, result.stdout)
                return
            if " 0% packet loss" not in result.stdout:
                raise LabError(f"step '5.8 cross-host ping' failed: {first.name} -> {last.name} "
                               f"({addresses[nodes.index(last)]}) lost packets:\n{result.stdout}{result.stderr}")

    def _overlay(self, nodes: list[Node]) -> None:
        first, last = nodes[0], nodes[-1]
        with self.step("5.2.1 Docker's overlay network over the engines' cluster store (etcd)"):
            self.show(first, "docker network create -d overlay --subnet 10.0.9.0/24 ov1",
                      "docker", "network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "ov1")
            wait_for(lambda: "ov1" in self.run(last, "docker", "network", "ls", check=False).stdout, 5,
                     f"ov1 did not reach {last.name}'s engine; see {last.path('/var/log/muslind.log')}")
            self.show(last, "docker network ls --filter driver=overlay", "docker", "network", "ls", "--filter",
                      "driver=overlay")
            self.show(first, "docker run -d --name web1 --network ov1 busybox httpd ...", "docker", "run", "-d",
                      "--name", "web1", "--network", "ov1", "busybox", "sh", "-c",
                      f"mkdir /www; echo hello from web1 on {first.name} > /www/index.html; httpd -f -h /www")
            probe = "ping -c 3 -W 2 web1 && wget -qO- http://web1/"
            result = self.run(last, "docker", "run", "--rm", "--network", "ov1", "busybox", "sh", "-c", probe,
                              check=False)
            self.out(f"[root@{last.name} ~]# docker run --rm --network ov1 busybox sh -c '{probe}'")
            self.out(result.stdout.rstrip())
            if result.returncode != 0 or " 0% packet loss" not in result.stdout:
                raise LabError(f"{last.name} did not reach web1 on {first.name} over ov1:\n{result.stdout}{result.stderr}")

    def _explain_host_gw_across_router(self, first: Node, last: Node, ping_output: str) -> None:
        if " 0% packet loss" in ping_output:
            raise LabError("host-gw reached a node behind the router: the routed underlay is not routed")
        refusals = [line for line in first.path("/var/log/muslin-flanneld.log").read_text().splitlines()
                    if "refusing host-gw peer" in line]
        self.out(f"[root@{first.name} ~]# grep 'refusing host-gw peer' /var/log/muslin-flanneld.log")
        self.out("\n".join(refusals) or "(no refusal logged yet)")
        self.out(f"[root@{first.name} ~]# ip route")
        self.out(self.run(first, "ip", "route").stdout.rstrip())
        self.out(f"\n    As expected, host-gw fails across the router: it routes a peer's subnet via the peer's own\n"
                 f"    address, a next hop that must be on this host's L2 segment, and {last.name} ({last.address}) is\n"
                 f"    behind the router. So no route is installed, the packets follow the default route, and the\n"
                 f"    router, which knows no container subnet, drops them. Across routers use --backend bgp\n"
                 f"    (the router learns every subnet by BGP) or vxlan.")

    # -- status, exec, down ----------------------------------------------------------------------
    def status(self) -> int:
        nodes = self.nodes()
        if not nodes:
            self.out("no lab is up")
            return 1
        self.out(f"lab: {len(nodes)} nodes{' on two routed segments' if self.routed() else ''}, "
                 f"backend {self.backend()}, files under {self.root}")
        healthy = True
        for n in nodes:
            procs = {name: alive(n.path(f"/run/{name}.pid")) for name in ("etcd", "muslin-flanneld", "muslind")}
            subnet = read_shell_vars(n.path("/run/flannel/subnet.env")).get("FLANNEL_SUBNET", "-")
            containers = "-"
            if procs["muslind"]:
                ps = self.run(n, "docker", "ps", "--format", "{{.Names}}", check=False)
                containers = ",".join(ps.stdout.split()) or "none"
            state = " ".join(f"{k}={'up' if v else 'DOWN'}" for k, v in procs.items())
            self.out(f"  {n.name} {n.address:<16} subnet {subnet:<16} {state} containers: {containers}")
            healthy = healthy and all(procs.values())
        return 0 if healthy else 1

    def exec_argv(self, name: str, cmd: list[str]) -> tuple[list[str], dict[str, str]]:
        node = self.node(name)
        if not cmd:
            cmd = [os.environ.get("SHELL", "/bin/sh")]
        return self.argv(node, cmd, view=True), self.env(node)

    def down(self) -> None:
        """Remove every namespace, process, mount and file of the lab; idempotent, works after a crash."""
        nodes = self.nodes()
        for n in nodes:  # let each engine remove its containers while it still runs
            if alive(n.path("/run/muslind.pid")):
                try:
                    ids = self.run(n, "docker", "ps", "-aq", check=False, timeout=20).stdout.split()
                    if ids:
                        self.run(n, "docker", "rm", "-f", *ids, check=False, timeout=30)
                except subprocess.TimeoutExpired:
                    pass  # a hung engine: what it left is removed below all the same
        stop_all([n.path(f"/run/{name}.pid") for n in nodes for name in ("muslind", "muslin-flanneld", "etcd")])
        # Whatever is left after a crash: containers (runc's state and cgroups go with `runc delete`),
        # processes in the hosts' and containers' namespaces, shims, then the mounts.
        for n in nodes:
            runc_root = n.path("/run/muslin/runtime/runc")
            if runc_root.is_dir():
                for cid in os.listdir(runc_root):
                    subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", cid], capture_output=True)
        for sandbox in sandboxes(self.root):
            for pid in topology.processes_in(sandbox):
                kill(pid)
        for pid in shim_processes(self.root):
            kill(pid)
        unmount_under(self.root)
        topology.teardown(self.prefix)
        shutil.rmtree(self.root, ignore_errors=True)


def read_shell_vars(path: Path) -> dict[str, str]:
    """KEY=value lines of a sysconfig or flannel file; {} when the file is not there (yet)."""
    try:
        return read_subnet_env(str(path))
    except FileNotFoundError:
        return {}


def wait_for(check: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise LabError(message)
        time.sleep(0.05)


def alive(pidfile: Path) -> bool:
    try:
        return running(int(pidfile.read_text()))
    except (FileNotFoundError, ValueError):
        return False


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_all(pidfiles: list[Path], timeout: float = 10) -> None:
    """SIGTERM every process named by the pid files at once, wait for all, SIGKILL the stragglers."""
    pids = [int(p.read_text()) for p in pidfiles if alive(p)]
    for pid in pids:
        kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(running(pid) for pid in pids):
        time.sleep(0.02)
    for pid in pids:
        if running(pid):
            kill(pid)


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def sandboxes(root: Path) -> list[str]:
    """Container network namespaces the lab's engines pinned under the root."""
    return [p for p in _mounts() if p.startswith(str(root)) and "/netns/" in p]


def unmount_under(root: Path) -> None:
    for point in sorted((p for p in _mounts() if p.startswith(str(root))), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
