"""The etcd client's v2 emulation of what the cluster store needs (transactions, leases, watch resync),
against a real etcd 3.4 that serves only v2 over HTTP (--enable-v2, its v3 JSON gateway off)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from muslin import etcd
from muslin.etcd import Absent, Delete, Present, Put
from muslin.kernel import netns
from muslin.lab import topology
from muslin.lab.etcd import EtcdCluster
from muslin.lab.topology import Underlay

T = TypeVar("T")
ROOT = "/muslin/network/v1.0/"


@dataclass
class V2Etcd:
    underlay: Underlay
    cluster: EtcdCluster

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run on this thread, in the etcd host's namespace (the client's sockets are made there)."""
        with netns.entered(self.underlay.hosts[0].netns):
            return asyncio.run(asyncio.wait_for(coro, 60))

    def stores(self) -> tuple[etcd.EtcdV3Store, etcd.EtcdV2Store]:
        endpoints = [etcd.Endpoint.parse(self.cluster.endpoints[0])]
        return etcd.EtcdV3Store(endpoints), etcd.EtcdV2Store(endpoints)


@pytest.fixture
def v2_etcd() -> Iterator[V2Etcd]:
    prefix = f"ev{uuid.uuid4().hex[:5]}"
    workdir = tempfile.mkdtemp(prefix=f"muslin-{prefix}-")
    try:
        underlay = topology.create(prefix, 1)
        cluster = EtcdCluster(underlay.hosts, f"{workdir}/etcd", v3_gateway=False)
        try:
            cluster.start()
            yield V2Etcd(underlay, cluster)
        finally:
            cluster.stop()
    finally:
        topology.teardown(prefix)
        shutil.rmtree(workdir, ignore_errors=True)
    assert topology.names(prefix) == []


def test_detect_api_picks_v2_where_the_v3_gateway_does_not_answer(v2_etcd: V2Etcd):
    async def main() -> str:
        v3, v2 = v2_etcd.stores()
        with pytest.raises(etcd.ApiNotServed, match="does not serve the v3 JSON gateway"):
            await v3.get("/")
        return (await etcd.detect_api(v3, v2)).api

    assert v2_etcd.run(main()) == "v2"


def test_claims_are_all_or_nothing_and_guards_undo_their_writes(v2_etcd: V2Etcd):
    async def main() -> None:
        _, store = v2_etcd.stores()
        net, name, vni = ROOT + "network/n1", ROOT + "name/ov1", ROOT + "vni/4096"
        # a create claims name and VNI atomically; the network record goes last, and stays for good
        assert await store.transaction([Absent(name), Absent(vni)],
                                       [Put(net, b"doc"), Put(name, b"n1"), Put(vni, b"n1")])
        nodes = {e.key: e for e in (await store.list(ROOT))[0]}
        assert set(nodes) == {net, name, vni} and not any(e.expires for e in nodes.values())
        # a second create of the same name loses, and leaves nothing of its own behind (its VNI claim)
        assert not await store.transaction([Absent(ROOT + "vni/4097"), Absent(name)],
                                           [Put(ROOT + "network/n2", b"doc2"), Put(name, b"n2"),
                                            Put(ROOT + "vni/4097", b"n2")])
        assert set(e.key for e in (await store.list(ROOT))[0]) == {net, name, vni}
        assert (await store.get(name)).value == b"n1"

        # an address taken under a lease, guarded by its network being there
        lease = await store.grant(30)
        address, endpoint = ROOT + "address/n1/10.0.0.2", ROOT + "endpoint/n1/e1"
        assert await store.transaction([Present(net), Absent(address)],
                                       [Put(address, b"e1", lease), Put(endpoint, b"{}", lease)])
        assert (await store.get(address)).expires and (await store.get(endpoint)).expires
        assert not await store.transaction([Present(net), Absent(address)],
                                           [Put(address, b"e2", lease), Put(ROOT + "endpoint/n1/e2", b"{}", lease)])
        assert await store.get(ROOT + "endpoint/n1/e2") is None
        # on a network that is not there: nothing written
        assert not await store.transaction([Present(ROOT + "network/n9"), Absent(ROOT + "address/n9/10.0.0.2")],
                                           [Put(ROOT + "address/n9/10.0.0.2", b"e3", lease),
                                            Put(ROOT + "endpoint/n9/e3", b"{}", lease)])
        assert (await store.list(ROOT + "endpoint/n9/"))[0] == []
        # a remover's fence on the network keeps writers out while it is there
        fence = etcd.V2_FENCE_ROOT + net
        assert await store.create(fence, b"", 30)
        assert not await store.transaction([Present(net)], [Put(ROOT + "endpoint/n1/e4", b"{}", lease)])
        assert await store.get(ROOT + "endpoint/n1/e4") is None
        await store.delete(fence)

        # removal refused while an endpoint is there, done once it left; its fences are gone after
        removal = [Delete(net), Delete(name), Delete(vni)]
        assert not await store.transaction([Absent(ROOT + "endpoint/n1/", prefix=True)], removal)
        assert await store.get(net) is not None
        await store.transaction([], [Delete(endpoint), Delete(address)])
        assert await store.transaction([Absent(ROOT + "endpoint/n1/", prefix=True)], removal)
        assert [e.key for e in (await store.list(ROOT))[0]] == []
        assert (await store.list(etcd.V2_FENCE_ROOT))[0] == []

    v2_etcd.run(main())


