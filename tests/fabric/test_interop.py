"""Peers that are not muslin: flanneld's wire formats reproduced by hand, TLS etcd, healthz."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import urllib.request
from ipaddress import IPv4Address, IPv4Interface

import pytest

from muslin.kernel import netns
from muslin.lab.etcd import TlsConfig
from muslin.lab.rig import PREFIX, REPO, in_ns, ping, wait_for
from muslin.lab.topology import Underlay
from tests.fabric.traffic import tcp_roundtrip
from tests.tools import require

pytestmark = pytest.mark.root

NETWORK = "172.21.0.0/16"
FOREIGN = IPv4Interface("172.21.77.1/24")  # the subnet a flanneld node (simulated) holds on node 2


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo(src: str, dst: str, ident: int) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"muslin-udp-interop"
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident, 0, 64, 1, 0,
                         IPv4Address(src).packed, IPv4Address(dst).packed)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp


def test_udp_backend_speaks_flanneld_udp_on_the_wire(make_rig) -> None:
    """Node 2 plays a flanneld udp node: a lease in flannel's udp format and a plain socket on 8285."""
    rig = make_rig(2)
    rig.put_config({"Network": NETWORK, "Backend": {"Type": "udp"}})
    rig.etcdctl("put", f"{PREFIX}/subnets/{FOREIGN.network.network_address}-24",
                json.dumps({"PublicIP": "192.168.255.155", "PublicIPv6": None}))
    rig.start_agent(0)
    rig.wait_subnet_file(0)
    c1 = rig.add_container(0)
    with netns.entered(rig.hosts[1].name):
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with peer:
        peer.bind(("192.168.255.155", 8285))
        peer.settimeout(5)
        # Out: a container's packet arrives as one datagram whose payload is the bare IPv4 packet.
        pinger = threading.Thread(target=ping, args=(c1, str(FOREIGN.network[2]), 3, 1), daemon=True)
        pinger.start()
        packet, sender = peer.recvfrom(65535)
        pinger.join(10)
        assert sender == ("192.168.255.154", 8285)
        assert packet[0] == 0x45 and packet[9] == 1  # IPv4, ICMP
        assert packet[12:16] == IPv4Address(rig.container_ip(0)).packed
        assert packet[16:20] == IPv4Address(str(FOREIGN.network[2])).packed
        # In: a bare packet sent to 8285 reaches the container, whose reply comes back the same way.
        peer.sendto(icmp_echo(str(FOREIGN.network[2]), rig.container_ip(0), 0x4D55), ("192.168.255.154", 8285))

        def reply() -> bool:
            data, _ = peer.recvfrom(65535)
            return data[20] == 0 and data[16:20] == IPv4Address(str(FOREIGN.network[2])).packed
        wait_for(reply, 5, "echo reply through the forwarder")


def test_vxlan_node_interoperates_with_a_flanneld_style_peer(make_rig) -> None:
    """Node 2 is programmed exactly as flanneld programs a vxlan node, by hand, with its lease by etcdctl."""
    rig = make_rig(2)
    rig.put_config({"Network": NETWORK, "Backend": {"Type": "vxlan"}})
    mac = "4e:55:53:4c:49:4e"
    rig.etcdctl("put", f"{PREFIX}/subnets/{FOREIGN.network.network_address}-24", json.dumps(
        {"PublicIP": "192.168.255.155", "PublicIPv6": None, "BackendType": "vxlan",
         "BackendData": {"VNI": 1, "VtepMAC": mac}}))
    rig.start_agent(0)
    ours = IPv4Interface(rig.wait_subnet_file(0)["FLANNEL_SUBNET"]).network
    muslin_mac = json.loads(rig.etcdctl("get", "--print-value-only",
                                        f"{PREFIX}/subnets/{ours.network_address}-24"))["BackendData"]["VtepMAC"]
    node2 = rig.hosts[1].name
    script = (f"ip link add flannel.1 type vxlan id 1 local 192.168.255.155 dev eth0 dstport 8472 nolearning && "
              f"ip link set flannel.1 address {mac} mtu 1450 up && ip addr add {FOREIGN.network.network_address}/32 "
              f"dev flannel.1 && ip neigh replace {ours.network_address} lladdr {muslin_mac} dev flannel.1 nud "
              f"permanent && bridge fdb append {muslin_mac} dev flannel.1 dst 192.168.255.154 self permanent && "
              f"ip route add {ours} via {ours.network_address} dev flannel.1 onlink")
    assert in_ns(node2, "sh", "-c", script).returncode == 0
    os.makedirs(os.path.dirname(rig.subnet_file(1)), exist_ok=True)
    with open(rig.subnet_file(1), "w") as f:
        f.write(f"FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET={FOREIGN}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
    c1, c2 = rig.add_container(0), rig.add_container(1)
    wait_for(lambda: ping(c1, rig.container_ip(1)), 10, "ping to the flanneld-style node")
    tcp_roundtrip(c2, c1, rig.container_ip(0))


def make_tls(workdir: str, underlay: Underlay) -> TlsConfig:
    """A throwaway CA and one certificate good for every member's address, as server and as client."""
    d = os.path.join(workdir, "pki")
    os.makedirs(d)
    sans = ",".join(f"IP:{h.address}" for h in underlay.hosts)
    openssl = require("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=muslin-test-ca")
    run("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=etcd")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "node.crt", "-days", "1", "-extfile", "ext.cnf")
    return TlsConfig(os.path.join(d, "ca.crt"), os.path.join(d, "node.crt"), os.path.join(d, "node.key"))


