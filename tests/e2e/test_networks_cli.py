"""§4.1 and §4.2.1 of the article through the real docker CLI, checked against the kernel."""

from __future__ import annotations

import json
import subprocess
import time

import docker as docker_sdk
import pytest

from muslin.kernel import netns

from ..firewall_view import NFTABLES
from .conftest import MUSLIND

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


def test_predefined_networks_and_inspect(daemon) -> None:
    out = daemon.docker("network", "ls").stdout.splitlines()
    assert out[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    rows = {line.split()[1]: line.split()[2:] for line in out[1:]}
    assert rows == {"bridge": ["bridge", "local"], "host": ["host", "local"], "none": ["null", "local"]}
    (bridge,) = json.loads(daemon.docker("network", "inspect", "bridge").stdout)
    assert list(bridge)[:5] == ["Name", "Id", "Created", "Scope", "Driver"]
    assert bridge["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]
    assert bridge["Options"]["com.docker.network.bridge.name"] == "muslin0"
    assert bridge["Options"]["com.docker.network.driver.mtu"] == "1500"
    assert "inet 172.17.0.1/16" in daemon.sh("ip", "addr", "show", "muslin0")
    assert "Network: bridge host macvlan null" in daemon.docker("info").stdout


def test_article_mybr0_create_and_remove_leaves_nothing(daemon) -> None:
    firewall = daemon.firewall
    before = firewall.snapshot()
    daemon.docker("network", "create", "-d", "bridge", "--subnet", "192.168.100.0/24", "--gateway",
                  "192.168.100.1", "-o", "com.docker.network.bridge.name=docker1", "mybr0")
    addr = daemon.sh("ip", "addr", "show", "docker1")
    assert "inet 192.168.100.1/24" in addr and "UP" in addr
    assert firewall.masqueraded()["192.168.100.0/24"] == "docker1"
    assert "docker1" in firewall.isolated() and firewall.icc()["docker1"] is True
    assert daemon.sh("cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"
    assert "mybr0" in daemon.docker("network", "ls").stdout
    (net,) = json.loads(daemon.docker("network", "inspect", "mybr0").stdout)
    assert net["IPAM"]["Config"] == [{"Subnet": "192.168.100.0/24", "Gateway": "192.168.100.1"}]
    assert net["Options"] == {"com.docker.network.bridge.name": "docker1"}
    daemon.docker("network", "rm", "mybr0")
    assert "docker1" not in daemon.sh("ip", "link")
    assert "docker1" not in firewall.listing() and "192.168.100" not in firewall.listing()
    # Exactly the rules we found before are left (the default bridge's).
    assert firewall.snapshot() == before


def test_bad_input_is_refused_and_changes_nothing(daemon) -> None:
    daemon.docker("network", "create", "--subnet", "10.30.0.0/24", "a")
    links_before = daemon.sh("ip", "-o", "link")
    rules_before = daemon.firewall.snapshot()
    cases = [
        (["network", "create", "a"], "already exists"),
        (["network", "create", "--subnet", "10.30.0.0/25", "b"], "overlaps"),
        (["network", "create", "--subnet", "10.31.0.0/24", "--gateway", "10.32.0.1", "b"], "gateway"),
        (["network", "create", "--subnet", "10.31.0.0/33", "b"], "invalid"),
        (["network", "create", "-d", "nosuchdriver", "b"], "not found"),
        (["network", "create", "-o", "com.docker.network.bridge.enable_icc=maybe", "b"], "enable_icc"),
        (["network", "create", "-o", "com.docker.network.driver.mtu=abc", "b"], "mtu"),
        (["network", "create", "-o", "com.docker.network.bridge.name=lo", "b"], "already taken"),
        (["network", "rm", "bridge"], "pre-defined"),
        (["network", "rm", "nosuchnet"], "not found"),
    ]
    for args, message in cases:
        proc = daemon.docker(*args, check=False)
        assert proc.returncode != 0, args
        assert message in proc.stderr, (args, proc.stderr)
    assert daemon.sh("ip", "-o", "link") == links_before
    assert daemon.firewall.snapshot() == rules_before
    names = [line.split()[1] for line in daemon.docker("network", "ls").stdout.splitlines()[1:]]
    assert sorted(names) == ["a", "bridge", "host", "none"]


def test_default_pools_skip_used_subnets_and_routes(daemon) -> None:
    daemon.sh("ip", "link", "add", "vt0", "type", "veth", "peer", "name", "vt1")
    daemon.sh("ip", "addr", "add", "172.18.5.1/24", "dev", "vt0")
    daemon.docker("network", "create", "auto1")
    (net,) = json.loads(daemon.docker("network", "inspect", "auto1").stdout)
    assert net["IPAM"]["Config"][0]["Subnet"] == "172.19.0.0/16"
    assert net["IPAM"]["Config"][0]["Gateway"] == "172.19.0.1"


def test_internal_and_icc_options_program_isolation(daemon) -> None:
    daemon.docker("network", "create", "--internal", "--subnet", "10.40.0.0/24",
                  "-o", "com.docker.network.bridge.enable_icc=false",
                  "-o", "com.docker.network.bridge.name=brint", "--label", "env=test", "isolated")
    firewall = daemon.firewall
    assert firewall.internal()["brint"] == "10.40.0.0/24"
    assert firewall.icc()["brint"] is False
    assert "10.40.0.0/24" not in firewall.masqueraded() and "brint" not in firewall.isolated()
    (net,) = json.loads(daemon.docker("network", "inspect", "isolated").stdout)
    assert net["Internal"] is True and net["Labels"] == {"env": "test"}
    listed = daemon.docker("network", "ls", "--filter", "label=env=test", "-q").stdout.split()
    assert listed == [net["Id"][:12]]
    assert daemon.docker("network", "prune", "-f").returncode == 0
    assert "brint" not in daemon.sh("ip", "link")


def test_restart_keeps_ids_and_reconciles_kernel(daemon) -> None:
    daemon.docker("network", "create", "--subnet", "10.50.0.0/24", "-o",
                  "com.docker.network.bridge.name=brkeep", "keep")
    ids = daemon.docker("network", "ls", "-q", "--no-trunc").stdout.split()
    daemon.stop()
    # Simulate what a crash can leave: the bridge and one rule gone.
    daemon.sh("ip", "link", "del", "brkeep")
    firewall = daemon.firewall
    firewall.remove_masquerade("10.50.0.0/24", "brkeep")
    assert "10.50.0.0/24" not in firewall.masqueraded()
    # And what only a crash in the middle of a create can leave: a bridge of ours that no network owns,
    # with a rule of it in the firewall.
    daemon.sh("ip", "link", "add", "br-0123456789ab", "type", "bridge")
    if firewall.backend == NFTABLES:
        daemon.sh("nft", "add", "element", "ip", "muslin", "bridges", '{ "br-0123456789ab" }')
        assert "br-0123456789ab" in firewall.isolated()
    else:
        daemon.sh("iptables", "-A", "FORWARD", "-i", "br-0123456789ab", "-j", "ACCEPT")
    daemon.start()
    assert daemon.docker("network", "ls", "-q", "--no-trunc").stdout.split() == ids
    assert "br-0123456789ab" not in firewall.listing()
    deadline = time.monotonic() + 5
    while "br-0123456789ab" in daemon.sh("ip", "link") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "br-0123456789ab" not in daemon.sh("ip", "link")
    assert "inet 10.50.0.1/24" in daemon.sh("ip", "addr", "show", "brkeep")
    assert firewall.masqueraded()["10.50.0.0/24"] == "brkeep"


def test_rules_of_the_layout_before_muslin_forward_go_at_start(iptables_daemon) -> None:
    """muslind once put its forwarding rules straight into FORWARD; a restart on such a ruleset removes
    them (they would outlive their networks) and keeps the rest. (The iptables backend's own layout;
    the nftables backend removes them too, with every other rule of that backend:
    test_nft_firewall.py's test of remove_iptables_backend.)"""
    daemon = iptables_daemon
    daemon.stop()
    legacy = [["-A", "FORWARD", "-j", "MUSLIN-ISOLATION-STAGE-1"],
              ["-A", "FORWARD", "-o", "muslin0", "-j", "MUSLIN"],
              ["-A", "FORWARD", "-i", "muslin0", "-o", "muslin0", "-j", "ACCEPT"]]
    for rule in legacy:
        daemon.sh("iptables", *rule)
    daemon.sh("iptables", "-A", "FORWARD", "-s", "10.9.9.9/32", "-j", "DROP")  # the user's, stays
    daemon.start()
    forward = [r for r in daemon.sh("iptables", "-S", "FORWARD").splitlines() if r.startswith("-A")]
    assert forward == ["-A FORWARD -j MUSLIN-USER", "-A FORWARD -j MUSLIN-FORWARD",
                       "-A FORWARD -s 10.9.9.9/32 -j DROP"]
    assert "-A MUSLIN-FORWARD -i muslin0 -o muslin0 -j ACCEPT" in daemon.sh("iptables", "-S", "MUSLIN-FORWARD")


def test_bip_mtu_and_ip_masq_flags_as_dockerd(daemon_factory) -> None:
    d = daemon_factory("--bip=172.21.31.1/24", "--ip-masq=false", "--mtu=1472")
    (net,) = json.loads(d.docker("network", "inspect", "bridge").stdout)
    assert net["IPAM"]["Config"] == [{"Subnet": "172.21.31.0/24", "Gateway": "172.21.31.1"}]
    link = d.sh("ip", "addr", "show", "muslin0")
    assert "inet 172.21.31.1/24" in link and "mtu 1472" in link
    assert d.firewall.masqueraded() == {}
    assert "muslin0" in d.firewall.isolated()  # the firewall is there, without the masquerade


def test_sdk_drives_networks(daemon) -> None:
    client = docker_sdk.DockerClient(base_url=f"unix://{daemon.sock}")
    try:
        assert client.ping()
        ipam = docker_sdk.types.IPAMConfig(pool_configs=[docker_sdk.types.IPAMPool(subnet="10.55.0.0/24", gateway="10.55.0.1")])
        net = client.networks.create("sdknet", driver="bridge", ipam=ipam,
                                     options={"com.docker.network.bridge.name": "br-sdk"})
        assert net.attrs["IPAM"]["Config"][0]["Subnet"] == "10.55.0.0/24"
        assert {n.name for n in client.networks.list()} == {"bridge", "host", "none", "sdknet"}
        assert "inet 10.55.0.1/24" in daemon.sh("ip", "addr", "show", "br-sdk")
        net.remove()
        assert "br-sdk" not in daemon.sh("ip", "link")
    finally:
        client.close()


def test_flannel_subnet_file_sets_the_default_bridge(daemon_factory, tmp_path) -> None:
    env = tmp_path / "subnet.env"
    env.write_text("FLANNEL_NETWORK=172.21.0.0/16\nFLANNEL_SUBNET=172.21.55.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n")
    d = daemon_factory(f"--flannel-subnet-file={env}")
    (net,) = json.loads(d.docker("network", "inspect", "bridge").stdout)
    assert net["IPAM"]["Config"] == [{"Subnet": "172.21.55.0/24", "Gateway": "172.21.55.1"}]
    assert net["Options"]["com.docker.network.driver.mtu"] == "1472"
    # flannel masquerades for the overlay itself (FLANNEL_IPMASQ=true), so the engine does not.
    assert net["Options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
    out = d.docker("run", "--rm", "busybox", "ifconfig", "eth0").stdout
    assert "inet addr:172.21.55.2" in out and "MTU:1472" in out and "HWaddr 02:42:AC:15:37:02" in out


def test_daemon_json_sets_the_flags_and_a_conflict_stops_the_start(daemon_factory, tmp_path) -> None:
    """dockerd's daemon.json keys through --config-file; a key also given as a flag: no start, nothing made."""
    config = tmp_path / "daemon.json"
    config.write_text(json.dumps({"bip": "172.21.32.1/24", "ip-masq": False, "mtu": 1472, "debug": True}))
    d = daemon_factory("--config-file", str(config))
    (net,) = json.loads(d.docker("network", "inspect", "bridge").stdout)
    assert net["IPAM"]["Config"] == [{"Subnet": "172.21.32.0/24", "Gateway": "172.21.32.1"}]
    link = d.sh("ip", "addr", "show", "muslin0")
    assert "inet 172.21.32.1/24" in link and "mtu 1472" in link
    assert " DEBUG " in d.log()

    data_root = tmp_path / "refused-data"
    config.write_text(json.dumps({"mtu": 1400, "data-root": str(data_root)}))
    proc = subprocess.run(["nsenter", f"--net={netns.path_for(d.ns)}", MUSLIND, "--config-file", str(config),
                           "--mtu", "1450", "-H", f"unix://{tmp_path / 'refused.sock'}"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr == (f"unable to configure the Docker daemon with file {config}: the following directives are "
                           "specified both as a flag and in the configuration file: mtu: (from flag: 1450, from file: "
                           "1400)\n")
    assert not data_root.exists() and not (tmp_path / "refused.sock").exists()
