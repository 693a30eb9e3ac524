"""Agents on simulated hosts with a real etcd cluster: files, etcd keys, kernel state and traffic."""

from __future__ import annotations

import errno
import json
import re
import socket
from ipaddress import IPv4Interface, IPv4Network

import pytest

from muslin.kernel import netns
from muslin.lab.rig import PREFIX, Rig, in_ns, ping, wait_for
from tests.fabric.traffic import tcp_roundtrip

pytestmark = pytest.mark.root

NETWORK = "172.21.0.0/16"
IP_RECVERR = 11  # linux/in.h; the socket module does not name it
EXPECTED_MTU = {"vxlan": 1450, "host-gw": 1500, "udp": 1472}


def start_nodes(rig: Rig, backend: str, count: int, *extra: str, forward_drop: bool = True) -> list[dict[str, str]]:
    for i in range(count):
        if forward_drop:
            # A FORWARD policy of DROP (flannel issue #609): the agent's own accept rules must carry traffic.
            assert in_ns(rig.hosts[i].name, "iptables", "-P", "FORWARD", "DROP").returncode == 0
        rig.start_agent(i, *extra)
    return [rig.wait_subnet_file(i) for i in range(count)]


def kernel(rig: Rig, i: int, command: str) -> str:
    return in_ns(rig.hosts[i].name, "sh", "-c", command).stdout


def wait_route(rig: Rig, i: int, subnet: str, present: bool = True, timeout: float = 10) -> None:
    wait_for(lambda: (subnet in kernel(rig, i, "ip route")) == present, timeout,
             f"route {subnet} {'on' if present else 'gone from'} node {i + 1}")


