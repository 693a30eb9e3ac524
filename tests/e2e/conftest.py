"""A muslind per test module, started inside a fresh network namespace and driven by the real docker CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from muslin.kernel import netns
from muslin.lab.lab import unmount_under

from ..conftest import kept_across_tests, unique
from ..firewall_view import FirewallView, of_daemon
from ..tools import require

MUSLIND = str(Path(sys.executable).with_name("muslind"))
# seconds a muslind may take to answer; tests/uml_pytest.py's guest, where every syscall is trapped, sets more
START_LIMIT = float(os.environ.get("MUSLIN_TEST_START_LIMIT", "15"))


@dataclass
class Daemon:
    ns: str
    root: Path
    sock: str
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_from: int = 0  # where log() starts: a daemon lent to a test shows that test only what it logged

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.sock}"}

    def start(self) -> None:
        log = open(self.root / "muslind.log", "ab")
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns.path_for(self.ns)}", MUSLIND, "-H", f"unix://{self.sock}",
             "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "run"), *self.args],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_LIMIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"muslind exited: {(self.root / 'muslind.log').read_text()}")
            if os.path.exists(self.sock) and self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("muslind did not come up")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def docker(self, *args: str, check: bool = True, input: str | None = None,
               timeout: float = 30) -> subprocess.CompletedProcess:
        proc = subprocess.run([require("docker"), *args], env=self.env, capture_output=True, text=True,
                              input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return proc

    def sh(self, *cmd: str, check: bool = True, input_: str | None = None) -> str:
        """Run a command inside the daemon's network namespace (to check kernel state)."""
        proc = subprocess.run(["nsenter", f"--net={netns.path_for(self.ns)}", *cmd],
                              capture_output=True, text=True, input=input_)
        if check and proc.returncode != 0:
            raise AssertionError(f"{cmd} failed: {proc.stderr}")
        return proc.stdout

    def log(self) -> str:
        with open(self.root / "muslind.log", "rb") as f:
            f.seek(self.log_from)
            return f.read().decode(errors="replace")

    @property
    def firewall(self) -> FirewallView:
        """The host firewall muslind wrote, read through the backend it runs (tests/firewall_view.py)."""
        return of_daemon(self)


def make_daemon(made: list[Daemon], args: tuple[str, ...]) -> Daemon:
    ns = unique("me-")
    netns.create(ns)
    root = Path(tempfile.mkdtemp(prefix="muslin-e2e-"))
    d = Daemon(ns=ns, root=root, sock=str(root / "docker.sock"), args=list(args))
    made.append(d)
    d.start()
    return d


def remove_containers(d: Daemon) -> None:
    """Every container of a running daemon, removed with force."""
    if d.proc and d.proc.poll() is None:
        ids = d.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            d.docker("rm", "-f", *ids, check=False)


def remove_daemon(d: Daemon) -> None:
    try:
        remove_containers(d)
    finally:
        d.stop()
        unmount_under(d.root)
        netns.remove(d.ns)
        shutil.rmtree(d.root, ignore_errors=True)