@pytest.mark.parametrize("api", ["3", "2"])
def test_etcd_over_tls_with_client_certificates_and_healthz(make_rig, api: str) -> None:
    rig = make_rig(2, tls=make_tls)
    rig.put_config({"Network": NETWORK, "Backend": {"Type": "host-gw"}}, api=api)
    rig.start_agent(0, "--healthz-ip=192.168.255.154", "--healthz-port=8471")
    rig.start_agent(1, f"--etcd-api=v{api}", "--iface-regex=^10\\.", "--iface-regex=^e.h0$", ifaces=())
    subnets = [IPv4Interface(rig.wait_subnet_file(i)["FLANNEL_SUBNET"]).network for i in range(2)]
    assert f"etcd v{api} keyspace" in rig.log(0) and f"etcd v{api} keyspace" in rig.log(1)
    assert "using interface eth0 (192.168.255.155)" in rig.log(1)  # found by the second regex
    if api == "3":
        assert len(rig.leases()) == 2
    else:
        assert len(rig.etcdctl("ls", f"{PREFIX}/subnets", api="2").split()) == 2
    # Both ways: the reply needs node 2's route back as much as the request needs node 1's.
    wait_for(lambda: str(subnets[1]) in in_ns(rig.hosts[0].name, "ip", "route").stdout, 10, "route to node 2")
    wait_for(lambda: str(subnets[0]) in in_ns(rig.hosts[1].name, "ip", "route").stdout, 10, "route to node 1")
    c1 = rig.add_container(0)
    rig.add_container(1)  # the ping's target
    assert ping(c1, rig.container_ip(1), count=3)
    with netns.entered(rig.hosts[0].name):
        with urllib.request.urlopen("http://192.168.255.154:8471/healthz", timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b"ok\n"


def test_etcd_v3_with_user_and_password(make_rig) -> None:
    rig = make_rig(1)
    rig.put_config({"Network": NETWORK, "Backend": {"Type": "host-gw"}})
    rig.etcdctl("user", "add", "root:rootpw", "--interactive=false")
    rig.etcdctl("auth", "enable")
    # Without credentials, then with a wrong password: a logged refusal and a retry, no traceback.
    rig.start_agent(0, "--etcd-api=v3")
    wait_for(lambda: "refused the request" in rig.log(0), 15, "the refusal without credentials")
    rig.stop_agent(0)
    rig.start_agent(0, "--etcd-api=v3", "--etcd-username=root", "--etcd-password=wrong")
    wait_for(lambda: rig.log(0).count("refused the request") >= 2, 15, "the refusal of a wrong password")
    rig.stop_agent(0)
    assert "Traceback" not in rig.log(0)
    with pytest.raises(FileNotFoundError):
        open(rig.subnet_file(0))
    rig.start_agent(0, "--etcd-api=v3", "--etcd-username=root", "--etcd-password=rootpw")
    subnet = IPv4Interface(rig.wait_subnet_file(0)["FLANNEL_SUBNET"]).network
    key = f"{PREFIX}/subnets/{subnet.network_address}-24"
    stored = rig.etcdctl("--user=root:rootpw", "get", "--print-value-only", key)
    assert json.loads(stored)["PublicIP"] == "192.168.255.154"
    # The watch runs authenticated too: a peer's lease becomes a route.
    peer = json.dumps({"PublicIP": "192.168.255.155", "PublicIPv6": None, "BackendType": "host-gw"})
    rig.etcdctl("--user=root:rootpw", "put", f"{PREFIX}/subnets/172.21.99.0-24", peer)
    wait_for(lambda: "172.21.99.0/24 via 192.168.255.155" in in_ns(rig.hosts[0].name, "ip", "route").stdout, 10,
             "route to the peer")


def v2_auth(rig, method: str, path: str, body: dict, user: str | None = None) -> None:
    """etcd's v2 auth API (etcdctl's v2 user commands prompt on a terminal)."""
    request = urllib.request.Request(f"{rig.etcd.endpoints[0]}/v2/auth/{path}", json.dumps(body).encode(),
                                     method=method, headers={"Content-Type": "application/json"})
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    with netns.entered(rig.hosts[0].name):
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status in (200, 201), resp.status


def test_etcd_v2_with_basic_auth(make_rig) -> None:
    rig = make_rig(1)
    rig.put_config({"Network": NETWORK, "Backend": {"Type": "host-gw"}}, api="2")
    v2_auth(rig, "PUT", "users/root", {"user": "root", "password": "rootpw"})
    v2_auth(rig, "PUT", "enable", {})
    # Anonymous requests lose the guest role's default access to every key.
    v2_auth(rig, "PUT", "roles/guest", {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}},
            user="root:rootpw")
    rig.start_agent(0, "--etcd-api=v2", "--etcd-username=root", "--etcd-password=wrong")
    wait_for(lambda: "refused the request (HTTP 401" in rig.log(0), 15, "the refusal of a wrong password")
    rig.stop_agent(0)
    assert "Traceback" not in rig.log(0)
    rig.start_agent(0, "--etcd-api=v2", "--etcd-username=root", "--etcd-password=rootpw")
    rig.wait_subnet_file(0)
    assert "network config read from the etcd v2 keyspace" in rig.log(0)