@pytest.mark.parametrize("backend", ["vxlan", "host-gw", "udp"])
def test_two_hosts_files_keys_kernel_and_traffic(make_rig, backend: str) -> None:
    rig = make_rig(2)
    rig.put_config({"Network": NETWORK, "Backend": {"Type": backend}})
    envs = start_nodes(rig, backend, 2, "--ip-masq")

    subnets = []
    for env in envs:
        assert env["FLANNEL_NETWORK"] == NETWORK
        assert env["FLANNEL_MTU"] == str(EXPECTED_MTU[backend])
        assert env["FLANNEL_IPMASQ"] == "true"
        subnet = IPv4Interface(env["FLANNEL_SUBNET"])
        assert subnet.network.prefixlen == 24 and subnet.ip == subnet.network[1]
        assert subnet.network.subnet_of(IPv4Network(NETWORK))
        subnets.append(subnet.network)
    assert subnets[0] != subnets[1]
    with open(rig.subnet_file(0).replace("subnet.env", "docker")) as f:
        docker = f.read()
    options = f'--bip={envs[0]["FLANNEL_SUBNET"]} --ip-masq=false --mtu={EXPECTED_MTU[backend]}'
    assert f'DOCKER_NETWORK_OPTIONS=" {options}"' in docker

    leases = rig.leases()
    assert set(leases) == {f"{s.network_address}-24" for s in subnets}
    for i, subnet in enumerate(subnets):
        lease = leases[f"{subnet.network_address}-24"]
        assert lease["PublicIP"] == str(rig.hosts[i].address) and lease["PublicIPv6"] is None
        if backend == "udp":
            assert "BackendType" not in lease
        else:
            assert lease["BackendType"] == backend
        if backend == "vxlan":
            assert lease["BackendData"]["VNI"] == 1
            assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", lease["BackendData"]["VtepMAC"])

    peer = subnets[1]
    if backend != "udp":  # udp routes the whole network to flannel0; peers live in the forwarder
        wait_route(rig, 0, str(peer))
    routes = kernel(rig, 0, "ip route")
    if backend == "vxlan":
        mac = leases[f"{peer.network_address}-24"]["BackendData"]["VtepMAC"]
        link = kernel(rig, 0, "ip -d link show flannel.1")
        assert "vxlan id 1 local 192.168.255.154 dev eth0" in link and "dstport 8472 nolearning" in link
        assert "mtu 1450" in link
        assert f"{peer} via {peer.network_address} dev flannel.1 onlink" in routes
        assert f"{peer.network_address} dev flannel.1 lladdr {mac} PERMANENT" in kernel(rig, 0, "ip neigh")
        assert f"{mac} dst 192.168.255.155 self permanent" in kernel(rig, 0, "bridge fdb show dev flannel.1")
    elif backend == "host-gw":
        assert f"{peer} via 192.168.255.155 dev eth0" in routes
    else:
        assert f"{NETWORK} dev flannel0" in routes
        link = kernel(rig, 0, "ip link show flannel0")
        assert "mtu 1472" in link and "POINTOPOINT" in link
        assert "UNCONN" in kernel(rig, 0, "ss -uan") and "192.168.255.154:8285" in kernel(rig, 0, "ss -uan")

    nat = kernel(rig, 0, "iptables-save -t nat")
    assert f"-A MUSLIN-FLANNEL-POSTRTG -s {NETWORK} -d {NETWORK} -j RETURN" in nat
    assert "-A POSTROUTING -j MUSLIN-FLANNEL-POSTRTG" in nat
    assert f"-A MUSLIN-FLANNEL-FWD -s {NETWORK} -j ACCEPT" in kernel(rig, 0, "iptables-save -t filter")

    c1 = rig.add_container(0)
    c2 = rig.add_container(1)
    wait_for(lambda: ping(c1, rig.container_ip(1)), 10, "ping from node 1's container to node 2's")
    assert ping(c2, rig.container_ip(0))
    # Overlay to overlay keeps the container's address; overlay to the outside is masqueraded.
    assert tcp_roundtrip(c1, c2, rig.container_ip(1), size=2 << 20) == rig.container_ip(0)
    assert tcp_roundtrip(c1, rig.hosts[1].name, "192.168.255.155", size=1024) == "192.168.255.154"

    if backend == "udp":  # like flannel's proxy: a destination no lease covers is "net unreachable"
        with netns.entered(c1):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with probe:
            probe.settimeout(5)
            # Net unreachable is a soft error: a UDP socket sees it only with IP_RECVERR.
            probe.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            probe.connect(("172.21.250.2", 9))
            probe.send(b"anyone?")
            with pytest.raises(OSError) as unreachable:
                probe.recv(100)
            assert unreachable.value.errno == errno.ENETUNREACH

    # A clean shutdown removes the firewall rules and keeps the lease for the next start.
    assert rig.stop_agent(0) == 0
    assert "MUSLIN-FLANNEL" not in kernel(rig, 0, "iptables-save")
    assert f"{subnets[0].network_address}-24" in rig.leases()


