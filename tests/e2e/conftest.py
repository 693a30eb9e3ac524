"""A muslind per test module, started inside a fresh network namespace and driven by the real docker CLI."""

from __future__ import annotations

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

import pytest

from muslin.kernel import netns
from muslin.lab.lab import unmount_under

from ..conftest import unique
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
        return (self.root / "muslind.log").read_text()

    @property
    def firewall(self) -> FirewallView:
        """The host firewall muslind wrote, read through the backend it runs (tests/firewall_view.py)."""
        return of_daemon(self)


@pytest.fixture
def daemon_factory() -> Iterator:
    made: list[Daemon] = []

    def make(*args: str) -> Daemon:
        ns = unique("me-")
        netns.create(ns)
        root = Path(tempfile.mkdtemp(prefix="muslin-e2e-"))
        d = Daemon(ns=ns, root=root, sock=str(root / "docker.sock"), args=list(args))
        made.append(d)
        d.start()
        return d

    yield make
    for d in made:
        try:
            if d.proc and d.proc.poll() is None:
                ids = d.docker("ps", "-aq", check=False).stdout.split()
                if ids:
                    d.docker("rm", "-f", *ids, check=False)
        finally:
            d.stop()
            unmount_under(d.root)
            netns.remove(d.ns)
            shutil.rmtree(d.root, ignore_errors=True)


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