CONDITIONAL_PUT = """
import asyncio, sys
from muslin.etcd import Endpoint, EtcdV2Store, EtcdV3Store

async def main(api, url):
    store = (EtcdV3Store if api == "3" else EtcdV2Store)([Endpoint.parse(url)])
    key = "/atomic.io/network/subnets/172.21.9.0-24"
    assert await store.create(key, b"ours", 60)
    first = await store.get(key)
    assert await store.put(key, b"renewed", 60, prev_revision=first.revision)
    renewed = await store.get(key)
    assert renewed.value == b"renewed" and renewed.expires and renewed.revision > first.revision
    assert not await store.put(key, b"stale", 60, prev_revision=first.revision)
    assert (await store.get(key)).value == b"renewed"
    await store.delete(key)
    assert not await store.put(key, b"gone", 60, prev_revision=renewed.revision)
    assert await store.get(key) is None
    await store.close()
    print("conditional put ok")

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.parametrize("api", ["3", "2"])
def test_conditional_put_against_real_etcd(make_rig, api: str) -> None:
    rig = make_rig(1)
    proc = in_ns(rig.hosts[0].name, sys.executable, "-c", CONDITIONAL_PUT, api, rig.etcd.endpoints[0],
                 env={"PYTHONPATH": REPO})
    assert proc.returncode == 0 and "conditional put ok" in proc.stdout, proc.stderr


WATCH = """
import asyncio, base64, json, sys, urllib.request
from muslin.etcd import Endpoint, EtcdV3Store, WatchResync

async def main(url):
    store = EtcdV3Store([Endpoint.parse(url)])
    prefix = "/atomic.io/network/subnets/"
    assert await store.create(prefix + "172.21.1.0-24", b"one", 60)
    _, revision = await store.list(prefix)
    events = store.watch(prefix, revision + 1)
    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.2)
    await store.put(prefix + "172.21.2.0-24", b"two" * 400, None)  # bigger than a chunk of the stream
    put = await asyncio.wait_for(waiting, 5)
    await store.delete(prefix + "172.21.1.0-24")
    await store.put("/atomic.io/network/config", b"{}", None)  # outside the prefix: no event
    deleted = await asyncio.wait_for(anext(events), 5)
    await events.aclose()
    assert (put.kind, put.key, put.value, put.expires) == ("put", prefix + "172.21.2.0-24", b"two" * 400, False)
    assert (deleted.kind, deleted.key, deleted.value) == ("delete", prefix + "172.21.1.0-24", None)
    assert deleted.revision == put.revision + 1 > revision
    body = json.dumps({"revision": deleted.revision + 1}).encode()
    await store.put("/atomic.io/network/config", b"{}", None)
    urllib.request.urlopen(urllib.request.Request(url + "/v3/kv/compaction", body), timeout=5).read()
    try:
        await asyncio.wait_for(anext(store.watch(prefix, revision + 1)), 5)
    except WatchResync:
        print("watch ok")

asyncio.run(main(*sys.argv[1:]))
"""


def test_v3_watch_events_and_compaction_against_real_etcd(make_rig) -> None:
    rig = make_rig(1)
    proc = in_ns(rig.hosts[0].name, sys.executable, "-c", WATCH, rig.etcd.endpoints[0], env={"PYTHONPATH": REPO})
    assert proc.returncode == 0 and "watch ok" in proc.stdout, proc.stderr