@pytest.mark.parametrize("backend", ["vxlan", "host-gw"])
def test_three_hosts_leave_restart_and_revoke(make_rig, backend: str) -> None:
    rig = make_rig(3)
    rig.put_config({"Network": NETWORK, "Backend": {"Type": backend}})
    # FORWARD policy ACCEPT here: a clean stop removes our accept rules, which under DROP would cut
    # traffic until the restart (the other tests cover DROP).
    envs = start_nodes(rig, backend, 3, forward_drop=False)
    subnets = [IPv4Interface(e["FLANNEL_SUBNET"]).network for e in envs]
    for i in range(3):
        for j in range(3):
            if i != j:
                wait_route(rig, i, str(subnets[j]))
    containers = [rig.add_container(i) for i in range(3)]
    assert ping(containers[0], rig.container_ip(2))

    # An agent restarting keeps its subnet, and traffic keeps flowing while it is down.
    rig.stop_agent(0)
    assert ping(containers[0], rig.container_ip(1)) and ping(containers[1], rig.container_ip(0))
    rig.start_agent(0)
    wait_for(lambda: "lease" in rig.log(0).split("stopped")[-1], 20, "agent 1 restarted")
    assert IPv4Interface(rig.wait_subnet_file(0)["FLANNEL_SUBNET"]).network == subnets[0]
    tcp_roundtrip(containers[0], containers[1], rig.container_ip(1))

    # Restarted after its lease was lost (etcd data loss, flannel #610): the subnet file brings it back.
    rig.stop_agent(0)
    rig.etcdctl("del", f"{PREFIX}/subnets/{subnets[0].network_address}-24")
    rig.start_agent(0)
    wait_for(lambda: "took back subnet" in rig.log(0), 20, "subnet taken back from the subnet file")
    assert IPv4Interface(rig.wait_subnet_file(0)["FLANNEL_SUBNET"]).network == subnets[0]
    # The peers dropped the route when the lease went; they add it back when it reappears.
    wait_for(lambda: ping(containers[1], rig.container_ip(0)), 10, "ping after the lease came back")

    # Our own lease deleted from etcd: the agent takes the same subnet back.
    own_key = f"{PREFIX}/subnets/{subnets[1].network_address}-24"
    rig.etcdctl("del", own_key)
    wait_for(lambda: f"{subnets[1].network_address}-24" in rig.leases(), 10, "lease taken back")
    assert rig.leases()[f"{subnets[1].network_address}-24"]["PublicIP"] == "192.168.255.155"

    # A node leaving (its lease deleted) leaves everyone's datapath.
    rig.stop_agent(2, kill=True)
    rig.etcdctl("del", f"{PREFIX}/subnets/{subnets[2].network_address}-24")
    wait_route(rig, 0, str(subnets[2]), present=False)
    wait_route(rig, 1, str(subnets[2]), present=False)
    if backend == "vxlan":
        assert str(subnets[2].network_address) + " " not in kernel(rig, 0, "ip neigh show dev flannel.1")
    assert ping(containers[0], rig.container_ip(1))


def test_route_deleted_by_hand_is_restored(make_rig) -> None:
    rig = make_rig(2)
    rig.put_config({"Network": NETWORK, "Backend": {"Type": "vxlan"}})
    envs = start_nodes(rig, "vxlan", 2)
    peer = str(IPv4Interface(envs[1]["FLANNEL_SUBNET"]).network)
    wait_route(rig, 0, peer)
    assert in_ns(rig.hosts[0].name, "ip", "route", "del", peer).returncode == 0
    wait_route(rig, 0, peer, timeout=10)
    # A stale route of ours (no lease behind it) is removed by the same reconcile.
    in_ns(rig.hosts[0].name, "ip", "route", "add", "172.21.250.0/24", "via", "172.21.250.0", "dev", "flannel.1",
          "onlink")
    wait_route(rig, 0, "172.21.250.0/24", present=False)


