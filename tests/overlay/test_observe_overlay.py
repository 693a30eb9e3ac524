"""`muslin topo` and `muslin trace` over two engines sharing an overlay network: each host's overlay
namespace (br0, vxlan0, the containers' veths, the remote endpoints, the docker_gwbridge leg) as the
kernels hold it, and a real probe followed from a container on one host to one on the other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from muslin.kernel import nftrace

from .test_cluster_store import SHOWS_UP, listed

MUSLIN = str(Path(sys.executable).with_name("muslin"))


def muslin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MUSLIN, *args], capture_output=True, text=True, timeout=60)


def test_topology_and_trace_across_an_overlay(shared_cluster, tmp_path):
    from muslin.lab.rig import wait_for

    cluster = shared_cluster
    one, two = cluster.engines
    node1, node2 = (str(h.address) for h in cluster.underlay.hosts)
    one.docker("network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "ov1")
    wait_for(lambda: listed(two, "ov1"), SHOWS_UP, "ov1 on the second engine")
    one.docker("run", "-d", "--name", "a1", "--network", "ov1", "busybox", "sleep", "600")
    two.docker("run", "-d", "--name", "b2", "--network", "ov1", "busybox", "httpd", "-f", "-p", "80")
    engines = ["-H", f"node1=unix://{one.sock}", "-H", f"node2=unix://{two.sock}"]
    # the other engine's endpoint reaches node1's fdb through etcd's watch
    wait_for(lambda: "10.0.9.3" in muslin("topo", *engines).stdout.split("remote endpoints")[1], SHOWS_UP,
             "b2 among node1's remote endpoints")

    topo = muslin("topo", *engines, "--format", "json")
    assert topo.returncode == 0, topo.stderr
    hosts = {h["name"]: h for h in json.loads(topo.stdout)["hosts"]}
    assert set(hosts) == {"node1", "node2"}
    (ov,) = hosts["node1"]["overlays"]
    assert ov["network"] == "ov1" and ov["bridge"] == "br0" and ov["mtu"] == 1450
    assert ov["vxlan"]["name"] == "vxlan0" and ov["vxlan"]["vni"] >= 4096 and ov["vxlan"]["port"] == 4789
    assert ov["vxlan"]["local"] == node1 and ov["vxlan"]["underlay"] == "eth0"
    assert [(p["container"], p["ifname"], p["address"]) for p in ov["ports"]] == [("a1", "eth0", "10.0.9.2/24")]
    b2_mac = json.loads(two.docker("inspect", "b2").stdout)[0]["NetworkSettings"]["Networks"]["ov1"]["MacAddress"]
    assert ov["peers"] == [{"vtep": node2, "mac": b2_mac, "address": "10.0.9.3"}]
    assert hosts["node2"]["overlays"][0]["id"] == ov["id"]
    (a1,) = hosts["node1"]["containers"]
    legs = {e["network"]: e for e in a1["endpoints"]}
    assert legs["ov1"]["overlay"] == "ov1" and legs["ov1"]["host_ifname"] == ov["ports"][0]["name"]
    assert legs["docker_gwbridge"]["bridge"] == "docker_gwbridge" and legs["docker_gwbridge"]["gateway"]

    text = muslin("topo", *engines).stdout
    assert f"vxlan vxlan0 VNI {ov['vxlan']['vni']} UDP 4789 local {node1} (socket on node1's eth0) mtu 1450" in text
    assert f"{node2} (node2): {b2_mac} 10.0.9.3" in text
    assert "egress and published ports: docker_gwbridge" in text
    svg = muslin("topo", *engines, "--format", "svg", "-o", str(tmp_path / "t.svg"))
    assert svg.returncode == 0, svg.stderr
    drawing = (tmp_path / "t.svg").read_text()
    for drawn in ('id="overlay/node1/ov1"', 'id="bridge/node2/ov1/br0"', 'id="tunnel/node1/ov1/vxlan0"'):
        assert drawn in drawing

    traced = muslin("trace", *engines, "a1", "b2", "--tcp", "80", "--format", "json")
    assert traced.returncode == 0, traced.stdout + traced.stderr
    result = json.loads(traced.stdout)
    where = [h["where"] for h in result["hops"]]
    assert where == ["a1", "overlay ov1 on node1", "node1 (outer packet)", "node2 (outer packet)",
                     "overlay ov1 on node2", "b2"], where
    steps = [s["text"] for h in result["hops"] for s in h["steps"]]
    assert any(s.startswith(f"br0 → vxlan0: 10.0.9.3 is {b2_mac}") and f"dst {node2} (node2)" in s for s in steps)
    assert any(f"outer udp {node1}:" in s and f"→ {node2}:4789" in s for s in steps)
    assert any(s.startswith(f"came in by vxlan0: VXLAN VNI {ov['vxlan']['vni']} from VTEP {node1}") for s in steps)
    assert result["path"] == ["container/node1/a1", "bridge/node1/ov1/br0", "tunnel/node1/ov1/vxlan0",
                              "iface/node1/eth0", "iface/node2/eth0", "tunnel/node2/ov1/vxlan0",
                              "bridge/node2/ov1/br0", "container/node2/b2"]

    back = muslin("trace", *engines, "b2", "a1")  # ICMP, the other way
    assert back.returncode == 0 and "ARRIVED: arrived at a1 (10.0.9.2)" in back.stdout, back.stdout + back.stderr
    # every namespace the trace marked, the overlays' included, is clean again
    namespaces = [h["netns"] for h in hosts.values()] + [h["overlays"][0]["netns"] for h in hosts.values()]
    assert not [t for ns in namespaces for t in nftrace.trace_tables(ns)]
