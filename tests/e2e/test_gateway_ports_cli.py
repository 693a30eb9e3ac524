"""A published port goes to the container's gateway endpoint and follows it on network connect and
disconnect, as dockerd moves a sandbox's external connectivity (real docker CLI, a client in another
namespace)."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from muslin.kernel import netns

from .test_containers_cli import HTTPD, _link_outside

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


def _from_outside(outside: str, port: int) -> str:
    return subprocess.run(["nsenter", f"--net={netns.path_for(outside)}", "timeout", "5", "busybox", "wget",
                           "-qO-", f"http://10.99.0.1:{port}/"], capture_output=True, text=True).stdout


def _answers(outside: str, port: int) -> bool:
    deadline = time.monotonic() + 10
    while "hello world" not in _from_outside(outside, port) and time.monotonic() < deadline:
        time.sleep(0.1)
    return "hello world" in _from_outside(outside, port)


def _dnat_targets(daemon, port: int) -> list[str]:
    return [f.to for f in daemon.firewall.forwards() if f.host_port == port]


def _default_route(daemon, container: str) -> str:
    routes = daemon.docker("exec", container, "ip", "route").stdout.splitlines()
    return next((r for r in routes if r.startswith("default")), "")


def _host_ports(daemon, container: str) -> dict[str, str]:
    (doc,) = json.loads(daemon.docker("inspect", container).stdout)
    return {key: b[0]["HostPort"] for key, b in (doc["NetworkSettings"]["Ports"] or {}).items() if b}


def test_published_ports_follow_the_gateway_endpoint_on_connect_and_disconnect(daemon, make_netns) -> None:
    outside = _link_outside(daemon, make_netns)
    daemon.docker("network", "create", "--subnet", "10.91.0.0/24", "zzz")
    daemon.docker("network", "create", "--subnet", "10.92.0.0/24", "aaa")
    daemon.docker("network", "create", "--internal", "--subnet", "10.93.0.0/24", "iii")
    daemon.docker("run", "-d", "--name", "web", "--network", "zzz", "-p", "8081:80", "-p", "80",
                  "busybox", "sh", "-c", HTTPD)
    ephemeral = _host_ports(daemon, "web")
    assert _dnat_targets(daemon, 8081) == ["10.91.0.2:80"] and _answers(outside, 8081)

    # aaa sorts before zzz: its endpoint becomes the gateway, and the ports (host ports unchanged) and
    # the default route go with it at once.
    daemon.docker("network", "connect", "aaa", "web")
    assert _dnat_targets(daemon, 8081) == ["10.92.0.2:80"]
    assert _default_route(daemon, "web").startswith("default via 10.92.0.1 ")
    assert _host_ports(daemon, "web") == ephemeral
    assert _answers(outside, 8081) and _answers(outside, int(ephemeral["80/tcp"]))

    daemon.docker("network", "disconnect", "aaa", "web")
    assert _dnat_targets(daemon, 8081) == ["10.91.0.2:80"]
    assert _default_route(daemon, "web").startswith("default via 10.91.0.1 ")
    assert _answers(outside, 8081)

    # An internal network never gives the gateway, whatever its name.
    daemon.docker("network", "connect", "iii", "web")
    assert _dnat_targets(daemon, 8081) == ["10.91.0.2:80"] and _answers(outside, 8081)
    # Left on the internal network alone: no gateway, nothing published, no default route.
    daemon.docker("network", "disconnect", "zzz", "web")
    assert _dnat_targets(daemon, 8081) == [] and _default_route(daemon, "web") == ""
    daemon.docker("network", "connect", "zzz", "web")
    assert _dnat_targets(daemon, 8081) == ["10.91.0.2:80"] and _answers(outside, 8081)

    # Created on the internal network and connected to a normal one before it starts (what
    # docker-compose does for a service on both): the port answers through the normal one.
    daemon.docker("create", "--name", "inner", "--network", "iii", "-p", "8084:80", "busybox", "sh", "-c", HTTPD)
    daemon.docker("network", "connect", "zzz", "inner")
    daemon.docker("start", "inner")
    assert _dnat_targets(daemon, 8084) == ["10.91.0.3:80"] and _answers(outside, 8084)
    assert _default_route(daemon, "inner").startswith("default via 10.91.0.1 ")

    # A default-bridge container connected to "aaa" ("aaa" < "bridge"): the gateway moves there too.
    daemon.docker("run", "-d", "--name", "onbridge", "-p", "8085:80", "busybox", "sh", "-c", HTTPD)
    daemon.docker("network", "connect", "aaa", "onbridge")
    assert _dnat_targets(daemon, 8085) == ["10.92.0.2:80"] and _answers(outside, 8085)
    # A gateway priority outranks the name order (--gw-priority, EndpointSettings.GwPriority).
    daemon.docker("network", "connect", "--gw-priority", "5", "zzz", "onbridge")
    assert _dnat_targets(daemon, 8085) == ["10.91.0.4:80"] and _answers(outside, 8085)
    assert _default_route(daemon, "onbridge").startswith("default via 10.91.0.1 ")
    (doc,) = json.loads(daemon.docker("inspect", "onbridge").stdout)
    assert doc["NetworkSettings"]["Networks"]["zzz"]["GwPriority"] == 5

    daemon.docker("rm", "-f", "web", "inner", "onbridge")
    assert daemon.firewall.forwards() == [] and daemon.firewall.hairpins() == set()
    listing = daemon.firewall.listing()  # nothing names the ports any more (bridge names hold digits too)
    assert not [port for port in ("8081", "8084", "8085") if re.search(rf"\b{port}\b", listing)]
    assert "veth" not in daemon.sh("ip", "link")
    daemon.docker("network", "rm", "zzz", "aaa", "iii")
    assert all(f"10.9{n}.0." not in daemon.firewall.listing() for n in (1, 2, 3))


def test_a_connect_whose_ports_clash_on_the_new_gateway_is_refused_and_undone(daemon) -> None:
    """web's port 9000 is bound to 127.0.0.1 on its network (host_binding_ipv4); moving it to a network
    without that option binds it everywhere, which clashes with another container's 127.0.0.2:9000:
    the connect fails with dockerd's message and leaves web as it was. (dockerd 20.10 refuses it too, but
    leaves the new interface and default route in the container and its port forward gone.)"""
    daemon.docker("network", "create", "--subnet", "10.91.0.0/24",
                  "-o", "com.docker.network.bridge.host_binding_ipv4=127.0.0.1", "zzz")
    daemon.docker("network", "create", "--subnet", "10.92.0.0/24", "aaa")
    daemon.docker("run", "-d", "--name", "web", "--network", "zzz", "-p", "9000:80", "busybox", "sleep", "300")
    daemon.docker("run", "-d", "--name", "other", "-p", "127.0.0.2:9000:80", "busybox", "sleep", "300")
    links_before = daemon.sh("ip", "-o", "link").count("veth")
    refused = daemon.docker("network", "connect", "aaa", "web", check=False)
    assert refused.returncode != 0 and "port is already allocated" in refused.stderr
    (doc,) = json.loads(daemon.docker("inspect", "web").stdout)
    assert set(doc["NetworkSettings"]["Networks"]) == {"zzz"}
    assert doc["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9000"}]}
    assert sorted(_dnat_targets(daemon, 9000)) == ["10.91.0.2:80", "172.17.0.2:80"]
    assert _default_route(daemon, "web").startswith("default via 10.91.0.1 ")
    assert daemon.sh("ip", "-o", "link").count("veth") == links_before
    assert daemon.docker("network", "inspect", "-f", "{{len .Containers}}", "aaa").stdout.strip() == "0"
    daemon.docker("rm", "-f", "web", "other")
    daemon.docker("network", "rm", "zzz", "aaa")
