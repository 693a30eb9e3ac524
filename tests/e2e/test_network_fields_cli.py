"""Network and endpoint fields as dockerd 20.10 shows and applies them, through the real docker CLI:
IPAM with IPRange, Gateway and AuxiliaryAddresses, link-local addresses, MACs asked for before start,
endpoint driver options, names with spaces, scope."""

from __future__ import annotations

import json
from urllib.parse import quote

import docker as docker_sdk
import pytest

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


def test_ipam_config_with_range_gateway_and_aux_addresses_in_inspect_and_allocation(daemon) -> None:
    daemon.docker("network", "create", "--subnet", "172.29.0.0/16", "--ip-range", "172.29.5.0/24",
                  "--gateway", "172.29.5.254", "--aux-address", "a=172.29.5.1", "--aux-address", "b=172.29.1.6",
                  "ipr1")
    (net,) = json.loads(daemon.docker("network", "inspect", "ipr1").stdout)
    assert net["IPAM"] == {"Driver": "default", "Options": None, "Config": [{
        "Subnet": "172.29.0.0/16", "IPRange": "172.29.5.0/24", "Gateway": "172.29.5.254",
        "AuxiliaryAddresses": {"a": "172.29.5.1", "b": "172.29.1.6"}}]}
    # The first address handed out is the range's first that is neither network address nor reserved.
    out = daemon.docker("run", "--rm", "--network", "ipr1", "busybox", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert "inet 172.29.5.2/16" in out
    daemon.docker("network", "rm", "ipr1")
    assert "ipr1" not in daemon.docker("network", "ls").stdout


def test_link_local_ips_go_on_the_interface_and_show_in_inspect(daemon) -> None:
    daemon.docker("run", "-d", "--name", "ll", "--link-local-ip", "169.254.8.8", "busybox", "sleep", "300")
    addrs = daemon.docker("exec", "ll", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert "inet 169.254.8.8/16" in addrs and "inet 172.17.0.2/16" in addrs
    endpoint = json.loads(daemon.docker("inspect", "-f", "{{json .NetworkSettings.Networks.bridge}}", "ll").stdout)
    assert endpoint["IPAMConfig"] == {"LinkLocalIPs": ["169.254.8.8"]}
    bad = daemon.docker("run", "--rm", "--link-local-ip", "notanip", "busybox", "true", check=False)
    assert bad.returncode != 0
    daemon.docker("rm", "-f", "ll")
    assert daemon.docker("network", "inspect", "-f", "{{len .Containers}}", "bridge").stdout.strip() == "0"


def test_mac_address_on_connect_before_start_and_driver_opts(daemon) -> None:
    daemon.docker("network", "create", "--subnet", "10.66.0.0/24", "m1")
    daemon.docker("create", "--name", "c1", "busybox", "sleep", "300")
    daemon.docker("network", "connect", "--driver-opt", "com.example.x=on", "m1", "c1")
    endpoint = json.loads(daemon.docker("inspect", "-f", "{{json .NetworkSettings.Networks.m1}}", "c1").stdout)
    assert endpoint["DriverOpts"] == {"com.example.x": "on"}
    daemon.docker("network", "disconnect", "m1", "c1")
    client = docker_sdk.DockerClient(base_url=daemon.env["DOCKER_HOST"])
    try:
        client.api.connect_container_to_network("c1", "m1", mac_address="02:42:0a:42:00:99")
    finally:
        client.close()
    networks = json.loads(daemon.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", "c1").stdout)
    assert networks["m1"]["MacAddress"] == "02:42:0a:42:00:99"
    daemon.docker("start", "c1")
    link = daemon.docker("exec", "c1", "ip", "-o", "link", "show", "eth1").stdout
    assert "02:42:0a:42:00:99" in link


def test_config_mac_address_applies_to_the_first_network_at_start(daemon) -> None:
    daemon.docker("run", "-d", "--name", "mac", "--mac-address", "02:42:ac:11:00:55", "busybox", "sleep", "300")
    assert "02:42:ac:11:00:55" in daemon.docker("exec", "mac", "ip", "-o", "link", "show", "eth0").stdout
    assert daemon.docker("inspect", "-f", "{{.NetworkSettings.MacAddress}}", "mac").stdout.strip() == "02:42:ac:11:00:55"


def test_network_name_with_a_space_and_percent_encoded_paths(daemon) -> None:
    daemon.docker("network", "create", "test 01")
    (net,) = json.loads(daemon.docker("network", "inspect", "test 01").stdout)
    assert net["Name"] == "test 01"
    client = docker_sdk.DockerClient(base_url=daemon.env["DOCKER_HOST"])
    try:
        # The SDK sends the name percent-encoded in the path (/networks/test%2001).
        assert client.api.inspect_network("test 01")["Id"] == net["Id"]
        client.api.remove_network("test 01")
        assert quote("test 01") == "test%2001"
    finally:
        client.close()
    assert "test 01" not in daemon.docker("network", "ls").stdout


def test_scope_attachable_and_ingress_as_a_docker_outside_a_swarm(daemon) -> None:
    client = docker_sdk.DockerClient(base_url=daemon.env["DOCKER_HOST"])
    try:
        api = client.api
        net_id = api.create_network("sc1", scope="local", attachable=True)["Id"]
        assert api.inspect_network("sc1", scope="local")["Scope"] == "local"
        assert api.inspect_network(net_id)["Attachable"] is True
        for scope in ("global", "swarm"):
            with pytest.raises(docker_sdk.errors.NotFound):
                api.inspect_network("sc1", scope=scope)
        with pytest.raises(docker_sdk.errors.APIError) as swarm:
            api.create_network("sc2", scope="swarm")
        assert swarm.value.status_code == 403 and "swarm is not active" in str(swarm.value)
        with pytest.raises(docker_sdk.errors.APIError) as ingress:
            api.create_network("in1", ingress=True)
        assert ingress.value.status_code == 403 and "Ingress network can only be global scope" in str(ingress.value)
        names = {n["Name"] for n in api.networks()}
        assert "sc1" in names and not names & {"sc2", "in1"}
    finally:
        client.close()
    daemon.docker("network", "rm", "sc1")


def test_user_network_aliases_gain_short_id_and_hostname_at_connect_and_start(daemon) -> None:
    daemon.docker("network", "create", "--subnet", "10.67.0.0/24", "pn3")
    daemon.docker("create", "--name", "a1", "--network", "pn3", "--network-alias", "web", "busybox", "sleep", "300")
    aliases = "{{json .NetworkSettings.Networks.pn3.Aliases}}"
    assert json.loads(daemon.docker("inspect", "-f", aliases, "a1").stdout) == ["web"]
    a1 = daemon.docker("inspect", "-f", "{{.Id}}", "a1").stdout.strip()
    daemon.docker("start", "a1")
    assert json.loads(daemon.docker("inspect", "-f", aliases, "a1").stdout) == ["web", a1[:12]]
    daemon.docker("stop", "-t", "0", "a1")
    daemon.docker("start", "a1")
    assert json.loads(daemon.docker("inspect", "-f", aliases, "a1").stdout) == ["web", a1[:12]]
    daemon.docker("run", "-d", "--name", "a2", "--network", "pn3", "--hostname", "hh", "busybox", "sleep", "300")
    a2 = daemon.docker("inspect", "-f", "{{.Id}}", "a2").stdout.strip()
    assert json.loads(daemon.docker("inspect", "-f", aliases, "a2").stdout) == [a2[:12], "hh"]
    daemon.docker("create", "--name", "a3", "busybox", "sleep", "300")
    daemon.docker("network", "connect", "pn3", "a3")
    a3 = daemon.docker("inspect", "-f", "{{.Id}}", "a3").stdout.strip()
    assert json.loads(daemon.docker("inspect", "-f", aliases, "a3").stdout) == [a3[:12]]
