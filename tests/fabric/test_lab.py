"""The multi-host rig the lab builds on: underlay namespaces and an etcd member per host."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from muslin.kernel import netns
from muslin.lab import topology
from muslin.lab.etcd import EtcdCluster
from muslin.lab.rig import in_ns

pytestmark = pytest.mark.root


@pytest.fixture
def prefix():
    name = f"lt{uuid.uuid4().hex[:5]}"
    yield name
    topology.teardown(name)
    assert topology.names(name) == []


def test_underlay_is_idempotent_and_hosts_reach_each_other(prefix: str) -> None:
    first = topology.create(prefix, 3)
    again = topology.create(prefix, 3)
    assert first == again
    assert [str(h.address) for h in first.hosts] == ["192.168.255.154", "192.168.255.155", "192.168.255.156"]
    assert topology.names(prefix) == [f"{prefix}node1", f"{prefix}node2", f"{prefix}node3", f"{prefix}sw"]
    for host in first.hosts:
        assert in_ns(host.name, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
        assert f"inet {host.address}/24" in in_ns(host.name, "ip", "-o", "addr", "show", "eth0").stdout
    assert in_ns(first.hosts[0].name, "busybox", "ping", "-c1", "-W2", "192.168.255.156").returncode == 0


def test_teardown_after_a_crash_kills_what_runs_inside(prefix: str) -> None:
    underlay = topology.create(prefix, 1)
    orphan = subprocess.Popen(["nsenter", f"--net={underlay.hosts[0].netns}", "sleep", "60"])
    try:
        # Popen returns before nsenter has entered the namespace; a teardown scanning before then
        # would not see the process as inside it.
        deadline = time.monotonic() + 5
        while orphan.pid not in topology.processes_in(underlay.hosts[0].name) and time.monotonic() < deadline:
            time.sleep(0.01)
        topology.teardown(prefix)
        assert orphan.wait(5) != 0
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    assert not netns.exists(underlay.hosts[0].name)
    topology.teardown(prefix)  # idempotent


def test_etcd_cluster_member_per_host_with_v2(prefix: str, tmp_path) -> None:
    underlay = topology.create(prefix, 2)
    with EtcdCluster(underlay.hosts, str(tmp_path / "etcd")) as cluster:
        assert cluster.endpoints == ["http://192.168.255.154:2379", "http://192.168.255.155:2379"]
        ep = ",".join(cluster.endpoints)
        out = in_ns(underlay.hosts[1].name, "etcdctl", f"--endpoints={ep}", "mk", "/k", "v",
                    env={"ETCDCTL_API": "2"})
        assert out.returncode == 0, out.stderr
        cluster.stop_member(0)
        assert not cluster.member_healthy(0)
        cluster.start_member(0)
        cluster.wait_healthy(timeout=20)
        got = in_ns(underlay.hosts[0].name, "etcdctl", f"--endpoints={cluster.endpoints[0]}", "get", "/k",
                    env={"ETCDCTL_API": "2"})
        assert got.stdout.strip() == "v"
