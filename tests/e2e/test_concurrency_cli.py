"""Requests served together (issue #11, requirement 2), through the real docker CLI: independent ones do
not wait for each other, conflicting ones are ordered (one winner, Docker's conflict for the others), and
the store and the kernel agree afterwards. No timing is asserted: only what finished while what."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Interface

import pytest

from ..firewall_view import Forward
from .conftest import pending_stop


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


BOUND_SECONDS = 60  # every wait below is bounded


def _together(daemon, commands: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess]:
    """Run the docker commands at once; their results in order."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda args: daemon.docker(*args, check=False, timeout=BOUND_SECONDS), commands))


def _ok(results: list[subprocess.CompletedProcess]) -> None:
    failed = [f"{p.args}: {p.stderr}" for p in results if p.returncode]
    assert not failed, failed


def test_a_slow_stop_holds_up_nothing_else(daemon) -> None:
    """A `stop -t 30` of a container that ignores SIGTERM is pending while network ls, network create
    and rm, and another container's run --rm all complete; the stop then ends with the container."""
    daemon.docker("run", "-d", "--name", "stubborn", "busybox", "sh", "-c",
                  "trap 'echo got-term' TERM; echo ready; while true; do sleep 1; done")
    with pending_stop(daemon, "stubborn", BOUND_SECONDS) as stop:  # the stop is now waiting
        daemon.docker("network", "ls")
        daemon.docker("network", "create", "meanwhile")
        daemon.docker("network", "rm", "meanwhile")
        assert daemon.docker("run", "--rm", "busybox", "echo", "ran").stdout == "ran\n"
        assert daemon.docker("inspect", "-f", "{{.State.Running}}", "stubborn").stdout.strip() == "true"
        assert stop.poll() is None  # everything above returned while the stop was still waiting
        daemon.docker("kill", "stubborn")
        assert stop.wait(BOUND_SECONDS) == 0


def test_concurrent_creates_of_one_name_have_one_winner(daemon) -> None:
    results = _together(daemon, [("create", "--name", "only-one", "busybox", "true")] * 6)
    winners = [p for p in results if p.returncode == 0]
    assert len(winners) == 1
    for lost in (p for p in results if p.returncode):
        assert 'Conflict. The container name "/only-one" is already in use by container' in lost.stderr
    assert daemon.docker("inspect", "-f", "{{.Id}}", "only-one").stdout.strip() == winners[0].stdout.strip()
    assert len(daemon.docker("ps", "-aq").stdout.split()) == 1

    nets = _together(daemon, [("network", "create", "one-net")] * 4)
    assert sum(p.returncode == 0 for p in nets) == 1
    for lost in (p for p in nets if p.returncode):
        assert "network with name one-net already exists" in lost.stderr
    assert daemon.docker("network", "ls", "-q", "--filter", "name=one-net").stdout.count("\n") == 1


