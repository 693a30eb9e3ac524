"""A muslind start repairs what changed while it was away, and only that: a container whose process
died gives back its endpoint and ports, a veth someone deleted is wired again, flushed rules come back."""

from __future__ import annotations

import json
import os
import signal
import time

from muslin.kernel import netns, nfhandles

from ..firewall_view import Forward

HTTPD = "mkdir -p /www && echo hello world > /www/index.html && exec httpd -f -p 80 -h /www"
BROKEN = "was broken while muslind was away"


def _inspect(daemon, name: str) -> dict:
    (found,) = json.loads(daemon.docker("inspect", name).stdout)
    return found


def _host_veth(container: dict, network: str) -> str:
    return "veth" + container["NetworkSettings"]["Networks"][network]["EndpointID"][:7]


def _ruleset_generation(daemon) -> int | None:
    """The nf_tables generation of the daemon's namespace: every committed transaction bumps it."""
    deleter = nfhandles.HandleDeleter()
    try:
        with netns.entered(daemon.ns):
            return deleter.generation()
    finally:
        deleter.close()


def _wget(daemon, url: str) -> str:
    deadline = time.monotonic() + 10
    out = ""
    while "hello world" not in out and time.monotonic() < deadline:
        out = daemon.sh("timeout", "5", "busybox", "wget", "-qO-", url, check=False)
    return out


def test_a_start_repairs_what_changed_while_muslind_was_away(daemon) -> None:
    daemon.docker("network", "create", "--subnet", "10.61.0.0/24", "rep")
    bridge = "br-" + json.loads(daemon.docker("network", "inspect", "rep").stdout)[0]["Id"][:12]
    daemon.docker("run", "-d", "--name", "kept", "--network", "rep", "-p", "8093:80", "busybox", "sh", "-c", HTTPD)
    daemon.docker("run", "-d", "--name", "dies", "--network", "rep", "-p", "8094:80", "busybox", "sleep", "1000")
    kept, dies = _inspect(daemon, "kept"), _inspect(daemon, "dies")
    kept_veth, dies_veth = _host_veth(kept, "rep"), _host_veth(dies, "rep")
    assert "hello world" in _wget(daemon, "http://127.0.0.1:8093/")

    # A restart where nothing changed finds nothing to repair, and writes nothing: no rule committed,
    # no link made or removed.
    links, generation = daemon.sh("ip", "-o", "link"), _ruleset_generation(daemon)
    daemon.stop()
    daemon.start()
    assert BROKEN not in daemon.log()
    assert _ruleset_generation(daemon) == generation
    assert daemon.sh("ip", "-o", "link") == links

    daemon.stop()
    os.kill(dies["State"]["Pid"], signal.SIGKILL)  # what an OOM kill or a reboot's shutdown does
    daemon.sh("ip", "link", "del", kept_veth)  # takes the container's eth0 (the pair's other end) along
    daemon.firewall.remove_forwards()  # every port forward
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{dies['State']['Pid']}") and time.monotonic() < deadline:
        time.sleep(0.05)
    daemon.start()

    # The dead container is stopped, with no endpoint, veth or forward left.
    assert _inspect(daemon, "dies")["State"]["Status"] == "exited"
    forwards = daemon.firewall.forwards()
    assert not [f for f in forwards if f.host_port == 8094] and "8094" not in daemon.firewall.listing()
    assert dies_veth not in daemon.sh("ip", "link")
    # The live one is wired again as it was: same address and MAC, on its bridge, routed, forwarded.
    assert Forward("tcp", 8093, f"{kept['NetworkSettings']['Networks']['rep']['IPAddress']}:80") in forwards
    assert f"master {bridge}" in daemon.sh("ip", "-o", "link", "show", kept_veth)
    inside = daemon.docker("exec", "kept", "ip", "-o", "addr", "show", "eth0").stdout
    assert "10.61.0.2/24" in inside
    assert kept["NetworkSettings"]["Networks"]["rep"]["MacAddress"] in daemon.docker(
        "exec", "kept", "ip", "-o", "link", "show", "eth0").stdout
    assert "default via 10.61.0.1" in daemon.docker("exec", "kept", "ip", "route").stdout
    assert "hello world" in _wget(daemon, "http://127.0.0.1:8093/")
    assert daemon.log().count(BROKEN) == 1


def test_a_bridge_deleted_while_muslind_was_away_comes_back_with_its_ports(daemon) -> None:
    """A deleted bridge takes its ports off the veths; the restored bridge gets them back."""
    daemon.docker("network", "create", "--subnet", "10.62.0.0/24", "rebr")
    bridge = "br-" + json.loads(daemon.docker("network", "inspect", "rebr").stdout)[0]["Id"][:12]
    daemon.docker("run", "-d", "--name", "web", "--network", "rebr", "-p", "8095:80", "busybox", "sh", "-c", HTTPD)
    veth = _host_veth(_inspect(daemon, "web"), "rebr")
    daemon.stop()
    daemon.sh("ip", "link", "del", bridge)
    assert "master" not in daemon.sh("ip", "-o", "link", "show", veth)
    daemon.start()
    assert f"master {bridge}" in daemon.sh("ip", "-o", "link", "show", veth)
    assert "inet 10.62.0.1/24" in daemon.sh("ip", "addr", "show", bridge)
    assert "hello world" in _wget(daemon, "http://127.0.0.1:8095/")
    assert daemon.log().count(BROKEN) == 1
