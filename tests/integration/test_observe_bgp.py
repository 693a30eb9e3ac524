"""BGP sessions in the topology: two namespaces whose BIRDs peer, read over BIRD's control socket."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from muslin.kernel import netns
from muslin.observe import render_svg, render_text
from muslin.observe.topology import HostSpec, collect

from ..tools import require

pytestmark = pytest.mark.root

CONFIG = """router id 10.66.0.{me};
protocol device {{}}
protocol bgp peer{other} {{
  local 10.66.0.{me} as 6500{me};
  neighbor 10.66.0.{other} as 6500{other};
  ipv4 {{ import none; export none; }};
}}
"""


def _pid_written(pidfile: Path) -> int:
    """bird's parent returns before the daemon has written its pid file: wait (bounded) for it."""
    deadline = time.monotonic() + 5
    while not (text := pidfile.read_text().strip() if pidfile.exists() else ""):
        assert time.monotonic() < deadline, f"bird wrote no pid to {pidfile}"
        time.sleep(0.01)
    return int(text)


@pytest.fixture
def peers(make_netns, tmp_path: Path):
    names = [make_netns("bg-"), make_netns("bg-")]
    with netns.iproute(names[0]) as one:
        fd = os.open(netns.path_for(names[1]), os.O_RDONLY)
        try:
            one.link("add", ifname="e0", kind="veth", peer={"ifname": "e0", "net_ns_fd": fd})
        finally:
            os.close(fd)
    pids = []
    try:
        for me, ns in ((1, names[0]), (2, names[1])):
            with netns.iproute(ns) as ipr:
                index = ipr.link_lookup(ifname="e0")[0]
                ipr.addr("add", index=index, address=f"10.66.0.{me}", prefixlen=24)
                ipr.link("set", index=index, state="up")
            conf = tmp_path / f"bird{me}.conf"
            conf.write_text(CONFIG.format(me=me, other=3 - me))
            subprocess.run(["nsenter", f"--net={netns.path_for(ns)}", require("bird"), "-c", str(conf), "-s",
                            str(tmp_path / f"bird{me}.ctl"), "-P", str(tmp_path / f"bird{me}.pid")], check=True)
            pids.append(_pid_written(tmp_path / f"bird{me}.pid"))
        yield names
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while any(os.path.exists(f"/proc/{p}") for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_sessions_of_each_host_and_the_edge_between_them(peers: list[str]) -> None:
    hosts = [HostSpec("b1", netns.path_for(peers[0]), None), HostSpec("b2", netns.path_for(peers[1]), None)]
    deadline = time.monotonic() + 20
    while True:
        topology = collect(hosts)
        states = [s.state for h in topology.hosts for s in h.bgp]
        if states == ["Established", "Established"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (one,) = topology.hosts[0].bgp
    (two,) = topology.hosts[1].bgp
    assert (one.name, one.state, one.neighbor, one.neighbor_as, one.local_as) == \
        ("peer2", "Established", "10.66.0.2", 65002, 65001)
    assert (two.name, two.neighbor, two.neighbor_as, two.local_as) == ("peer1", "10.66.0.1", 65001, 65002)
    assert "peer2: neighbor 10.66.0.2 AS 65002 (local AS 65001) Established" in render_text.render(topology)
    dot = render_svg.to_dot(topology)
    assert dot.count('label="BGP Established"') == 1 and '"bgp/b1" -> "bgp/b2"' in dot
