"""``muslind --firewall-backend nftables`` through the real docker CLI: the same traffic as the iptables
backend's tests (published ports from outside, from the host's 127.0.0.1 and from the container itself,
egress masquerade, isolation, internal networks, ICC off), with every network and port as elements of
``table ip muslin`` and no iptables rule of ours; a flushed ruleset and a restart come back, and switching
backend across a restart leaves nothing of the other behind."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from muslin.engine.nft_ruleset import TableState, parse_table
from muslin.kernel import netns

from ..firewall_view import backend_in_log
from .test_containers_cli import HTTPD, _link_outside, _serve_peer_address, _wget

pytestmark = pytest.mark.root
NFT = ("--firewall-backend", "nftables")
IPTABLES = ("--firewall-backend", "iptables")


def _table(daemon) -> str:
    return daemon.sh("nft", "list", "table", "ip", "muslin", check=False)


def _state(daemon) -> TableState | None:
    """The table's elements and chains (in an order of their own: nft lists interval sets by key)."""
    return parse_table(json.loads(daemon.sh("nft", "-j", "list", "table", "ip", "muslin", check=False) or "{}"))


def _iptables_of_ours(daemon) -> list[str]:
    return [line for line in daemon.sh("iptables-save").splitlines() if "MUSLIN" in line or "MASQUERADE" in line]


def _until(check, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)
    return check()


def test_published_port_from_outside_localhost_hairpin_and_egress(daemon_factory, make_netns) -> None:
    daemon = daemon_factory(*NFT)
    outside = _link_outside(daemon, make_netns)
    daemon.docker("run", "-d", "--name", "web1", "-p", "8081:80", "busybox", "sh", "-c", HTTPD)
    table = _table(daemon)
    # Where the port goes, readable in nft's own listing.
    assert "tcp . 8081 : 172.17.0.2 . 80" in table
    assert '"muslin0" . 172.17.0.2 . tcp . 80' in table
    assert _iptables_of_ours(daemon) == []
    assert _until(lambda: "hello world" in _wget(daemon, "http://127.0.0.1:8081/"))
    assert "hello world" in _wget(daemon, "http://10.99.0.1:8081/")
    from_outside = subprocess.run(["nsenter", f"--net={netns.path_for(outside)}", "timeout", "5", "busybox",
                                   "wget", "-qO-", "http://10.99.0.1:8081/"], capture_output=True, text=True)
    assert "hello world" in from_outside.stdout
    hairpin = daemon.docker("exec", "web1", "timeout", "5", "wget", "-qO-", "http://10.99.0.1:8081/")
    assert "hello world" in hairpin.stdout

    server, seen = _serve_peer_address(outside, 9000)
    out = daemon.docker("run", "--rm", "busybox", "timeout", "5", "wget", "-qO-", "http://10.99.0.2:9000/")
    server.join(10)
    assert seen == ["10.99.0.1"] and "10.99.0.1" in out.stdout

    daemon.docker("run", "-d", "--name", "web2", "-p", "127.0.0.1:8082:80", "busybox", "sh", "-c", HTTPD)
    assert "127.0.0.1 . tcp . 8082 : 172.17.0.3 . 80" in _table(daemon)
    assert _until(lambda: "hello world" in _wget(daemon, "http://127.0.0.1:8082/"))
    assert "hello world" not in _wget(daemon, "http://10.99.0.1:8082/")  # bound to 127.0.0.1 only

    daemon.docker("rm", "-f", "web1", "web2")
    table = _table(daemon)
    assert "172.17.0.2" not in table and "172.17.0.3" not in table and "8081" not in table


def test_isolation_internal_and_icc_off(daemon_factory) -> None:
    daemon = daemon_factory(*NFT)
    daemon.docker("network", "create", "--subnet", "10.61.0.0/24", "neta")
    daemon.docker("network", "create", "--subnet", "10.62.0.0/24", "netb")
    daemon.docker("network", "create", "--internal", "--subnet", "10.63.0.0/24", "inner")
    daemon.docker("network", "create", "--subnet", "10.64.0.0/24", "-o",
                  "com.docker.network.bridge.enable_icc=false", "noicc")
    for name, net in (("ca", "neta"), ("ca2", "neta"), ("cb", "netb"), ("n1", "noicc"), ("n2", "noicc"),
                      ("i1", "inner"), ("i2", "inner")):
        daemon.docker("run", "-d", "--name", name, "--network", net, "busybox", "sleep", "300")

    def ping(container: str, ip: str) -> int:
        return daemon.docker("exec", container, "ping", "-c", "1", "-W", "1", ip, check=False).returncode

    assert ping("ca", "10.61.0.1") == 0
    assert ping("ca", "10.61.0.3") == 0  # ICC on
    assert ping("ca", "10.62.0.2") != 0  # isolation between networks
    assert ping("cb", "10.61.0.2") != 0
    assert ping("n1", "10.64.0.3") != 0  # ICC off
    assert ping("i1", "10.63.0.3") == 0  # inside an internal network
    assert ping("i1", "10.61.0.2") != 0  # nothing out of it
    assert ping("ca", "10.63.0.2") != 0  # nothing into it
    table = _table(daemon)
    (noicc,) = json.loads(daemon.docker("network", "inspect", "noicc").stdout)
    bridge = noicc["Options"].get("com.docker.network.bridge.name") or "br-" + noicc["Id"][:12]
    assert f'"{bridge}" . "{bridge}" : jump same-bridge-no-icc' in table
    daemon.docker("rm", "-f", "ca", "ca2", "cb", "n1", "n2", "i1", "i2")
    for net in ("neta", "netb", "inner", "noicc"):
        daemon.docker("network", "rm", net)
    table = _table(daemon)
    assert "10.6" not in table and bridge not in table


