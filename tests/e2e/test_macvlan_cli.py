"""The macvlan driver through the real docker CLI: containers as hosts of their own on a LAN segment,
on one host and across two (the article's §5.2.1), with no NAT and nothing left after removal."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import threading
import time

import pytest

from muslin.kernel import netns

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


def _in(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={netns.path_for(ns)}", *cmd], capture_output=True, text=True, check=check)


def _wire(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair between two namespaces, both ends up."""
    _in(ns_a, "ip", "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", netns.path_for(ns_b))
    _in(ns_a, "ip", "link", "set", name_a, "up")
    _in(ns_b, "ip", "link", "set", name_b, "up")


def _settle(done, seconds: float = 5.0) -> None:
    """Wait (bounded) for what muslind finishes in the background, such as deleting retired links."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)


def _links(daemon) -> list[str]:
    return sorted(line.split(": ")[1].split("@")[0] for line in daemon.sh("ip", "-o", "link").splitlines())


def _rules(daemon) -> object:
    """Every iptables rule, and the firewall's own (set elements with nftables)."""
    saved = [line for line in daemon.sh("iptables-save").splitlines() if line.startswith(("-A", ":"))]
    return saved, daemon.firewall.snapshot()


def _ping(daemon, container: str, target: str) -> bool:
    return daemon.docker("exec", container, "ping", "-c", "1", "-W", "2", target, check=False).returncode == 0


def test_macvlan_containers_live_on_the_parents_segment(daemon, make_netns) -> None:
    lan = make_netns("ml-")
    _wire(daemon.ns, "eth0", lan, "lan0")
    _in(lan, "ip", "addr", "add", "192.168.60.254/24", "dev", "lan0")
    links_before, rules_before = _links(daemon), _rules(daemon)

    daemon.docker("network", "create", "-d", "macvlan", "--subnet", "192.168.60.0/24",
                  "--gateway", "192.168.60.254", "-o", "parent=eth0", "mv")
    (net,) = json.loads(daemon.docker("network", "inspect", "mv").stdout)
    assert net["Driver"] == "macvlan" and net["Options"] == {"parent": "eth0"}
    assert net["IPAM"]["Config"] == [{"Subnet": "192.168.60.0/24", "Gateway": "192.168.60.254"}]
    assert "macvlan" in daemon.docker("info", "--format", "{{json .Plugins.Network}}").stdout

    daemon.docker("run", "-d", "--name", "m1", "--network", "mv", "busybox", "sleep", "300")
    daemon.docker("run", "-d", "--name", "m2", "--network", "mv", "--ip", "192.168.60.77", "busybox", "sleep", "300")
    (m1,) = json.loads(daemon.docker("inspect", "m1").stdout)
    settings = m1["NetworkSettings"]["Networks"]["mv"]
    # The gateway is .254, so the first container gets .1.
    assert (settings["IPAddress"], settings["MacAddress"]) == ("192.168.60.1", "02:42:c0:a8:3c:01")
    link = _in_sandbox(m1, "ip", "-d", "link", "show", "eth0")
    assert "macvlan mode bridge" in link and "02:42:c0:a8:3c:01" in link
    assert "default via 192.168.60.254" in daemon.docker("exec", "m1", "ip", "route").stdout

    assert _ping(daemon, "m1", "m2")  # by name, through the embedded DNS, on the same parent
    assert _ping(daemon, "m1", "192.168.60.254")  # another host on the segment
    assert _in(lan, "busybox", "ping", "-c", "1", "-W", "2", "192.168.60.77", check=False).returncode == 0  # and back
    assert _rules(daemon) == rules_before  # no NAT, no filtering: traffic leaves as it is

    # A container of the default bridge joins the segment as eth1, and leaves it.
    daemon.docker("run", "-d", "--name", "b1", "busybox", "sleep", "300")
    daemon.docker("network", "connect", "--ip", "192.168.60.88", "mv", "b1")
    assert "inet 192.168.60.88/24" in daemon.docker("exec", "b1", "ip", "addr", "show", "eth1").stdout
    assert _ping(daemon, "b1", "192.168.60.254")
    daemon.docker("network", "disconnect", "mv", "b1")
    assert daemon.docker("exec", "b1", "ip", "link", "show", "eth1", check=False).returncode != 0
    daemon.docker("rm", "-f", "b1")

    refused = daemon.docker("network", "rm", "mv", check=False)
    assert refused.returncode != 0 and "has active endpoints" in refused.stderr
    daemon.docker("rm", "-f", "m1", "m2")
    daemon.docker("network", "rm", "mv")
    assert _links(daemon) == links_before


