"""`muslin lab`: up for each backend, exec, status, and a down that leaves nothing, also after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from muslin.kernel import netns
from muslin.lab import topology
from muslin.lab.lab import Lab, LabError
from muslin.lab.rig import wait_for
from muslin.lab.views import host_specs, lab_topology
from muslin.observe import trace

from ..conftest import unique

pytestmark = pytest.mark.root


@pytest.fixture
def lab(tmp_path: Path):
    lines: list[str] = []
    lab = Lab(tmp_path / "lab", out=lines.append, prefix=unique("lt") + "-")
    lab.lines = lines  # type: ignore[attr-defined]
    try:
        yield lab
    finally:
        lab.down()
        assert_nothing_left(lab)


def assert_nothing_left(lab: Lab) -> None:
    assert topology.names(lab.prefix) == []
    assert not lab.root.exists()
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if str(lab.root) in line]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            assert str(lab.root).encode() not in cmdline, cmdline


def test_bgp_across_a_router_shows_sessions_routes_and_ping(lab: Lab) -> None:
    lab.up(2, "bgp", routed=True)
    text = "\n".join(lab.lines)
    for expected in ("two L2 segments joined by a router", "node2: 192.168.254.155/24 on eth0, default via the router",
                     "bgp/peers/tor-node1", "[root@node1 ~]# birdc -s /run/flannel/bird/bird.ctl show protocols",
                     "[root@router ~]# birdc -s ", "node_192_168_254_155 BGP", "peer_tor_node1 BGP", "Established", "[root@node1 ~]# ip route show proto bird",
                     "via 192.168.255.1 dev eth0", "blackhole 172.21.", "# on node2", " 0% packet loss",
                     "lab is up: 2 nodes on two routed segments, backend bgp"):
        assert expected in text, expected
    assert "FLANNEL_MTU=1500" in lab.nodes()[0].path("/run/flannel/subnet.env").read_text()
    assert lab.status() == 0


def test_host_gw_across_a_router_fails_and_says_why(lab: Lab) -> None:
    lab.up(2, "host-gw", routed=True)
    text = "\n".join(lab.lines)
    for expected in ("100% packet loss", "refusing host-gw peer", "is not on eth0's L2 segment (reached via 192.168.255.1)",
                     "host-gw fails across the router", "use --backend bgp"):
        assert expected in text, expected


@pytest.mark.parametrize("backend", [None, "vxlan", "host-gw"])
def test_up_shows_the_article_and_pings_across_hosts(shared_lab, backend: str | None) -> None:
    lab = shared_lab(backend)  # what its `up` printed, kept with it (tests/lab/conftest.py)
    text = "\n".join(lab.lines)
    for expected in ("etcdctl", "member list", "FLANNEL_NETWORK=172.21.0.0/16", "FLANNEL_SUBNET=172.21.",
                     "--bip=172.21.", "inet addr:172.21.", " 0% packet loss", "lab is up: 2 nodes",
                     "[root@node1 ~]# cat /etc/sysconfig/flanneld", "[root@node2 ~]# cat /run/flannel/subnet.env"):
        assert expected in text, expected
    for node in lab.nodes():  # etcdctl prints these on stderr: the lab shows them all the same
        assert f"http://{node.address}:2379 is healthy" in text
    if backend is None:  # the article's config verbatim: no Backend, so flanneld's udp
        assert """etcdctl mk /atomic.io/network/config '{"Network":"172.21.0.0/16"}'""" in text
        assert "backend udp (the article's config names none" in text
    effective = backend or "udp"
    device = {"vxlan": "flannel.1", "udp": "flannel0", "host-gw": None}[effective]
    for node in lab.nodes():
        env = (node.path("/run/flannel/subnet.env")).read_text()
        assert "FLANNEL_MTU=" + {"vxlan": "1450", "udp": "1472", "host-gw": "1500"}[effective] in env
        if device:
            assert device in lab.run(node, "ip", "-o", "link").stdout
    assert lab.status() == 0


def test_exec_status_and_down_after_a_crash(lab: Lab) -> None:
    real = {path: os.path.exists(path) for path in ("/run/flannel", "/etc/sysconfig")}
    lab.up(2, "vxlan")
    node1, node2 = lab.nodes()
    argv, env = lab.exec_argv("node1", ["docker", "ps", "--format", "{{.Names}}"])
    assert subprocess.run(argv, env=env, capture_output=True, text=True).stdout.split() == ["bb-node1"]
    # The article's paths, verbatim, are each node's own files.
    for node in (node1, node2):
        for path in ("/run/flannel/subnet.env", "/run/flannel/docker", "/etc/sysconfig/flanneld", "/etc/hosts"):
            argv, env = lab.exec_argv(node.name, ["cat", path])
            shown = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
            assert shown.returncode == 0 and shown.stdout == node.path(path).read_text(), (node.name, path, shown)
    argv, env = lab.exec_argv("node2", ["sh", "-c", "echo probe > /run/flannel/probe; echo probe > /etc/sysconfig/probe;"
                                        " ip -o addr show eth0"])
    written = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert node2.address in written.stdout  # and in node2's network namespace
    assert node2.path("/run/flannel/probe").read_text() == "probe\n"
    assert node2.path("/etc/sysconfig/probe").read_text() == "probe\n"
    assert not node1.path("/run/flannel/probe").exists()
    # The agents see the article's paths too (their sysconfig names no file), and the machine's own
    # /run/flannel and /etc/sysconfig were never written.
    assert "--subnet-file" not in node1.path("/etc/sysconfig/flanneld").read_text()
    assert {path: os.path.exists(path) for path in real} == real
    with pytest.raises(LabError, match="no lab node"):
        lab.exec_argv("node9", [])
    with pytest.raises(LabError, match="already up"):
        lab.up(2, "vxlan")
    # A crash: the engines and agents die without cleaning up; down must still remove everything.
    for node in (node1, node2):
        for name in ("muslind", "muslin-flanneld"):
            os.kill(int(node.path(f"/run/{name}.pid").read_text()), signal.SIGKILL)
    assert lab.status() == 1


def test_the_muslin_command_drives_the_lab(tmp_path: Path) -> None:
    root = tmp_path / "cli-lab"
    muslin = str(Path(sys.executable).with_name("muslin"))
    bad = subprocess.run([muslin, "lab", "--root", str(root), "up", "--backend", "nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
    status = subprocess.run([muslin, "lab", "--root", str(root), "status"], capture_output=True, text=True)
    assert status.returncode == 1 and "no lab is up" in status.stdout
    assert not root.exists()


def test_down_is_idempotent_and_finishes_a_half_done_up(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "half", out=lambda _: None, prefix=unique("lh") + "-")
    topology.create(lab.prefix, 2)  # an `up` that died right after making the hosts
    lab.root.mkdir()
    lab.down()
    lab.down()
    assert_nothing_left(lab)


def test_overlay_network_across_the_engines(shared_lab) -> None:
    lab = shared_lab("vxlan", overlay=True)
    text = "\n".join(lab.lines)
    node1, node2 = lab.nodes()
    assert f"--cluster-store etcd://{node1.address}:2379,{node2.address}:2379 --cluster-advertise eth0:2376" in text
    net_id = lab.run(node1, "docker", "network", "inspect", "-f", "{{.Id}}", "ov1").stdout.strip()
    listed = text.split("[root@node2 ~]# docker network ls --filter driver=overlay")[1]
    assert f"{net_id[:12]}   ov1       overlay   global" in listed, listed
    for expected in ("hello from web1 on node1", " 0% packet loss"):
        assert expected in text, expected
    assert lab.status() == 0
    # what `muslin lab topo` and `lab trace` see of it: each node's ov1 namespace, and a probe across
    lab.run(node2, "docker", "run", "-d", "--name", "c2", "--network", "ov1", "busybox", "sleep", "600")
    web1_ip = lab.run(node1, "docker", "inspect", "-f", "{{.NetworkSettings.Networks.ov1.IPAddress}}",
                      "web1").stdout.strip()
    wait_for(lambda: any(p.address == web1_ip for p in lab_topology(lab).host("node2").overlays[0].peers), 10,
             "web1 among node2's remote endpoints")
    seen = lab_topology(lab)
    for host, local in ((seen.host("node1"), "web1"), (seen.host("node2"), "c2")):
        (ov,) = host.overlays
        assert ov.id == net_id and ov.vxlan.vni and ov.vxlan.local == (node1 if local == "web1" else node2).address
        assert [p.container for p in ov.ports] == [local]
    switch = (netns.path_for(topology.switch_name(lab.prefix)), topology.SWITCH_BRIDGE)
    source, target = "c2", "web1"
    result = trace.run(host_specs(lab), source, target, "tcp", 80, underlay=switch)
    assert result.arrived, trace.render_text(result)
    assert [h.where for h in result.hops] == ["c2", "overlay ov1 on node2", "node2 (outer packet)",
                                              "underlay switch (outer packet)", "node1 (outer packet)",
                                              "overlay ov1 on node1", "web1"], trace.render_text(result)
