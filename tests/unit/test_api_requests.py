"""The API's one validating step: Docker's JSON and query strings to the engine's typed requests."""

from __future__ import annotations

import json
import signal
from ipaddress import IPv4Address
from typing import Any

import pytest

from muslin.api import requests
from muslin.api.http import HTTPError, Request
from muslin.engine.link_text import LinkRef
from muslin.engine.ports import PortBinding
from muslin.engine.requests import EndpointRequest
from muslin.engine.restarts import RestartPolicy


def request(body: Any = None, **query: str) -> Request:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return Request(method="POST", path="/", query={k: [v] for k, v in query.items()}, headers={}, body=raw,
                   api_version=None)


def refused(fn, *args: Any) -> str:  # noqa: ANN001
    with pytest.raises(HTTPError) as info:
        fn(*args)
    assert info.value.status == 400
    return info.value.message


def test_container_create_as_the_cli_sends_it() -> None:
    body = {"Image": "busybox", "Cmd": ["sh", "-c", "httpd"], "Env": ["A=1"], "Tty": True, "OpenStdin": True,
            "ExposedPorts": {"80": {}, "53/UDP": {}}, "StopSignal": "SIGINT", "StopTimeout": 3,
            "HostConfig": {"NetworkMode": "mybr0", "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8081"}],
                                                                    "53/udp": None},
                           "Dns": ["10.0.0.53"], "DnsSearch": ["example.org"], "ExtraHosts": ["gw:host-gateway"],
                           "CapAdd": "NET_ADMIN", "Sysctls": {"net.ipv4.ip_forward": "1"}, "ConsoleSize": [24, 80]},
            "NetworkingConfig": {"EndpointsConfig": {"mybr0": {"IPAMConfig": {"IPv4Address": "10.1.0.5"},
                                                               "MacAddress": "02:42:0A:01:00:05", "Aliases": ["web"]},
                                                     "other": None}}}
    req = requests.container_create(request(body, name="web1"))
    assert req.name == "web1" and req.image == "busybox" and req.cmd == ("sh", "-c", "httpd")
    assert req.entrypoint is None and req.tty and req.open_stdin
    assert req.exposed_ports == ("80/tcp", "53/udp")
    assert req.config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert req.port_bindings == (PortBinding(80, "tcp", "", 8081), PortBinding(53, "udp", "", 0))
    assert req.endpoints["mybr0"] == EndpointRequest(IPv4Address("10.1.0.5"), "02:42:0a:01:00:05", ("web",))
    assert req.endpoints["other"] == EndpointRequest()
    assert req.cap_add == ("NET_ADMIN",) and req.console_size == (24, 80)
    assert req.stop_signal == signal.SIGINT and req.stop_timeout == 3
    assert req.network_mode == "mybr0" and req.extra_hosts == ("gw:host-gateway",)
    links = requests.container_create(request({"Image": "b", "HostConfig": {"Links": ["db:data", "/web:/x/cache"]}})).links
    assert links == (LinkRef("db", "data"), LinkRef("web", "cache"))