def _in_sandbox(container: dict, *cmd: str) -> str:
    return subprocess.run(["nsenter", f"--net={container['NetworkSettings']['SandboxKey']}", *cmd],
                          capture_output=True, text=True, check=True).stdout


def test_bad_macvlan_input_is_refused_and_changes_nothing(daemon, make_netns) -> None:
    lan = make_netns("ml-")
    _wire(daemon.ns, "eth0", lan, "lan0")
    daemon.docker("network", "create", "-d", "macvlan", "--subnet", "192.168.61.0/24", "-o", "parent=eth0", "first")
    links_before = _links(daemon)
    cases = [
        (["-o", "parent=eth0"], "network dm-"),  # ... is already using parent interface eth0
        (["-o", "parent=nosuch"], "invalid subinterface vlan name nosuch, example formatting is eth0.10"),
        (["-o", "parent=nosuch.10"], "-o parent interface was not found on the host: nosuch"),
        (["-o", "parent=eth0", "-o", "macvlan_mode=bogus"], "requested macvlan mode 'bogus' is not valid"),
        (["-o", "parent=eth0", "-o", "macvlan_mod=bridge"], "unknown option 'macvlan_mod'"),
        (["-o", "parent=lo"], "loopback interface is not a valid macvlan parent link"),
    ]
    for args, message in cases:
        out = daemon.docker("network", "create", "-d", "macvlan", "--subnet", "192.168.62.0/24", *args, "second",
                            check=False)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr)
    assert "already using parent interface eth0" in daemon.docker(
        "network", "create", "-d", "macvlan", "-o", "parent=eth0", "third", check=False).stderr
    assert _links(daemon) == links_before
    names = daemon.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert sorted(names) == ["bridge", "first", "host", "none"]
    daemon.docker("network", "rm", "first")


