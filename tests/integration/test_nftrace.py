"""Tracing in a bare namespace: a rule written with nft is named by its nft text, the probe is told
apart from other traffic, and the trace table goes away."""

from __future__ import annotations

import subprocess

import pytest

from muslin.kernel import netns, nftrace
from muslin.observe import trace
from muslin.observe.topology import HostSpec, collect

pytestmark = pytest.mark.root

GUARD = """table ip guard {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 9999 counter drop
  }
}
"""


@pytest.fixture
def box(make_netns) -> str:
    ns = make_netns("nt-")
    with netns.iproute(ns) as ipr:
        ipr.link("add", ifname="d0", kind="veth", peer="d1")
        for name in ("d0", "d1"):
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        ipr.addr("add", index=ipr.link_lookup(ifname="d0")[0], address="10.77.0.1", prefixlen=24)
    subprocess.run(["nsenter", f"--net={netns.path_for(ns)}", "nft", "-f", "-"], input=GUARD, text=True, check=True)
    return ns


def ruleset(ns: str) -> str:
    return subprocess.run(["nsenter", f"--net={netns.path_for(ns)}", "nft", "list", "ruleset"], capture_output=True,
                          text=True, check=True).stdout


def test_a_native_nft_drop_is_named_and_the_firewall_is_left_as_found(box: str) -> None:
    before = ruleset(box)
    topology = collect([HostSpec("box", netns.path_for(box), None)])
    dropped = trace.run([], src="box", dst="10.77.0.1", protocol="udp", port=9999, topology=topology)
    assert not dropped.arrived
    assert dropped.verdict.startswith("dropped in box: guard input: udp dport 9999 counter packets")
    assert dropped.verdict.endswith("drop  → drop")
    passed = trace.run([], src="box", dst="10.77.0.1", protocol="udp", port=9998, topology=topology)
    assert passed.arrived and passed.verdict == "arrived at box (10.77.0.1)"
    assert "port 9998 unreachable" in passed.reply
    assert nftrace.trace_tables(netns.path_for(box)) == []
    # the guard's counter moved by the one probe only; nothing else changed
    assert ruleset(box) == before.replace("packets 0 bytes 0", "packets 1 bytes 40")
