"""Fixtures of the fabric tests: the multi-host rig (see rig.py), always torn down."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator

import pytest

from muslin.kernel import netns
from muslin.lab import topology
from muslin.lab.etcd import TlsConfig
from muslin.lab.rig import Rig, wait_for
from muslin.lab.topology import Underlay


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    """Factory: Rig(hosts=N) with a running etcd cluster; torn down, agents and all, at the end."""
    rigs: list[Rig] = []

    def make(hosts: int = 2, tls: Callable[[str, Underlay], TlsConfig] | None = None, routed: bool = False) -> Rig:
        prefix = f"ft{uuid.uuid4().hex[:5]}"
        underlay = topology.create(prefix, hosts, routed=routed)
        workdir = tempfile.mkdtemp(prefix=f"muslin-{prefix}-")
        rig = Rig(underlay, workdir, tls(workdir, underlay) if tls else None)
        rigs.append(rig)
        rig.etcd.start()
        return rig

    yield make
    for rig in rigs:
        for i in list(rig.agents):
            rig.stop_agent(i, kill=True)
        rig.etcd.stop()
        for name in rig.containers:
            netns.remove(name)
        topology.teardown(rig.underlay.prefix)
        shutil.rmtree(rig.workdir, ignore_errors=True)
        assert topology.names(rig.underlay.prefix) == [], "underlay namespaces left behind"
        # SIGKILLed processes take a moment to exit.
        wait_for(lambda: not processes_naming(rig.workdir), 5, "the rig's processes (BIRD, agents, etcd) to go")


def processes_naming(path: str) -> list[int]:
    """Live processes whose command line names path (zombies have none)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if path.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.fixture
def underlay(host_ns: str):
    """host_ns with eth0 at 192.0.2.1/24 (a veth whose peer stays there too), and an IPRoute in it."""
    with netns.iproute(host_ns) as ipr:
        ipr.link("add", ifname="eth0", kind="veth", peer="eth0p")
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=index, address="192.0.2.1", prefixlen=24)
        ipr.link("set", index=index, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="eth0p")[0], state="up")
        yield host_ns, ipr, index