@pytest.mark.parametrize("body, message", [
    ([], "cannot unmarshal array into Go value of type ContainerConfigWrapper"),
    ({"Image": "busybox", "Tty": "yes"}, "ContainerConfigWrapper.Tty of type bool"),
    ({"Image": "busybox", "Env": "x"}, "ContainerConfigWrapper.Env of type []string"),
    ({"Image": "busybox", "Cmd": 5}, "ContainerConfigWrapper.Cmd"),
    ({"Image": "busybox", "Env": ["=x"]}, "invalid environment variable: =x"),
    ({"Image": "busybox", "ExposedPorts": {"abc/tcp": {}}}, 'invalid port specification: "abc"'),
    ({"Image": "busybox", "ExposedPorts": {"70000/tcp": {}}}, 'invalid port specification: "70000"'),
    ({"Image": "busybox", "ExposedPorts": {"80/xyz": {}}}, "invalid proto: xyz"),
    ({"Image": "busybox", "ExposedPorts": ["80"]}, "ExposedPorts"),
    ({"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "abc"}]}}}, "invalid port specification"),
    ({"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "70000"}]}}}, "invalid port specification"),
    ({"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "x.y"}]}}}, "invalid host IP"),
    ({"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": "x"}}}, "PortBindings"),
    ({"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "8000-8010"}]}}},
     "host port ranges are not supported yet: 8000-8010"),
    ({"Image": "busybox", "MacAddress": "zz:zz"}, "zz:zz is not a valid mac address"),
    ({"Image": "busybox", "HostConfig": {"Dns": ["abc"]}}, "IP address is not correctly formatted: abc"),
    ({"Image": "busybox", "HostConfig": {"Dns": "1.1.1.1"}}, "HostConfig.Dns of type []string"),
    ({"Image": "busybox", "HostConfig": {"DnsSearch": ["bad domain"]}}, "bad domain is not a valid domain"),
    ({"Image": "busybox", "HostConfig": {"ExtraHosts": ["bad"]}}, 'bad format for add-host: "bad"'),
    ({"Image": "busybox", "HostConfig": {"ExtraHosts": ["h:notip"]}}, 'invalid IP address in add-host: "notip"'),
    ({"Image": "busybox", "HostConfig": {"Sysctls": {"a": 5}}}, "Sysctls of type string"),
    ({"Image": "busybox", "HostConfig": {"CapAdd": 5}}, "CapAdd"),
    ({"Image": "busybox", "HostConfig": {"Links": ["a:b:c"]}}, "bad format for links: a:b:c"),
    ({"Image": "busybox", "HostConfig": {"Links": [""]}}, "empty string specified for links"),
    ({"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"n": {"Links": ["x:"]}}}}, "bad format for links: x:"),
    ({"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": {"LinkLocalIPs": ["10.1.1.1"]}}}}},
     "invalid link local IP address: 10.1.1.1"),
    ({"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": {"LinkLocalIPs": ["no"]}}}}},
     "invalid link local IP address: no"),
    ({"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"bridge": {"DriverOpts": {"a": 1}}}}}, "DriverOpts"),
    ({"Image": "busybox", "HostConfig": {"ConsoleSize": [1]}}, "ConsoleSize"),
    ({"Image": "busybox", "StopSignal": "FOO"}, "Invalid signal: FOO"),
    ({"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": {"IPv4Address": "bad"}}}}},
     "invalid IPv4 address: bad"),
    ({"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"bridge": 5}}}, "EndpointSettings"),
    ({"Image": "busybox", "Labels": {"a": 5}}, "Labels of type string"),
    ({"Cmd": ["true"]}, "No image specified"),
])
def test_container_create_refuses_bad_fields(body: Any, message: str) -> None:
    assert message in refused(requests.container_create, request(body))


def test_an_ipv6_only_port_binding_is_dropped() -> None:
    # The CLI sends one for "[::]:8080:80"; it has no effect on an IPv4-only engine.
    body = {"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "::", "HostPort": "8080"},
                                                                           {"HostIp": "127.0.0.1", "HostPort": ""}]}}}
    assert requests.container_create(request(body)).port_bindings == (PortBinding(80, "tcp", "127.0.0.1", 0),)


def test_container_names_follow_dockers_pattern() -> None:
    assert "Invalid container name (test 01)" in refused(requests.container_create, request({"Image": "b"}, name="test 01"))
    assert "Invalid container name (-x)" in refused(requests.container_create, request({"Image": "b"}, name="-x"))
    assert requests.name("/web.1_a-b") == "web.1_a-b"


def test_body_that_is_not_json_is_400() -> None:
    assert "invalid JSON" in refused(requests.container_create, request(b"notjson"))
    assert "invalid JSON" in refused(requests.container_create, request(b"[" * 100000))


def test_signals_by_name_or_number() -> None:
    assert requests.signal("KILL") == requests.signal("SIGKILL") == requests.signal("9") == 9
    assert requests.signal("sigusr1") == signal.SIGUSR1
    for bad in ("FOO", "999", "0", "SIG_DFL", "-1"):
        assert f"Invalid signal: {bad}" == refused(requests.signal, bad)


def test_network_create_and_connect() -> None:
    req = requests.network_create(request({"Name": "mybr0", "Driver": "bridge", "IPAM": {"Config": [
        {"Subnet": "192.168.100.0/24", "Gateway": "192.168.100.1", "AuxiliaryAddresses": {"r": "192.168.100.9"}}]},
        "Options": {"com.docker.network.bridge.name": "docker1"}, "Internal": True}))
    assert req.name == "mybr0" and req.internal and req.ipam_pools[0].aux_addresses == {"r": "192.168.100.9"}
    # dockerd takes any name for a network.
    for name in ("test 01", "a/b", "x%y", "ünï", "-lead"):
        assert requests.network_create(request({"Name": name})).name == name
    assert requests.network_create(request({"Name": "n", "Scope": "swarm"})).scope == "swarm"
    assert "Driver of type string" in refused(requests.network_create, request({"Name": "n1", "Driver": 5}))
    assert "Options" in refused(requests.network_create, request({"Name": "n1", "Options": {"a": 1}}))
    container, settings = requests.network_connect(request({"Container": "c1", "EndpointConfig": {
        "Aliases": ["x"], "Links": ["up:bar"], "DriverOpts": {"o": "on"}, "IPAMConfig": {"LinkLocalIPs": ["169.254.8.8"]}}}))
    assert container == "c1" and settings.aliases == ("x",) and settings.links == ("up:bar",)
    assert settings.driver_opts == {"o": "on"} and settings.link_local_ips == (IPv4Address("169.254.8.8"),)
    assert "NetworkConnect" in refused(requests.network_connect, request([]))
    assert "no container" in refused(requests.network_disconnect, request({"Force": True}))