def test_a_flushed_ruleset_comes_back_and_a_restart_reconciles(daemon_factory) -> None:
    daemon = daemon_factory(*NFT)
    daemon.docker("network", "create", "--subnet", "10.79.0.0/24", "reloaded")
    daemon.docker("run", "-d", "--name", "web3", "--network", "reloaded", "-p", "8083:80", "busybox", "sh", "-c", HTTPD)
    assert "tcp . 8083 : 10.79.0.2 . 80" in _table(daemon)
    wanted_state = _state(daemon)
    daemon.sh("nft", "flush", "ruleset")
    assert _until(lambda: _state(daemon) == wanted_state)
    assert "put back" in daemon.log()
    assert _until(lambda: "hello world" in _wget(daemon, "http://127.0.0.1:8083/"))

    # Stopped, its table emptied by hand, a port element of a container that is gone added: the start
    # puts back what is missing and removes what is not wanted.
    daemon.stop()
    daemon.sh("nft", "flush", "map", "ip", "muslin", "dnat-any-address")
    daemon.sh("nft", "add", "element", "ip", "muslin", "dnat-any-address", "{ tcp . 9999 : 10.79.0.99 . 80 }")
    daemon.start()
    assert _state(daemon) == wanted_state
    assert _until(lambda: "hello world" in _wget(daemon, "http://127.0.0.1:8083/"))
    daemon.docker("rm", "-f", "web3")
    daemon.docker("network", "rm", "reloaded")
    assert "10.79.0" not in _table(daemon)


@pytest.mark.parametrize("then", [NFT, ()], ids=["explicit", "default"])
def test_switching_backend_across_a_restart_leaves_nothing_of_the_other(daemon_factory, then) -> None:
    """Also the default's change: an engine that ran on iptables (the default before) and starts again
    without a flag moves its rules to nftables."""
    daemon = daemon_factory(*IPTABLES)
    daemon.docker("network", "create", "--subnet", "10.77.0.0/24", "sw")
    daemon.docker("run", "-d", "--name", "web4", "--network", "sw", "-p", "8084:80", "busybox", "sh", "-c", HTTPD)
    assert any("8084" in line for line in daemon.sh("iptables-save").splitlines())
    daemon.stop()
    daemon.args = list(then)
    daemon.start()
    assert "firewall backend nftables (" in daemon.log().rsplit("firewall backend iptables", 1)[1]
    assert _iptables_of_ours(daemon) == []
    assert "tcp . 8084 : 10.77.0.2 . 80" in _table(daemon)
    assert _until(lambda: "hello world" in _wget(daemon, "http://127.0.0.1:8084/"))
    daemon.stop()
    daemon.args = list(IPTABLES)
    daemon.start()
    assert "table ip muslin" not in daemon.sh("nft", "list", "tables")
    assert any("8084" in line for line in daemon.sh("iptables-save").splitlines())
    assert _until(lambda: "hello world" in _wget(daemon, "http://127.0.0.1:8084/"))
    daemon.docker("rm", "-f", "web4")
    daemon.docker("network", "rm", "sw")


def test_the_default_stays_iptables_where_iptables_forward_drops(daemon_factory, make_netns) -> None:
    """An accept in table ip muslin does not outvote a DROP policy in iptables' FORWARD (dockerd leaves
    one): there the default is iptables, whose jumps go before it, and containers still get out."""
    daemon = daemon_factory()
    assert backend_in_log(daemon.log()) == "nftables"
    daemon.stop()
    daemon.sh("iptables", "-P", "FORWARD", "DROP")
    daemon.start()
    assert backend_in_log(daemon.log()) == "iptables"
    assert "would not forward: iptables' FORWARD policy is DROP" in daemon.log()
    assert "table ip muslin" not in daemon.sh("nft", "list", "tables")
    outside = _link_outside(daemon, make_netns)
    server, seen = _serve_peer_address(outside, 9002)
    out = daemon.docker("run", "--rm", "busybox", "timeout", "5", "wget", "-qO-", "http://10.99.0.2:9002/")
    server.join(10)
    assert seen == ["10.99.0.1"] and "10.99.0.1" in out.stdout


def test_an_unknown_backend_is_refused_as_dockerd_does(daemon_factory) -> None:
    with pytest.raises(RuntimeError, match='invalid firewall-backend: allowed values are "iptables" and "nftables"'):
        daemon_factory("--firewall-backend", "pf")