def _kernel_has_vlan(make_netns) -> bool:
    probe = make_netns("mp-")
    _in(probe, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    return _in(probe, "ip", "link", "add", "link", "v0", "name", "v0.5", "type", "vlan", "id", "5",
               check=False).returncode == 0


def test_a_vlan_parent_is_made_and_removed_with_its_network(daemon, make_netns) -> None:
    lan = make_netns("ml-")
    _wire(daemon.ns, "eth0", lan, "lan0")
    links_before = _links(daemon)
    out = daemon.docker("network", "create", "-d", "macvlan", "--subnet", "192.168.65.0/24", "-o", "parent=eth0.10",
                        "tagged", check=False)
    if not _kernel_has_vlan(make_netns):  # this kernel has no 802.1q: Docker's error, nothing half made
        assert out.returncode != 0 and "failed to create eth0.10 vlan link: operation not supported" in out.stderr
        assert _links(daemon) == links_before
        assert "tagged" not in daemon.docker("network", "ls").stdout
        return
    assert out.returncode == 0, out.stderr
    assert "vlan id 10" in daemon.sh("ip", "-d", "link", "show", "eth0.10")
    daemon.docker("network", "rm", "tagged")
    _settle(lambda: _links(daemon) == links_before)  # the link is deleted in the background
    assert _links(daemon) == links_before


def test_a_network_without_parent_is_a_segment_of_its_own(daemon) -> None:
    links_before = _links(daemon)
    daemon.docker("network", "create", "-d", "macvlan", "--subnet", "192.168.63.0/24", "alone")
    (net,) = json.loads(daemon.docker("network", "inspect", "alone").stdout)
    assert f"dm-{net['Id'][:12]}" in _links(daemon)
    daemon.docker("run", "-d", "--name", "a1", "--network", "alone", "busybox", "sleep", "300")
    daemon.docker("run", "-d", "--name", "a2", "--network", "alone", "busybox", "sleep", "300")
    assert _ping(daemon, "a1", "a2")
    daemon.docker("rm", "-f", "a1", "a2")
    daemon.docker("network", "rm", "alone")
    _settle(lambda: _links(daemon) == links_before)  # the lower device is deleted in the background
    assert _links(daemon) == links_before


def test_containers_on_two_hosts_reach_each_other_over_one_segment(daemon_factory, make_netns) -> None:
    """The article's native cross-host answer: both hosts' eth0 on one switch (a bridge in a namespace of
    its own), one macvlan network on each, split address ranges; containers talk by their own IPs."""
    switch = make_netns("ms-")
    _in(switch, "ip", "link", "add", "sw", "type", "bridge")
    _in(switch, "ip", "link", "set", "sw", "up")
    hosts = [daemon_factory(), daemon_factory()]
    for i, host in enumerate(hosts):
        _wire(host.ns, "eth0", switch, f"port{i}")
        _in(switch, "ip", "link", "set", f"port{i}", "master", "sw")
    for host, ip_range in zip(hosts, ("192.168.64.0/25", "192.168.64.128/25")):
        host.docker("network", "create", "-d", "macvlan", "--subnet", "192.168.64.0/24", "--ip-range", ip_range,
                    "-o", "parent=eth0", "lan")
        host.docker("run", "-d", "--name", "cx", "--network", "lan", "busybox", "sleep", "300")
    addresses = [json.loads(h.docker("inspect", "cx").stdout)[0]["NetworkSettings"]["Networks"]["lan"]["IPAddress"]
                 for h in hosts]
    assert addresses == ["192.168.64.2", "192.168.64.129"]  # .1 is the gateway; a range starts past its first
    assert _ping(hosts[0], "cx", addresses[1]) and _ping(hosts[1], "cx", addresses[0])


def test_restart_restores_own_parents_removes_orphans_and_survives_a_missing_parent(daemon, make_netns) -> None:
    lan = make_netns("ml-")
    _wire(daemon.ns, "eth0", lan, "lan0")
    daemon.docker("network", "create", "-d", "macvlan", "--subnet", "192.168.66.0/24", "alone")
    daemon.docker("network", "create", "-d", "macvlan", "--subnet", "192.168.67.0/24", "-o", "parent=eth0", "onlan")
    (alone,) = json.loads(daemon.docker("network", "inspect", "alone").stdout)
    own = f"dm-{alone['Id'][:12]}"
    daemon.stop()
    daemon.sh("ip", "link", "del", own)  # lost while muslind was away
    daemon.sh("ip", "link", "add", "dm-0123456789ab", "type", "veth", "peer", "name", "dmp-0123456789a")  # an orphan
    daemon.sh("ip", "link", "del", "eth0")  # the user's parent is gone
    daemon.start()
    assert "network onlan cannot be used until its parent is back" in daemon.log()
    assert sorted(daemon.docker("network", "ls", "--format", "{{.Name}}").stdout.split()) == \
        ["alone", "bridge", "host", "none", "onlan"]
    _settle(lambda: "dm-0123456789ab" not in _links(daemon))  # orphans are deleted in the background
    links = _links(daemon)
    assert own in links and "dm-0123456789ab" not in links and "dmp-0123456789a" not in links
    daemon.stop()  # and once more, with our own parent in place (a veth where there are no dummy links)
    daemon.start()
    assert own in _links(daemon)
    out = daemon.docker("run", "--rm", "--network", "onlan", "busybox", "true", check=False, timeout=10)
    assert out.returncode != 0 and "parent interface eth0 of network onlan is missing" in out.stderr
    assert daemon.docker("ps", "-aq").stdout.strip() == ""  # --rm: a failed start removes it too, as dockerd
    daemon.docker("network", "rm", "alone", "onlan")


def _answer_every_query(ns: str, address: str, answer: str) -> tuple[threading.Thread, socket.socket]:
    """A tiny DNS server inside ``ns``: an A record with ``answer`` for whatever is asked."""
    with netns.entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    sock.settimeout(0.2)

    def serve() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return  # closed: the test is over
            header = struct.pack(">HHHHHH", struct.unpack_from(">H", query)[0], 0x8180, 1, 1, 0, 0)
            record = struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(answer)
            sock.sendto(header + query[12:] + record, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread, sock


def test_outside_names_are_asked_from_the_containers_namespace(daemon, make_netns) -> None:
    """A --dns resolver that only the container can reach (here on its macvlan LAN, which the daemon's
    own namespace has no address on) answers through the embedded DNS, as with dockerd."""
    lan = make_netns("ml-")
    _wire(daemon.ns, "eth0", lan, "lan0")
    _in(lan, "ip", "addr", "add", "192.168.68.254/24", "dev", "lan0")
    thread, sock = _answer_every_query(lan, "192.168.68.254", "10.1.2.3")
    try:
        daemon.docker("network", "create", "-d", "macvlan", "--subnet", "192.168.68.0/24", "-o", "parent=eth0", "mvd")
        out = daemon.docker("run", "--rm", "--network", "mvd", "--dns", "192.168.68.254", "busybox",
                            "nslookup", "foo.example").stdout
        assert "10.1.2.3" in out, out
        daemon.docker("network", "rm", "mvd")
    finally:
        sock.close()
        thread.join(5)
