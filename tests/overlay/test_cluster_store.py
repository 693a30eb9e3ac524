"""Stage 1 and 2: the cluster store flags, and global networks every engine sees."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import docker

from muslin.kernel import netns
from muslin.lab.rig import in_ns, wait_for

SHOWS_UP = 30  # seconds: generous, for a loaded machine; latency is measured in bench/, not asserted here


def listed(d, name: str) -> dict | None:
    out = d.docker("network", "ls", "--format", "{{json .}}").stdout.splitlines()
    found = [json.loads(line) for line in out if json.loads(line)["Name"] == name]
    return found[0] if found else None


def v3_gateway_answers(cluster) -> bool:
    """Whether etcd's v3 JSON gateway answers over HTTP (an etcd without it answers 404 pages)."""
    request = urllib.request.Request(f"{cluster.etcd.endpoints[0]}/v3/kv/range", data=b'{"key": "Lw=="}',
                                     headers={"Content-Type": "application/json"})
    try:
        with netns.entered(cluster.underlay.hosts[0].netns), urllib.request.urlopen(request, timeout=5) as resp:
            return "header" in json.load(resp)
    except urllib.error.HTTPError as exc:
        assert exc.code == 404, exc
        return False


def test_info_and_global_network_seen_by_both(shared_cluster_on, etcd_api):
    cluster = shared_cluster_on
    one, two = cluster.engines
    assert v3_gateway_answers(cluster) == (etcd_api == "v3")
    # the engine found the API etcd serves, and says which
    wait_for(lambda: f"speaks etcd's {etcd_api} API" in one.log(), 10, "the engine to log the store's API")
    # the CLI of today drops these fields: the API's answer, through the SDK
    info = docker.DockerClient(base_url=f"unix://{one.sock}").info()
    assert info["ClusterStore"] == cluster.store_url
    assert info["ClusterAdvertise"] == f"{cluster.underlay.hosts[0].address}:2376"
    assert "overlay" in info["Plugins"]["Network"]

    net_id = one.docker("network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "--label", "a=b",
                        "ov1").stdout.strip()
    # how fast it shows up is bench/bench_overlay.py's measure; here only that it does
    wait_for(lambda: listed(two, "ov1"), SHOWS_UP, "ov1 on the second engine")
    seen = json.loads(two.docker("network", "inspect", "ov1").stdout)[0]
    assert seen["Id"] == net_id and seen["Scope"] == "global" and seen["Driver"] == "overlay"
    assert seen["IPAM"]["Config"][0]["Subnet"] == "10.0.9.0/24" and seen["Labels"] == {"a": "b"}
    assert listed(two, "ov1")["Scope"] == "global"

    # --opt encrypted: tests/overlay/test_encrypted.py
    # names are the cluster's
    dup = two.docker("network", "create", "-d", "overlay", "ov1", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr

    # local and global creates of one name at once: one wins, the others get Docker's conflict
    with ThreadPoolExecutor(max_workers=4) as pool:
        racing = list(pool.map(lambda args: one.docker("network", "create", *args, "both", check=False),
                                [("-d", "overlay"), ("-d", "bridge")] * 2))
    assert sum(p.returncode == 0 for p in racing) == 1, [p.stderr for p in racing]
    assert all("network with name both already exists" in p.stderr for p in racing if p.returncode)
    won = json.loads(one.docker("network", "inspect", "both").stdout)[0]
    assert one.docker("network", "ls", "--format", "{{.Name}}").stdout.split().count("both") == 1
    # the cluster holds the name only if the overlay won (a loser's records were undone)
    named = cluster.records("/muslin/network/v1.0/name/")
    assert ("/muslin/network/v1.0/name/both" in named) == (won["Driver"] == "overlay"), (won["Driver"], named)
    one.docker("network", "rm", "both")

    # rm from the other engine removes it everywhere
    two.docker("network", "rm", "ov1")
    wait_for(lambda: listed(one, "ov1") is None, SHOWS_UP, "ov1 gone from the first engine")
    assert cluster.records("/muslin/network/v1.0/network/") == {}
    assert cluster.records("/muslin/network/v1.0/name/") == {}


def test_containers_across_engines(shared_cluster_on, etcd_api):
    cluster = shared_cluster_on
    one, two = cluster.engines
    one.docker("network", "create", "-d", "overlay", "ov1")
    wait_for(lambda: listed(two, "ov1"), SHOWS_UP, "ov1 on the second engine")
    one.docker("run", "-d", "--name", "web1", "--network", "ov1", "busybox", "sh", "-c",
               "mkdir /www; echo hello-from-node1 > /www/index.html; httpd -f -h /www")
    ip = one.docker("inspect", "-f", "{{.NetworkSettings.Networks.ov1.IPAddress}}", "web1").stdout.strip()
    assert ip == "10.0.0.2"
    out = two.docker("run", "--rm", "--network", "ov1", "busybox", "sh", "-c",
                     f"ip -o addr show eth0; cat /sys/class/net/eth0/mtu; ping -c1 -W2 {ip}; wget -qO- http://{ip}/;"
                     " wget -qO- http://web1/")
    assert "10.0.0.3/24" in out.stdout, out.stdout
    assert "\n1450\n" in out.stdout
    assert out.stdout.count("hello-from-node1") == 2, out.stdout  # by address, and by name across hosts
    if etcd_api == "v2":
        # no leases in v2: an engine's records are TTL keys (refreshed every heartbeat), the network's not
        ttl = {n["key"].split("/")[4]: "ttl" in n for n in cluster.v2_nodes("/muslin/network/v1.0/")}
        assert ttl == {"network": False, "name": False, "vni": False, "subnet": False, "engine": True,
                       "endpoint": True, "address": True}, ttl
    rm = two.docker("network", "rm", "ov1", check=False)
    assert rm.returncode != 0 and "has active endpoints" in rm.stderr
    one.docker("rm", "-f", "web1")
    two.docker("network", "rm", "ov1")


def test_names_egress_and_published_ports(shared_cluster):
    cluster = shared_cluster
    one, two = cluster.engines
    node1 = cluster.underlay.hosts[0].address
    one.docker("network", "create", "-d", "overlay", "ov1")
    wait_for(lambda: listed(two, "ov1"), SHOWS_UP, "ov1 on the second engine")
    one.docker("run", "-d", "--name", "web1", "--network", "ov1", "--network-alias", "www", "-p", "8080:80",
               "busybox", "sh", "-c", "mkdir /www; echo hello-from-node1 > /www/index.html; httpd -f -h /www")
    # eth1 on docker_gwbridge holds the default route; inspect lists only the overlay, as Docker's
    nets = json.loads(one.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", "web1").stdout)
    assert list(nets) == ["ov1"]
    gw = json.loads(one.docker("network", "inspect", "docker_gwbridge").stdout)[0]
    assert gw["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    # by name and alias from the other engine; the way out through node2's gateway bridge (to node1's
    # underlay address: nothing else is outside here)
    out = two.docker("run", "--rm", "--network", "ov1", "busybox", "sh", "-c",
                     f"ip route; wget -qO- http://web1/; wget -qO- http://www/; ping -c1 -W2 {node1}").stdout
    assert "default via 172.18.0.1 dev eth1" in out, out
    assert out.count("hello-from-node1") == 2, out
    assert "1 packets received" in out, out
    # the published port answers on node1's address, from node2 (through node1's gateway bridge)
    reply = in_ns(cluster.underlay.hosts[1].name, "timeout", "5", "busybox", "wget", "-qO-",
                  f"http://{node1}:8080/")
    assert reply.stdout.strip() == "hello-from-node1", reply
    one.docker("rm", "-f", "web1")
    one.docker("network", "rm", "ov1")


def test_overlay_refused_without_a_cluster_store(daemon):
    info = docker.DockerClient(base_url=f"unix://{daemon.sock}").info()
    assert "overlay" not in info["Plugins"]["Network"] and info["ClusterStore"] == ""
    refused = daemon.docker("network", "create", "-d", "overlay", "ov1", check=False)
    assert refused.returncode != 0 and "overlay driver is not available" in refused.stderr


def gateway_bridge_containers(d) -> set[str]:
    return set(json.loads(d.docker("network", "inspect", "docker_gwbridge").stdout)[0]["Containers"])


def test_links_link_local_and_the_gateway_endpoint_released(shared_cluster):
    one = shared_cluster.engines[0]
    one.docker("network", "create", "-d", "overlay", "ov1")
    one.docker("run", "-d", "--name", "web1", "--network", "ov1", "--link-local-ip", "169.254.10.10",
               "busybox", "sleep", "600")
    web1 = one.docker("inspect", "-f", "{{.Id}} {{.NetworkSettings.Networks.ov1.IPAddress}}", "web1").stdout.split()
    assert "169.254.10.10/16" in one.docker("exec", "web1", "ip", "-o", "addr", "show", "eth0").stdout
    # --link on an overlay: the alias answers in the embedded DNS, on that endpoint's network
    out = one.docker("run", "--rm", "--network", "ov1", "--link", "web1:db", "busybox", "nslookup", "db").stdout
    assert web1[1] in out, out

    # the last overlay leaving takes docker_gwbridge's endpoint (and eth1) with it
    assert web1[0] in gateway_bridge_containers(one)
    one.docker("network", "disconnect", "ov1", "web1")
    assert web1[0] not in gateway_bridge_containers(one)
    assert one.docker("exec", "web1", "ls", "/sys/class/net").stdout.split() == ["lo"]
    # and a connect brings both back
    one.docker("network", "connect", "ov1", "web1")
    assert web1[0] in gateway_bridge_containers(one)
    assert one.docker("exec", "web1", "ls", "/sys/class/net").stdout.split() == ["eth0", "eth1", "lo"]
    one.docker("rm", "-f", "web1")
    one.docker("network", "rm", "ov1")