@contextlib.contextmanager
def pending_stop(daemon: Daemon, name: str, bound: float = 60) -> Iterator[subprocess.Popen]:
    """A `docker stop -t 30` of a container that traps SIGTERM and logs got-term, yielded once the stop
    has signalled and waits (within ``bound`` seconds); killed at the end if it is still pending."""
    stop = subprocess.Popen([require("docker"), "stop", "-t", "30", name], env=daemon.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + bound
        while "got-term" not in daemon.docker("logs", name).stdout:
            assert time.monotonic() < deadline and stop.poll() is None, "the stop never signalled"
            time.sleep(0.1)
        yield stop
    finally:
        if stop.poll() is None:
            stop.kill()
            stop.wait()


@pytest.fixture
def daemon_factory() -> Iterator:
    made: list[Daemon] = []

    def make(*args: str) -> Daemon:
        return make_daemon(made, args)

    yield make
    for d in made:
        remove_daemon(d)


@dataclass(frozen=True)
class DaemonState:
    """What a test can leave in a daemon and its namespace: the engine's objects, and the kernel's."""

    containers: frozenset[str]
    networks: frozenset[str]
    volumes: frozenset[str]
    images: frozenset[str]  # repo:tag@id, so that a new tag of an old image counts
    kernel: str


# links, addresses, routes, and the firewall's rules in both forms, in one process
KERNEL_STATE = "ip -o link show; ip -o addr show; ip -o route show table all; iptables-save; nft --stateless list ruleset"


def state_of(d: Daemon, api: docker.APIClient) -> DaemonState:
    kernel = d.sh("sh", "-c", KERNEL_STATE)
    # iptables-save's comments and chain counters change by themselves; and the kernel gives a bridge its
    # IPv6 link-local address (and routes) once a port came up: none of them is a leftover
    kept = [line for line in kernel.splitlines()
            if not line.startswith(("#", ":")) and "fe80::" not in line and "ff00::/8" not in line]
    return DaemonState(frozenset(c["Id"] for c in api.containers(all=True)),
                       frozenset(n["Id"] for n in api.networks()),
                       frozenset(v["Name"] for v in api.volumes().get("Volumes") or []),
                       frozenset(f"{tag}@{i['Id']}" for i in api.images() for tag in i.get("RepoTags") or ["<none>"]),
                       "\n".join(kept))


def put_back(d: Daemon, api: docker.APIClient, fresh: DaemonState) -> bool:
    """Remove what a test added to the daemon; whether it is then as it was fresh, kernel state included
    (the link reaper deletes a removed network's bridge just after rm returns: waited for, bounded)."""
    if d.proc is None or d.proc.poll() is not None:
        return False
    try:
        now = state_of(d, api)
        if now == fresh:
            return True
        for container in now.containers - fresh.containers:
            api.remove_container(container, v=True, force=True)
        for net in now.networks - fresh.networks:
            api.remove_network(net)
        for volume in now.volumes - fresh.volumes:
            api.remove_volume(volume, force=True)
        for image in sorted(now.images - fresh.images):
            tag, _, image_id = image.rpartition("@")
            api.remove_image(image_id if tag == "<none>" else tag, force=True)
    except docker.errors.APIError:
        return False
    deadline = time.monotonic() + 3
    while True:
        if state_of(d, api) == fresh:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


class DaemonPool:
    """One muslind (no flags) lent to each test of a module that opts in (a `daemon` fixture returning
    `shared_daemon`): a start and removal (about a second) per module rather than per test. After each test
    what it made is removed and the daemon must be as fresh, its namespace's links, addresses and rules
    included; one that is not, or was stopped, is replaced for the next test. While lent, its log() shows
    only what that test's time logged."""

    def __init__(self) -> None:
        self.made: list[Daemon] = []
        self.current: tuple[Daemon, docker.APIClient, DaemonState] | None = None

    def lend(self) -> Iterator[Daemon]:
        if self.current is None:
            with kept_across_tests():
                d = make_daemon(self.made, ())
            api = docker.APIClient(base_url=f"unix://{d.sock}", timeout=30)
            self.current = (d, api, state_of(d, api))
        d, api, fresh = self.current
        d.log_from = (d.root / "muslind.log").stat().st_size
        yield d
        if not put_back(d, api, fresh):
            self.current = None
            api.close()
            self.made.remove(d)
            remove_daemon(d)


@pytest.fixture(scope="module")
def daemon_pool() -> Iterator[DaemonPool]:
    pool = DaemonPool()
    yield pool
    for d in pool.made:
        remove_daemon(d)


@pytest.fixture
def shared_daemon(daemon_pool: DaemonPool) -> Iterator[Daemon]:
    yield from daemon_pool.lend()


@pytest.fixture
def daemon(daemon_factory) -> Daemon:
    return daemon_factory()


PIN_IPTABLES = ("--firewall-backend", "iptables")


@pytest.fixture
def iptables_daemon(daemon_factory) -> Daemon:
    """A muslind pinned to the iptables backend, for tests about that backend's own layout."""
    return daemon_factory(*PIN_IPTABLES)


@pytest.fixture(params=["default", "iptables"])
def each_backend_daemon(request: pytest.FixtureRequest, daemon_factory) -> Daemon:
    """A muslind on the default firewall backend (nftables where it works), and one pinned to
    iptables: the firewall's traffic tests, read through ``Daemon.firewall``, hold on both."""
    return daemon_factory(*(PIN_IPTABLES if request.param == "iptables" else ()))
