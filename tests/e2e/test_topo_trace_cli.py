"""`muslin topo` and `muslin trace` against a live muslind with every network mode: the topology as the
kernel and the engine hold it, real probes traced through nf_tables, and no trace rule left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from muslin.kernel import netns, nftrace
from muslin.lab.lab import unmount_under

from ..conftest import unique
from ..firewall_view import IPTABLES, NFTABLES
from .conftest import Daemon

pytestmark = pytest.mark.root

MUSLIN = str(Path(sys.executable).with_name("muslin"))


# The rule a trace names at each decision, as each firewall backend writes it (trace shows iptables'
# text for iptables-nft's rules and nft's text for the nftables backend's).
RULES = {
    IPTABLES: {
        "icc": "-A MUSLIN-FORWARD -i tbr1 -o tbr1 -j ACCEPT",
        "dnat": "⇄ nat MUSLIN: -A MUSLIN -p tcp -m tcp --dport 8081 -j DNAT --to-destination",
        "isolation into muslin0": "-o muslin0 -j DROP",
        "isolation into tbr1": "✗ filter MUSLIN-ISOLATION-STAGE-2: -A MUSLIN-ISOLATION-STAGE-2 -o tbr1 -j DROP",
        "internal": "✗ filter MUSLIN-ISOLATION-STAGE-1: -A MUSLIN-ISOLATION-STAGE-1 ! -s 192.168.101.0/24",
    },
    NFTABLES: {
        "icc": 'muslin forward: iifname . oifname vmap @same-bridge comment "icc"  → accept',
        "dnat": "⇄ muslin published: dnat ip to meta l4proto . th dport map @dnat-any-address",
        "isolation into muslin0": '✗ muslin forward: iifname @bridges oifname @bridges drop comment "isolation"',
        "isolation into tbr1": '✗ muslin forward: iifname @bridges oifname @bridges drop comment "isolation"',
        "internal": "✗ muslin forward: oifname @internal-bridges ip saddr != @internal-subnets drop",
    },
}


@pytest.fixture(scope="module", params=["default", IPTABLES])
def lab_engine(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """One engine for the module (its containers take a while to start), with every network mode; on
    the default firewall backend (nftables where it works) and on iptables."""
    ns = unique("mo-")
    netns.create(ns)
    root = Path(tempfile.mkdtemp(prefix="muslin-topo-"))
    d = Daemon(ns=ns, root=root, sock=str(root / "docker.sock"),
               args=["--firewall-backend", IPTABLES] if request.param == IPTABLES else [])
    try:
        with netns.iproute(ns) as ipr:  # a parent for the macvlan network
            ipr.link("add", ifname="up0", kind="veth", peer="up1")
            for name in ("up0", "up1"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        d.start()
        d.docker("network", "create", "-d", "macvlan", "-o", "parent=up0", "--subnet", "192.168.102.0/24", "mv")
        d.docker("run", "-d", "--name", "mv1", "--network", "mv", "busybox", "sleep", "600")
        d.docker("network", "create", "--subnet", "192.168.100.0/24", "-o", "com.docker.network.bridge.name=tbr1",
                 "mybr")
        d.docker("network", "create", "--internal", "--subnet", "192.168.101.0/24", "isol")
        d.docker("run", "-d", "--name", "web", "-p", "8081:80", "busybox", "sh", "-c",
                 "mkdir /www; echo hello > /www/index.html; exec httpd -f -h /www")
        d.docker("run", "-d", "--name", "ca", "--network", "mybr", "busybox", "sleep", "600")
        d.docker("run", "-d", "--name", "cb", "--network", "mybr", "busybox", "httpd", "-f", "-p", "7000")
        d.docker("run", "-d", "--name", "inner", "--network", "isol", "busybox", "sleep", "600")
        d.docker("run", "-d", "--name", "hostc", "--network", "host", "busybox", "sleep", "600")
        d.docker("run", "-d", "--name", "nonec", "--network", "none", "busybox", "sleep", "600")
        d.docker("run", "-d", "--name", "side", "--network", "container:web", "busybox", "sleep", "600")
        yield d
    finally:
        if d.proc and d.proc.poll() is None:
            ids = d.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                d.docker("rm", "-f", *ids, check=False)
        d.stop()
        unmount_under(d.root)
        netns.remove(d.ns)
        shutil.rmtree(d.root, ignore_errors=True)


def muslin(d: Daemon, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([MUSLIN, *args], env=d.env, capture_output=True, text=True, timeout=timeout)


def inspect(d: Daemon, name: str) -> dict:
    return json.loads(d.docker("inspect", name).stdout)[0]


def trace_tables_everywhere(d: Daemon) -> list[str]:
    found = nftrace.trace_tables(d.ns)
    for name in json.loads(d.docker("inspect", *d.docker("ps", "-q").stdout.split()).stdout):
        pid = name["State"]["Pid"]
        if pid:
            found += nftrace.trace_tables(f"/proc/{pid}/ns/net")
    return found


def test_topology_of_every_network_mode(lab_engine: Daemon, tmp_path: Path) -> None:
    d = lab_engine
    out = muslin(d, "topo", "--format", "json")
    assert out.returncode == 0, out.stderr
    topo = json.loads(out.stdout)
    assert topo["schema"] == "muslin.topology/1"
    (host,) = topo["hosts"]
    assert host["netns"].startswith("/proc/") and host["docker_host"] == f"unix://{d.sock}"
    containers = {c["name"]: c for c in host["containers"]}
    assert {"web", "ca", "cb", "inner", "hostc", "nonec", "side", "mv1"} <= set(containers)
    assert containers["hostc"]["network_mode"] == "host" and containers["hostc"]["endpoints"] == []
    assert containers["nonec"]["network_mode"] == "none" and containers["nonec"]["endpoints"] == []
    assert containers["side"]["network_mode"] == "container:web"
    assert containers["web"]["ports"] == [{"container_port": 80, "protocol": "tcp", "host_ip": "0.0.0.0",
                                           "host_port": 8081}]
    bridges = {b["name"]: b for b in host["bridges"]}
    networks = {n["name"]: n for n in host["networks"]}
    assert networks["mybr"]["bridge"] == "tbr1" and networks["isol"]["internal"] is True
    assert bridges["tbr1"]["network"] == "mybr" and "192.168.100.1/24" in bridges["tbr1"]["addresses"]
    for name, network in (("ca", "mybr"), ("cb", "mybr"), ("web", "bridge"), ("inner", "isol")):
        (ep,) = containers[name]["endpoints"]
        settings = inspect(d, name)["NetworkSettings"]["Networks"][network]
        assert ep["network"] == network and ep["kind"] == "veth" and ep["ifname"] == "eth0"
        assert ep["address"] == f"{settings['IPAddress']}/{settings['IPPrefixLen']}"
        assert ep["mac"] == settings["MacAddress"].lower()
        # the veth's host end, as the kernel says: plugged into the network's bridge
        bridge = networks[network]["bridge"]
        assert ep["bridge"] == bridge and ep["host_ifname"] in bridges[bridge]["ports"]
        assert ep["host_ifname"] in d.sh("ip", "-o", "link", "show", "master", bridge)
        assert {"host_end": ep["host_ifname"], "peer_end": "eth0", "peer_namespace": name, "bridge": bridge} \
            in host["veths"]
    (mv,) = containers["mv1"]["endpoints"]
    settings = inspect(d, "mv1")["NetworkSettings"]["Networks"]["mv"]
    assert (mv["kind"], mv["host_ifname"], mv["bridge"], mv["driver"]) == ("macvlan", "up0", None, "macvlan")
    assert mv["mac"] == settings["MacAddress"].lower() and mv["address"] == f"{settings['IPAddress']}/24"
    assert "up0" in [i["name"] for i in host["interfaces"]]
    routes = {r["dst"]: r for r in host["routes"]}
    assert routes["192.168.100.0/24"]["dev"] == "tbr1" and routes["192.168.100.0/24"]["role"] == "connected"

    text = muslin(d, "topo")
    assert text.returncode == 0, text.stderr
    for expected in ("bridge tbr1 192.168.100.1/24", f"{containers['ca']['endpoints'][0]['host_ifname']} ⇄ ca:eth0",
                     "web (default", "0.0.0.0:8081->80/tcp", "shares the host's network namespace",
                     "shares web's network namespace", "loopback only", "macvlan of up0"):
        assert expected in text.stdout, expected

    svg = tmp_path / "t.svg"
    drawn = muslin(d, "topo", "--format", "svg", "-o", str(svg))
    assert drawn.returncode == 0, drawn.stderr
    picture = svg.read_text()
    assert "Generated by graphviz" in picture and "<svg" in picture
    for node in ("container/", "bridge/", "/ca\"", "/tbr1\"", "iface/"):
        assert node in picture, node
    refused = muslin(d, "topo", "--format", "svg")
    assert refused.returncode == 2 and "-o FILE" in refused.stderr


def test_trace_container_to_container_on_one_bridge(lab_engine: Daemon) -> None:
    d = lab_engine
    out = muslin(d, "trace", "ca", "cb", "--tcp", "7000", "--format", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["arrived"] and "answered the SYN with SYN-ACK" in result["reply"]
    wheres = [h["where"] for h in result["hops"]]
    assert wheres[0] == "ca" and wheres[-1] == "cb" and len(wheres) == 3
    host_hop = result["hops"][1]
    assert host_hop["iif"] == host_hop["oif"] == "tbr1"
    steps = [s["text"] for s in host_hop["steps"]]
    assert any("bridged by tbr1" in s for s in steps)
    assert any(RULES[d.firewall.backend]["icc"] in s for s in steps), steps
    host = os.uname().nodename
    assert result["path"] == [f"container/{host}/ca", f"bridge/{host}/tbr1", f"container/{host}/cb"]
    assert trace_tables_everywhere(d) == []


def test_trace_to_a_published_port_shows_the_dnat(lab_engine: Daemon) -> None:
    d = lab_engine
    web_ip = inspect(d, "web")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    # from the host itself (hostc shares its namespace): DNAT in OUTPUT, then across the bridge
    out = muslin(d, "trace", "hostc", "192.168.100.1", "--tcp", "8081")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"DNAT 192.168.100.1:8081 → {web_ip}:80 (container web" in out.stdout, out.stdout
    assert RULES[d.firewall.backend]["dnat"] in out.stdout, out.stdout
    assert f"ARRIVED: arrived at web ({web_ip})" in out.stdout
    assert "answered the SYN with SYN-ACK" in out.stdout
    # from a container of another network: DNAT'ed, then dropped by the isolation between networks
    out = muslin(d, "trace", "ca", "192.168.100.1", "--tcp", "8081")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"DNAT 192.168.100.1:8081 → {web_ip}:80" in out.stdout
    assert "NOT DELIVERED: dropped in" in out.stdout and RULES[d.firewall.backend]["isolation into muslin0"] in out.stdout


def test_trace_blocked_between_isolated_networks(lab_engine: Daemon) -> None:
    d = lab_engine
    out = muslin(d, "trace", "web", "ca", "--udp", "9")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "NOT DELIVERED: dropped in" in out.stdout
    assert RULES[d.firewall.backend]["isolation into tbr1"] in out.stdout, out.stdout
    assert trace_tables_everywhere(d) == []


def test_trace_blocked_by_an_internal_network(lab_engine: Daemon) -> None:
    d = lab_engine
    inner_ip = inspect(d, "inner")["NetworkSettings"]["Networks"]["isol"]["IPAddress"]
    into = muslin(d, "trace", "ca", "inner")
    assert into.returncode == 1, into.stdout + into.stderr
    assert RULES[d.firewall.backend]["internal"] in into.stdout and inner_ip in into.stdout, into.stdout
    out_of = muslin(d, "trace", "inner", "10.255.0.1", "--udp", "53")
    assert out_of.returncode == 1
    assert "NOT DELIVERED: not sent: inner (container on" in out_of.stdout
    assert "has no route to 10.255.0.1 (Network is unreachable)" in out_of.stdout


def test_trace_rejects_bad_input_and_changes_nothing(lab_engine: Daemon) -> None:
    d = lab_engine
    before = d.sh("nft", "list", "ruleset")
    for args in (["nosuch", "ca"], ["ca", "not-an-address"], ["ca", "cb", "--tcp", "0"]):
        out = muslin(d, "trace", *args)
        assert out.returncode == 2 and out.stderr.startswith("muslin trace: "), (args, out.stderr)
    assert d.sh("nft", "list", "ruleset") == before
    # a container with loopback only is a fine source: the kernel has no route for its probe
    lonely = muslin(d, "trace", "nonec", "ca")
    assert lonely.returncode == 1 and "has no route to 192.168.100.2" in lonely.stdout


def test_an_interrupted_trace_leaves_no_rule(lab_engine: Daemon) -> None:
    d = lab_engine
    before, firewall_before = d.sh("iptables-save").splitlines(), d.firewall.snapshot()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        # a dropped probe waits for its answer; stop the trace while its tables are in place
        proc = subprocess.Popen([MUSLIN, "trace", "web", "ca", "--udp", "9"], env=d.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not nftrace.trace_tables(d.ns) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert nftrace.trace_tables(d.ns), "the trace never installed its table"
        proc.send_signal(sig)
        proc.wait(10)
        if sig == signal.SIGKILL:
            assert nftrace.trace_tables(d.ns)  # nothing could run; the next trace removes it
            again = muslin(d, "trace", "ca", "cb")
            assert again.returncode == 0, again.stdout + again.stderr
        assert trace_tables_everywhere(d) == [], sig
    assert [r for r in d.sh("iptables-save").splitlines() if not r.startswith("#")] == \
        [r for r in before if not r.startswith("#")]
    assert d.firewall.snapshot() == firewall_before