def test_exec_create_fields() -> None:
    req = requests.exec_create(request({"Cmd": ["ls", "/"], "Env": ["A=1"], "WorkingDir": "/tmp", "Tty": True}))
    assert req.cmd == ("ls", "/") and req.env == ("A=1",) and req.working_dir == "/tmp" and req.tty
    assert "ExecConfig.Cmd of type []string" in refused(requests.exec_create, request({"Cmd": "ls"}))
    assert "No exec command specified" == refused(requests.exec_create, request({"Cmd": []}))
    assert "ExecConfig.Env" in refused(requests.exec_create, request({"Cmd": ["ls"], "Env": "x"}))
    assert "invalid environment variable" in refused(requests.exec_create, request({"Cmd": ["ls"], "Env": ["=x"]}))
    assert "absolute path" in refused(requests.exec_create, request({"Cmd": ["ls"], "WorkingDir": "rel"}))
    assert "WorkingDir of type string" in refused(requests.exec_create, request({"Cmd": ["ls"], "WorkingDir": 5}))


def test_query_parameters() -> None:
    assert requests.query_int(request(limit="3"), "limit") == 3
    assert requests.query_int(request(), "limit", 0) == 0
    assert 'parsing "abc"' in refused(requests.query_int, request(limit="abc"), "limit")
    assert requests.query_seconds(request(since="1700000000.5"), "since") == 1700000000.5
    assert "invalid syntax" in refused(requests.query_seconds, request(since="abc"), "since")
    assert "invalid syntax" in refused(requests.query_seconds, request(since="nan"), "since")


def test_filters_as_docker_sends_them() -> None:
    allowed = {"label", "status"}
    assert requests.filters(request(filters='{"label":["a=b"],"status":{"running":true}}'), allowed) == \
        {"label": ["a=b"], "status": ["running"]}
    assert requests.filters(request(), allowed) == {}
    assert "invalid filter" in refused(requests.filters, request(filters="notjson"), allowed)
    assert "invalid filter" in refused(requests.filters, request(filters='["x"]'), allowed)
    assert "invalid filter 'bogus'" in refused(requests.filters, request(filters='{"bogus":["x"]}'), allowed)
    assert "invalid filter" in refused(requests.filters, request(filters='{"label":"x"}'), allowed)
    assert "invalid filter" in refused(requests.filters, request(filters='{"label":[1]}'), allowed)


def test_container_update_carries_a_typed_restart_policy() -> None:
    update = requests.container_update(request({"Memory": 1 << 26, "RestartPolicy": {"Name": "on-failure",
                                                                                    "MaximumRetryCount": 3}}))
    assert update.restart_policy == RestartPolicy("on-failure", 3)
    assert update.resources == {"Memory": 1 << 26}
    assert requests.container_update(request({"Memory": 1 << 26})).restart_policy is None
    assert "maximum retry count cannot be used" in refused(
        requests.container_update, request({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 2}}))


@pytest.mark.parametrize("storage, message", [
    ({"size": "120G"}, "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"),
    ({"Size": "1G", "foo": "1"}, "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"),
    ({"Foo": "1"}, "Unknown option foo"),
    ("size=1G", "container.HostConfig.StorageOpt of type map[string]string"),
])
def test_storage_opt_refused_as_overlay2_without_project_quotas(storage: Any, message: str) -> None:
    body = {"Image": "busybox", "HostConfig": {"StorageOpt": storage}}
    assert message in refused(requests.container_create, request(body))


def test_empty_storage_opt_accepted() -> None:
    req = requests.container_create(request({"Image": "busybox", "HostConfig": {"StorageOpt": {}}}))
    assert req.host_config["StorageOpt"] == {}