def test_peer_lease_expiry_removes_it(make_rig) -> None:
    rig = make_rig(2)
    rig.put_config({"Network": NETWORK, "Backend": {"Type": "host-gw"}})
    # A short TTL: the agent must renew its own lease in time (at TTL/2 when the margin exceeds the TTL).
    start_nodes(rig, "host-gw", 1, "--subnet-lease-ttl=3")
    own = next(iter(rig.leases()))
    # A host-gw peer whose PublicIP is not on our L2 segment is refused, with a reason.
    rig.etcdctl("put", f"{PREFIX}/subnets/172.21.98.0-24",
                json.dumps({"PublicIP": "10.200.0.9", "PublicIPv6": None, "BackendType": "host-gw"}))
    wait_for(lambda: "refusing host-gw peer 172.21.98.0/24: its PublicIP 10.200.0.9 is not on eth0's L2" in rig.log(0),
             5, "refusal in the log")
    assert "172.21.98.0" not in kernel(rig, 0, "ip route")
    # The expiring peer's TTL runs from the grant, and each etcdctl is a process: on a loaded machine a
    # 2 s TTL could run out before the route was first looked for (the test flaked so, the agent had not).
    lease_id = re.search(r"lease ([0-9a-f]+) granted", rig.etcdctl("lease", "grant", "6")).group(1)
    rig.etcdctl("put", f"{PREFIX}/subnets/172.21.99.0-24",
                json.dumps({"PublicIP": "192.168.255.155", "PublicIPv6": None, "BackendType": "host-gw"}),
                f"--lease={lease_id}")
    wait_route(rig, 0, "172.21.99.0/24")
    wait_route(rig, 0, "172.21.99.0/24", present=False, timeout=15)
    assert own in rig.leases() and "renewed lease" in rig.log(0)

    # A reservation (a lease key without TTL) naming node 2's address is what node 2 gets, and stays one.
    key = f"{PREFIX}/subnets/172.21.42.0-24"
    rig.etcdctl("put", key, json.dumps({"PublicIP": "192.168.255.155", "PublicIPv6": None}))
    rig.start_agent(1)
    assert rig.wait_subnet_file(1)["FLANNEL_SUBNET"] == "172.21.42.1/24"
    stored = json.loads(rig.etcdctl("get", key, "-w", "json"))["kvs"][0]
    assert "lease" not in stored  # still no TTL
    assert json.loads(rig.etcdctl("get", "--print-value-only", key))["BackendType"] == "host-gw"


@pytest.mark.parametrize("api", ["3", "2"])
def test_etcd_member_down_failover(make_rig, api: str) -> None:
    rig = make_rig(3)
    rig.put_config({"Network": NETWORK, "Backend": {"Type": "vxlan"}}, api=api)
    envs = start_nodes(rig, "vxlan", 2)
    wait_route(rig, 0, str(IPv4Interface(envs[1]["FLANNEL_SUBNET"]).network))
    rig.etcd.stop_member(0)  # the first endpoint every agent was given
    rig.start_agent(2)
    assert f"etcd v{api} keyspace" in rig.log(0)
    third = IPv4Interface(rig.wait_subnet_file(2, timeout=30)["FLANNEL_SUBNET"]).network
    wait_route(rig, 0, str(third), timeout=20)
    wait_route(rig, 1, str(third), timeout=20)
    c1, c3 = rig.add_container(0), rig.add_container(2)
    assert ping(c1, rig.container_ip(2))
    tcp_roundtrip(c3, c1, rig.container_ip(0))


def test_v2_keyspace_as_in_the_article(make_rig) -> None:
    rig = make_rig(2)
    rig.put_config({"Network": NETWORK}, api="2")  # etcdctl mk /atomic.io/network/config '{...}'
    for i, host in enumerate(rig.hosts):  # --iface by address; the first one given exists nowhere
        rig.start_agent(i, ifaces=("192.168.255.0", str(host.address)))
        rig.wait_subnet_file(i)
    assert "network config read from the etcd v2 keyspace" in rig.log(0)
    assert "no Backend in the config: udp" in rig.log(0)
    listed = rig.etcdctl("ls", f"{PREFIX}/subnets", api="2").split()
    assert len(listed) == 2
    value = json.loads(rig.etcdctl("get", listed[0], api="2"))
    assert "BackendType" not in value  # udp's lease, as flanneld writes it
    assert rig.etcdctl("get", "--prefix", f"{PREFIX}/subnets/").strip() == ""  # nothing in v3
    c1 = rig.add_container(0)
    rig.add_container(1)  # the ping's target
    wait_for(lambda: ping(c1, rig.container_ip(1)), 10, "ping over the v2-configured network")


def test_invalid_config_sets_nothing_up(make_rig) -> None:
    rig = make_rig(2)
    rig.put_config({"Network": NETWORK, "SubnetLen": 12})
    rig.start_agent(0)
    wait_for(lambda: "SubnetLen /12 leaves" in rig.log(0), 15, "config error in the log")
    assert "nothing was set up" in rig.log(0)
    assert rig.leases() == {}
    assert "flannel" not in kernel(rig, 0, "ip link")
    with pytest.raises(FileNotFoundError):
        open(rig.subnet_file(0))
    # Once the config is fixed, the waiting agent goes on.
    rig.put_config({"Network": NETWORK})
    rig.wait_subnet_file(0)


