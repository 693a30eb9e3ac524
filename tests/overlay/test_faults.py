"""Stage 6: etcd away, an engine that dies and comes back, three engines allocating at once.

Only etcd away runs on v2 too: there the engines' TTL keys run out while etcd is down, and the v2 lease
emulation (muslin/etcd.py's EtcdV2Store.keep_alive) must notice, grant anew and rewrite them. The other two
run on v3 only, because what differs on v2 in them is asserted elsewhere on a real v2-only etcd: a dead
engine's keys expiring by their TTL and the watch reporting them deleted by
test_etcd_v2.py::test_a_lease_is_ttl_keys_refreshed_together_and_over_when_one_expired (and an engine
starting on v2, as the restart does, by every v2 scenario of test_cluster_store.py); claims racing for one
key (prevExist=false, exactly one winner, the losers' writes undone) by
test_etcd_v2.py::test_racing_claims_have_one_winner_and_the_losers_leave_nothing. What is left of them (the
engines' allocation, retry and fdb upkeep above the store) does not depend on the store's API."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from muslin.kernel import link, neighbour, netns
from muslin.lab.rig import wait_for

from .conftest import TTL
from .test_cluster_store import listed


def fdb_macs(cluster, i: int, net_id: str) -> set[str]:
    """The MACs engine i's vxlan of the network (in the network's namespace) forwards to other engines."""
    with netns.iproute(str(cluster.engines[i].root / "run" / "overlay" / net_id[:12])) as ipr:
        index = link.index_of(ipr, "vxlan0")
        return set() if index is None else {mac for mac, _ in neighbour.fdb_entries(ipr, index)}


def mac_of(d, name: str, net: str) -> str:
    return d.docker("inspect", "-f", f"{{{{.NetworkSettings.Networks.{net}.MacAddress}}}}", name).stdout.strip()


def endpoint_names(cluster) -> list[str]:
    return sorted(json.loads(v)["name"] for v in cluster.records("/muslin/network/v1.0/endpoint/").values())


def ping(d, target: str, net: str = "ov1") -> bool:
    return d.docker("run", "--rm", "--network", net, "busybox", "ping", "-c1", "-W2", target,
                    check=False).returncode == 0


def test_etcd_away_existing_containers_keep_talking_then_catch_up(make_cluster, etcd_api):
    cluster = make_cluster(2, etcd_api)
    one, two = cluster.engines
    net_id = one.docker("network", "create", "-d", "overlay", "ov1").stdout.strip()
    wait_for(lambda: listed(two, "ov1"), 30, "ov1 on the second engine")
    one.docker("run", "-d", "--name", "aa", "--network", "ov1", "busybox", "sleep", "600")
    one.docker("run", "-d", "--name", "bb", "--network", "ov1", "busybox", "sleep", "600")
    two.docker("run", "-d", "--name", "cc", "--network", "ov1", "busybox", "sleep", "600")
    mac_a, mac_b = mac_of(one, "aa", "ov1"), mac_of(one, "bb", "ov1")
    wait_for(lambda: mac_b in fdb_macs(cluster, 1, net_id), 30, "b's MAC in node2's fdb")

    cluster.etcd.stop()
    stopped = time.monotonic()
    try:
        # the data path stands without etcd
        assert two.docker("exec", "cc", "ping", "-c1", "-W2", "aa").returncode == 0
        # changes that need the cluster store fail, and say why
        refused = two.docker("network", "create", "-d", "overlay", "ov2", check=False)
        assert refused.returncode != 0 and "cluster store" in refused.stderr and "unreachable" in refused.stderr
        # a container leaving meanwhile: gone locally now, from the store once it is back
        one.docker("rm", "-f", "bb")
        # a new endpoint needs an address from the store: refused with the store's error (503), not a 500
        joining = two.docker("run", "-d", "--name", "dd", "--network", "ov1", "busybox", "sleep", "600", check=False)
        assert joining.returncode != 0 and "cluster store" in joining.stderr, joining.stderr
        assert "Traceback" not in two.log()
        two.docker("rm", "-f", "dd")
        # away longer than the engines' TTL: on v2 their records' TTLs run out meanwhile
        time.sleep(max(0.0, stopped + TTL + 1 - time.monotonic()))
    finally:
        cluster.etcd.start()
    wait_for(lambda: mac_b not in fdb_macs(cluster, 1, net_id), 30, "node2 to drop b's fdb entry after etcd is back")
    # the running containers' records are in the store again (rewritten where they had expired)
    wait_for(lambda: endpoint_names(cluster) == ["aa", "cc"], 30, "aa's and cc's records back in the store")
    # On v2 aa's record expired while etcd was away: node2 saw it go (and dropped aa's entries) and then
    # come back when node1 wrote it again; v3 keeps the lease, and aa's entries stay.
    wait_for(lambda: mac_a in fdb_macs(cluster, 1, net_id), 30, "aa's MAC in node2's fdb")
    assert two.docker("exec", "cc", "ping", "-c1", "-W2", "aa").returncode == 0
    if etcd_api == "v2":  # they had expired: v3's leases are extended when etcd starts, v2's TTLs are not
        assert all("expired: granting a new one" in d.log() for d in (one, two))
    two.docker("network", "create", "-d", "overlay", "ov2")
    wait_for(lambda: listed(one, "ov2"), 30, "ov2 on the first engine")


def test_dead_engine_expires_and_restart_reconciles(make_cluster):
    cluster = make_cluster(2)
    one, two = cluster.engines
    net_id = one.docker("network", "create", "-d", "overlay", "ov1").stdout.strip()
    wait_for(lambda: listed(two, "ov1"), 30, "ov1 on the second engine")
    one.docker("run", "-d", "--name", "web1", "--network", "ov1", "busybox", "sleep", "600")
    mac = mac_of(one, "web1", "ov1")
    wait_for(lambda: mac in fdb_macs(cluster, 1, net_id), 30, "web1's MAC in node2's fdb")

    one.stop(signal.SIGKILL)  # the container keeps running; the engine's lease runs out
    wait_for(lambda: mac not in fdb_macs(cluster, 1, net_id), TTL + 30, "node2 to drop the dead engine's endpoint")
    assert not ping(two, "web1")  # its name is gone too
    # a network made while node1's engine is away is there when it comes back, and so is web1
    two.docker("network", "create", "-d", "overlay", "ov2")
    one = cluster.start_engine(0)
    assert listed(one, "ov2") is not None
    wait_for(lambda: mac in fdb_macs(cluster, 1, net_id), 30, "web1 published again after the restart")
    assert ping(two, "web1")


def test_three_engines_allocate_unique_addresses_at_once(make_cluster):
    cluster = make_cluster(3)
    one, two, three = cluster.engines
    one.docker("network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "ov1")
    for d in (two, three):
        wait_for(lambda d=d: listed(d, "ov1"), 30, "ov1 everywhere")

    def run(job: tuple[int, int]) -> str:
        engine, n = job
        d = cluster.engines[engine]
        d.docker("run", "-d", "--name", f"c{engine}{n}", "--network", "ov1", "busybox", "sleep", "600", timeout=60)
        return d.docker("inspect", "-f", "{{.NetworkSettings.Networks.ov1.IPAddress}}", f"c{engine}{n}").stdout.strip()

    with ThreadPoolExecutor(6) as pool:
        addresses = list(pool.map(run, [(e, n) for n in range(3) for e in range(3)]))
    assert len(set(addresses)) == 9, addresses
    records = [json.loads(v) for v in cluster.records("/muslin/network/v1.0/endpoint/").values()]
    assert sorted(r["address"].split("/")[0] for r in records) == sorted(addresses)
    # every engine reaches the others' containers
    assert three.docker("exec", "c22", "ping", "-c1", "-W2", "c02").returncode == 0
    assert one.docker("exec", "c00", "ping", "-c1", "-W2", "c12").returncode == 0
