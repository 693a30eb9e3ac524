"""The shims (and runc under them) run in a mount namespace of their own, without the network
namespace pins, so a container's mount namespace copy does not grow with the number of containers
(see muslin/runtime/runtime.py). What that must not break: joining the pinned network namespace, bind
mounts of what was mounted after the shims' namespace was made, and starting after a daemon restart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import Daemon


def _shim_pid(daemon: Daemon, name: str) -> int:
    cid = daemon.docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    return int((daemon.root / "run" / "runtime" / cid / "shim.pid").read_text())


def _mount_points(pid: int | str) -> list[str]:
    return [line.split()[4] for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]


def _ip(daemon: Daemon, name: str) -> str:
    return daemon.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()


def test_containers_join_their_pinned_namespaces_from_a_mount_namespace_without_the_pins(daemon: Daemon) -> None:
    daemon.docker("run", "-d", "--name", "one", "busybox", "sleep", "60")
    daemon.docker("run", "-d", "--name", "two", "busybox", "sleep", "60")
    pins = str((daemon.root / "run" / "netns").resolve())
    ours = [m for m in _mount_points("self") if m.startswith(pins + "/")]
    assert len(ours) == 2, ours  # the daemon's view: one pin per container
    for name in ("one", "two"):
        theirs = _mount_points(_shim_pid(daemon, name))
        assert not [m for m in theirs if m.startswith(pins + "/")], theirs  # the directory, without pins
    # Each container is in its own pinned namespace, wired to the bridge: they reach each other.
    out = daemon.docker("exec", "one", "ping", "-c", "1", "-W", "2", _ip(daemon, "two")).stdout
    assert "1 packets received" in out
    cid = daemon.docker("inspect", "-f", "{{.Id}}", "one").stdout.strip()
    config = json.loads((daemon.root / "data" / "runtime" / "containers" / cid / "config.json").read_text())
    network = [n for n in config["linux"]["namespaces"] if n["type"] == "network"]
    assert network[0]["path"] == f"/proc/{daemon.proc.pid}/root{pins}/{cid[:12]}"


def test_a_mount_made_after_the_shims_namespace_reaches_a_new_container(daemon: Daemon) -> None:
    daemon.docker("run", "-d", "--name", "first", "busybox", "sleep", "60")  # the spawner runs by now
    late = daemon.root / "late"
    late.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(late)], check=True)
    try:
        (late / "greeting").write_text("made after the shims' namespace\n")
        out = daemon.docker("run", "--rm", "-v", f"{late}:/late", "busybox", "cat", "/late/greeting").stdout
        assert out == "made after the shims' namespace\n"
    finally:
        subprocess.run(["umount", str(late)], check=True)


def test_a_container_created_before_a_daemon_restart_starts_in_its_namespace(daemon: Daemon) -> None:
    daemon.docker("create", "--name", "later", "busybox", "sleep", "60")
    daemon.docker("run", "-d", "--name", "peer", "busybox", "sleep", "60")
    daemon.stop()
    daemon.start()
    daemon.docker("start", "later")
    mac = daemon.docker("inspect", "-f", "{{.NetworkSettings.MacAddress}}", "later").stdout.strip()
    assert daemon.docker("exec", "later", "cat", "/sys/class/net/eth0/address").stdout.strip() == mac
    out = daemon.docker("exec", "later", "ping", "-c", "1", "-W", "2", _ip(daemon, "peer")).stdout
    assert "1 packets received" in out


def test_an_rshared_bind_still_propagates_back_to_the_host(daemon: Daemon) -> None:
    """Only the pin directories differ in the shims' namespace: a mount a container makes under an
    ``rshared`` bind reaches the host, as with Docker."""
    shared = daemon.root / "shared"
    shared.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        (shared / "sub").mkdir()
        daemon.docker("run", "--rm", "--privileged", "-v", f"{shared}:/mnt:rshared", "busybox",
                      "mount", "-t", "tmpfs", "-o", "size=1m", "from-the-container", "/mnt/sub")
        mounted = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        assert any(m[4] == str(shared / "sub") and "from-the-container" in m for m in mounted)
    finally:
        subprocess.run(["umount", "-R", "-l", str(shared)], check=False)