def test_exhausted_network_is_a_clear_error(make_rig) -> None:
    rig = make_rig(2)
    rig.put_config({"Network": "10.9.0.0/16", "SubnetMin": "10.9.7.0", "SubnetMax": "10.9.7.0",
                    "Backend": {"Type": "host-gw"}})
    start_nodes(rig, "host-gw", 1)
    rig.start_agent(1)
    assert rig.agents[1].wait(20) == 1
    assert "network 10.9.0.0/16 is exhausted" in rig.log(1) and "no lease was taken" in rig.log(1)
    assert len(rig.leases()) == 1


def test_node_whose_subnet_is_claimed_moves_and_routes_to_the_claimer_at_once(make_rig) -> None:
    rig = make_rig(2)
    rig.put_config({"Network": NETWORK, "Backend": {"Type": "host-gw"}})
    # Reconcile every 5 s, so the full re-list (every 12th round) is a minute away: only the move itself
    # can put the claimer into the peer table within the wait below.
    env = start_nodes(rig, "host-gw", 1, "--iptables-resync=5", forward_drop=False)[0]
    old = IPv4Interface(env["FLANNEL_SUBNET"]).network
    claim = json.dumps({"PublicIP": "192.168.255.155", "PublicIPv6": None, "BackendType": "host-gw"})
    rig.etcdctl("put", f"{PREFIX}/subnets/{old.network_address}-24", claim)
    wait_for(lambda: IPv4Interface(rig.wait_subnet_file(0)["FLANNEL_SUBNET"]).network != old, 10,
             "node 1 to move to a new subnet")
    new = IPv4Interface(rig.wait_subnet_file(0)["FLANNEL_SUBNET"]).network
    wait_for(lambda: f"{old} via 192.168.255.155 dev eth0" in kernel(rig, 0, "ip route"), 4,
             "a route to the claimer of our old subnet")
    leases = rig.leases()
    assert leases[f"{old.network_address}-24"]["PublicIP"] == "192.168.255.155"  # the claim was not overwritten
    assert leases[f"{new.network_address}-24"]["PublicIP"] == "192.168.255.154"
    assert f"{new} via" not in kernel(rig, 0, "ip route")


def test_the_articles_config_verbatim_gives_flanneds_udp(make_rig) -> None:
    """§5.6.3 exactly: `etcdctl mk <prefix>/config '{"Network":"172.21.0.0/16"}'` (v2, no Backend). flanneld
    v0.20.2 runs udp on it, hence the article's FLANNEL_MTU=1472 on a 1500 underlay; so do we."""
    rig = make_rig(2)
    rig.etcdctl("mk", f"{PREFIX}/config", '{"Network":"172.21.0.0/16"}', api="2")
    envs = start_nodes(rig, "udp", 2, forward_drop=False)
    for env in envs:
        assert env["FLANNEL_NETWORK"] == NETWORK and env["FLANNEL_MTU"] == "1472"
        assert env["FLANNEL_IPMASQ"] == "false"
    assert "flannel0" in kernel(rig, 0, "ip -o link show")
    keys = rig.etcdctl("ls", f"{PREFIX}/subnets", api="2").split()  # the leases went to the v2 keyspace too
    leases = [json.loads(rig.etcdctl("get", key, api="2")) for key in keys]
    assert len(leases) == 2 and all("BackendType" not in lease for lease in leases)  # udp's, as flannel's
    assert "no Backend in the config: udp" in rig.log(0)
    c1, c2 = rig.add_container(0), rig.add_container(1)
    wait_for(lambda: ping(c1, rig.container_ip(1)), 10, "ping from node 1's container to node 2's")
    tcp_roundtrip(c2, c1, rig.container_ip(0))