def test_racing_claims_have_one_winner_and_the_losers_leave_nothing(v2_etcd: V2Etcd):
    """What engines allocating at once do on v2 (test_faults.py runs that scenario on v3 only): several
    clients, each with its own store as an engine has, claim at the same moment one network name (each with
    a VNI of its own) and then one address of a network; each time exactly one wins, and no loser's write
    stays behind, not even the provisional ones of claims it had won before losing another."""
    racers = 6

    async def main() -> None:
        stores = [v2_etcd.stores()[1] for _ in range(racers)]
        created = await asyncio.gather(*(
            # each claims its own VNI first (and wins it), then the name: a loser has a claim to undo
            store.transaction([Absent(f"{ROOT}vni/{4096 + i}"), Absent(ROOT + "name/ov1")],
                              [Put(f"{ROOT}network/n{i}", b"doc"), Put(f"{ROOT}vni/{4096 + i}", f"n{i}".encode()),
                               Put(ROOT + "name/ov1", f"n{i}".encode())])
            for i, store in enumerate(stores)))
        assert created.count(True) == 1, created
        winner = created.index(True)
        keys = {e.key: e.value for e in (await stores[0].list(ROOT))[0]}
        assert keys == {f"{ROOT}network/n{winner}": b"doc", ROOT + "name/ov1": f"n{winner}".encode(),
                        f"{ROOT}vni/{4096 + winner}": f"n{winner}".encode()}, keys
        assert not any(e.expires for e in (await stores[0].list(ROOT))[0])  # kept for good, not provisional

        net, address = f"{ROOT}network/n{winner}", f"{ROOT}address/n{winner}/10.0.0.2"
        leases = [await store.grant(30) for store in stores]
        taken = await asyncio.gather(*(
            store.transaction([Present(net), Absent(address)],
                              [Put(address, f"e{i}".encode(), lease),
                               Put(f"{ROOT}endpoint/n{winner}/e{i}", b"{}", lease)])
            for i, (store, lease) in enumerate(zip(stores, leases))))
        assert taken.count(True) == 1, taken
        holder = taken.index(True)
        assert (await stores[0].get(address)).value == f"e{holder}".encode()
        endpoints = [e.key for e in (await stores[0].list(f"{ROOT}endpoint/n{winner}/"))[0]]
        assert endpoints == [f"{ROOT}endpoint/n{winner}/e{holder}"]

    v2_etcd.run(main())


def test_shapes_v2_cannot_do_are_refused_before_anything_is_written(v2_etcd: V2Etcd):
    async def main() -> None:
        _, store = v2_etcd.stores()
        with pytest.raises(ValueError, match="either writes or deletes"):
            await store.transaction([Present(ROOT + "a")], [Put(ROOT + "b", b""), Delete(ROOT + "c")])
        with pytest.raises(ValueError, match="absent only by creating it"):
            await store.transaction([Absent(ROOT + "a")], [Put(ROOT + "b", b"")])
        with pytest.raises(etcd.StoreRefused, match="lease 7 not found"):
            await store.transaction([], [Put(ROOT + "b", b"", 7)])
        assert (await store.list(ROOT))[0] == []

    v2_etcd.run(main())


def test_a_lease_is_ttl_keys_refreshed_together_and_over_when_one_expired(v2_etcd: V2Etcd):
    async def main() -> None:
        _, store = v2_etcd.stores()
        lease = await store.grant(3)
        await store.transaction([], [Put(ROOT + "engine/me", b"192.0.2.1", lease), Put(ROOT + "endpoint/n/e", b"", lease)])
        root, index = await store.list(ROOT)
        events = store.watch(ROOT, index + 1)
        waiting = asyncio.ensure_future(anext(events))
        for _ in range(4):  # 4 s of refreshes every second: longer than the TTL, and no watcher woken
            await asyncio.sleep(1)
            assert await store.keep_alive(lease) == 3
        assert not waiting.done()
        # a key deleted on purpose is no expiry
        await store.delete(ROOT + "endpoint/n/e")
        deleted = await asyncio.wait_for(waiting, 5)
        assert (deleted.kind, deleted.key) == ("delete", ROOT + "endpoint/n/e")
        assert await store.keep_alive(lease) == 3
        # unrefreshed past its TTL (an engine that died, or etcd away that long), the key expires
        await asyncio.sleep(4.5)
        expired = await asyncio.wait_for(anext(events), 5)
        assert (expired.kind, expired.key) == ("delete", ROOT + "engine/me")
        await events.aclose()
        assert await store.keep_alive(lease) == 0  # and the lease is over: its holder writes them again
        with pytest.raises(etcd.StoreRefused):
            await store.transaction([], [Put(ROOT + "engine/me", b"192.0.2.1", lease)])

    v2_etcd.run(main())


def test_a_watch_from_a_cleared_index_asks_for_a_resync(v2_etcd: V2Etcd):
    async def main() -> None:
        _, store = v2_etcd.stores()
        _, index = await store.list(ROOT)
        # v2 keeps the last 1000 events: more than that later, the old index is gone
        for start in range(0, 1100, 50):
            await asyncio.gather(*(store.put(f"{ROOT}subnet/{n}", b"x", None) for n in range(start, start + 50)))
        with pytest.raises(etcd.WatchResync, match="401"):
            await anext(store.watch(ROOT, index + 1))
        # the resync: list again, and watch from there
        _, index = await store.list(ROOT)
        events = store.watch(ROOT, index + 1)
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.2)
        await store.put(ROOT + "network/n1", b"doc", None)
        event = await asyncio.wait_for(waiting, 5)
        await events.aclose()
        assert (event.kind, event.key, event.value) == ("put", ROOT + "network/n1", b"doc")

    v2_etcd.run(main())