def test_concurrent_runs_on_one_network_get_distinct_addresses_and_rules(daemon) -> None:
    daemon.docker("network", "create", "--subnet", "10.77.0.0/24", "shared")
    names = [f"c{i}" for i in range(8)]
    _ok(_together(daemon, [("run", "-d", "--name", n, "--network", "shared", "-p", "80", "busybox", "sleep", "300")
                           for n in names]))
    inspected = json.loads(daemon.docker("inspect", *names).stdout)
    addresses = [c["NetworkSettings"]["Networks"]["shared"]["IPAddress"] for c in inspected]
    assert len(set(addresses)) == len(names)
    # Every address is on its container's eth0 in the kernel, and every published port has its DNAT.
    for n, ip in zip(names, addresses):
        assert f"inet {ip}/24" in daemon.docker("exec", n, "ip", "-4", "addr", "show", "eth0").stdout
    assert daemon.firewall.forwards() == sorted(
        Forward("tcp", int(c["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]),
                f"{c['NetworkSettings']['Networks']['shared']['IPAddress']}:80") for c in inspected)
    # Removed together: every rule and endpoint goes with them.
    _ok(_together(daemon, [("rm", "-f", n) for n in names]))
    assert daemon.firewall.forwards() == [] and daemon.firewall.hairpins() == set()
    daemon.docker("network", "rm", "shared")
    assert "10.77.0." not in daemon.sh("ip", "-4", "addr")


def test_concurrent_network_creates_pick_distinct_subnets(daemon) -> None:
    names = [f"auto{i}" for i in range(6)]
    _ok(_together(daemon, [("network", "create", n) for n in names]))
    inspected = json.loads(daemon.docker("network", "inspect", *names).stdout)
    subnets = [IPv4Interface(n["IPAM"]["Config"][0]["Subnet"]).network for n in inspected]
    assert all(not a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:])
    _ok(_together(daemon, [("network", "rm", n) for n in names]))
    assert not daemon.docker("network", "ls", "-q", "--filter", "name=auto").stdout.strip()


def test_network_rm_racing_a_connect_leaves_one_consistent_outcome(daemon) -> None:
    """rm and connect of one network at once: either the network went (and the connect failed) or the
    container is on it (and the rm was refused for its endpoint); never a half of each."""
    daemon.docker("run", "-d", "--name", "joiner", "busybox", "sleep", "300")
    for round_ in range(4):
        net = f"race{round_}"
        daemon.docker("network", "create", net)
        rm, connect, other = _together(daemon, [("network", "rm", net), ("network", "connect", net, "joiner"),
                                                ("network", "create", f"bystander{round_}")])
        assert other.returncode == 0, other.stderr
        networks = json.loads(daemon.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", "joiner").stdout)
        links = daemon.docker("exec", "joiner", "ip", "-o", "link").stdout
        if rm.returncode == 0:
            assert connect.returncode != 0 and "not found" in connect.stderr
            assert net not in networks and "eth1" not in links
        else:
            assert connect.returncode == 0, connect.stderr
            assert "has active endpoints" in rm.stderr
            assert net in networks and "eth1" in links
            daemon.docker("network", "disconnect", net, "joiner")
            daemon.docker("network", "rm", net)
        daemon.docker("network", "rm", f"bystander{round_}")
    # Nothing of the raced networks is left in the kernel: only the default bridge and its veth. A
    # removed network's bridge is renamed mz-... and deleted by the link reaper just after rm returns.
    deadline = time.monotonic() + 10
    while True:
        bridges = daemon.sh("ip", "-o", "link", "show", "type", "bridge")
        others = [line.split(":")[1].strip() for line in bridges.splitlines() if "muslin0" not in line]
        if not others or time.monotonic() > deadline:
            break
        assert all(name.startswith("mz-") for name in others), bridges  # only retired ones may linger
        time.sleep(0.1)
    assert others == [] and "muslin0" in bridges, bridges


def test_a_firewall_flush_amid_concurrent_changes_is_repaired_to_exactly_what_exists(daemon) -> None:
    """Rules wiped by someone else while networks and published ports come and go: the guard puts back
    those of what exists, and none of what was removed meanwhile."""
    daemon.docker("run", "-d", "--name", "keeper", "-p", "8080:80", "busybox", "sleep", "300")
    firewall = daemon.firewall

    def networks() -> None:
        for i in range(4):
            daemon.docker("network", "create", f"churn{i}")
            daemon.docker("network", "rm", f"churn{i}")

    def ports() -> None:
        for i in range(4):
            daemon.docker("run", "-d", "--name", f"passing{i}", "-p", "80", "busybox", "sleep", "300")
            daemon.docker("rm", "-f", f"passing{i}")

    with ThreadPoolExecutor(max_workers=2) as pool:
        churn = [pool.submit(networks), pool.submit(ports)]
        firewall.remove_forwards()
        firewall.flush_forwarding()
        for fut in churn:
            fut.result(BOUND_SECONDS)
    keeper = json.loads(daemon.docker("inspect", "keeper").stdout)[0]["NetworkSettings"]["IPAddress"]
    wanted = Forward("tcp", 8080, f"{keeper}:80")
    deadline = time.monotonic() + BOUND_SECONDS
    while wanted not in firewall.forwards() or not firewall.passes_published_ports_to("muslin0"):
        assert time.monotonic() < deadline, "the guard did not put the rules back"
        time.sleep(0.1)
    assert firewall.forwards() == [wanted]
    assert "br-" not in firewall.listing()  # no rule of a network that is gone


def test_concurrent_runs_publishing_one_host_port_have_one_winner(daemon) -> None:
    """Six `run -p 18080:80` at once: one runs, the others get Docker's "already allocated" (not a
    store error), and one DNAT holds the port. 0.0.0.0 and 127.0.0.1 on one port clash as in Docker."""
    results = _together(daemon, [("run", "-d", "--name", f"p{i}", "-p", "18080:80", "busybox", "sleep", "300")
                                 for i in range(6)])
    assert sum(p.returncode == 0 for p in results) == 1, [p.stderr for p in results]
    for lost in (p for p in results if p.returncode):
        assert "Bind for 0.0.0.0:18080 failed: port is already allocated" in lost.stderr, lost.stderr
    running = daemon.docker("ps", "-q", "--filter", "status=running").stdout.split()
    assert len(running) == 1
    assert len([f for f in daemon.firewall.forwards() if f.host_port == 18080]) == 1

    ips = ["0.0.0.0", "127.0.0.1", "0.0.0.0", "127.0.0.1"]
    results = _together(daemon, [("run", "-d", "--name", f"q{i}", "-p", f"{ip}:18081:80", "busybox", "sleep", "300")
                                 for i, ip in enumerate(ips)])
    assert sum(p.returncode == 0 for p in results) == 1, [p.stderr for p in results]
    for ip, lost in ((ip, p) for ip, p in zip(ips, results) if p.returncode):
        assert f"Bind for {ip}:18081 failed: port is already allocated" in lost.stderr, lost.stderr
    assert len([f for f in daemon.firewall.forwards() if f.host_port == 18081]) == 1


def test_concurrent_runs_mounting_one_new_volume_fill_it_once(daemon) -> None:
    """Six runs at once mounting one new named volume over the image's /etc: one volume, made and
    filled with the image's files once (no run's write is undone by a later copy), every run succeeds."""
    image_group = daemon.docker("run", "--rm", "busybox", "cat", "/etc/group").stdout
    _ok(_together(daemon, [("run", "--name", f"v{i}", "-v", "filled:/etc", "busybox", "sh", "-c",
                            f"cat /etc/passwd > /dev/null && echo run{i} >> /etc/group") for i in range(6)]))
    assert daemon.docker("volume", "ls", "-q").stdout.split() == ["filled"]
    group = daemon.docker("run", "--rm", "-v", "filled:/etc", "busybox", "cat", "/etc/group").stdout
    assert group.startswith(image_group)
    assert sorted(group[len(image_group):].split()) == [f"run{i}" for i in range(6)]
