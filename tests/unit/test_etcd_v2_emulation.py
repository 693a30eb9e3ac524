"""The pure parts of the cluster store's etcd v2 support: which API is chosen, which transaction shapes
v2 can emulate (refused before any request), and when a v2 lease counts as expired. The requests are
replaced here; tests/overlay/test_etcd_v2.py runs the same against a real v2-only etcd."""

from __future__ import annotations

import asyncio

import pytest

from muslin import etcd
from muslin.etcd import Absent, Delete, Present, Put

ENDPOINTS = [etcd.Endpoint.parse("http://192.0.2.1:2379")]  # never reached: requests are replaced


class NoRequests(etcd.EtcdV2Store):
    async def _request(self, *args: object, **kwargs: object) -> etcd._V2Response:
        raise AssertionError(f"a request was made: {args}")


class V3Answering(etcd.EtcdV3Store):
    def __init__(self, failure: etcd.StoreError | None) -> None:
        super().__init__(ENDPOINTS)
        self.failure = failure

    async def get(self, key: str) -> etcd.Entry | None:
        if self.failure is not None:
            raise self.failure
        return None


class V2Answering(etcd.EtcdV2Store):
    def __init__(self, failure: etcd.StoreError | None) -> None:
        super().__init__(ENDPOINTS)
        self.failure = failure

    async def probe(self) -> None:
        if self.failure is not None:
            raise self.failure


def detect(v3_failure: etcd.StoreError | None, v2_failure: etcd.StoreError | None) -> str:
    return asyncio.run(etcd.detect_api(V3Answering(v3_failure), V2Answering(v2_failure))).api


def test_the_v3_gateway_first_then_v2_where_only_it_answers():
    assert detect(None, None) == "v3"
    assert detect(None, etcd.ApiNotServed("no v2")) == "v3"
    assert detect(etcd.ApiNotServed("404 page not found"), None) == "v2"
    with pytest.raises(etcd.StoreRefused, match="neither the v3 JSON gateway nor the v2 API"):
        detect(etcd.ApiNotServed("404"), etcd.ApiNotServed("404"))
    # nobody answering is no answer about the API: the store is unavailable, and asked again later
    with pytest.raises(etcd.StoreUnavailable) as raised:
        detect(etcd.StoreUnavailable("connection refused"), None)
    assert not isinstance(raised.value, etcd.ApiNotServed)


@pytest.mark.parametrize(("compare", "success", "message"), [
    ([Present("/k/net")], [Put("/k/a", b""), Delete("/k/b")], "either writes or deletes"),
    ([Absent("/k/other")], [Put("/k/a", b"")], "absent only by creating it"),
    ([Absent("/k/", prefix=True)], [Put("/k/a", b"")], "absent only by creating it"),
])
def test_shapes_v2_cannot_emulate_are_refused_before_any_request(compare, success, message):
    with pytest.raises(ValueError, match=message):
        asyncio.run(NoRequests(ENDPOINTS).transaction(compare, success))


def test_a_write_under_an_unknown_lease_is_refused_before_any_request():
    with pytest.raises(etcd.StoreRefused, match="lease 3 not found"):
        asyncio.run(NoRequests(ENDPOINTS).transaction([], [Put("/k/a", b"", 3)]))


class Refreshing(etcd.EtcdV2Store):
    """Keys present in ``alive`` refresh; ``deleting`` is deleted by the engine while its refresh runs."""

    def __init__(self, alive: set[str], deleting: str = "") -> None:
        super().__init__(ENDPOINTS)
        self.alive = alive
        self.deleting = deleting
        self.refreshed: list[str] = []

    async def probe(self) -> None:
        return None

    async def _refresh(self, key: str, ttl: int) -> bool:
        self.refreshed.append(key)
        if key == self.deleting:
            for lease in self._leases.values():
                lease.keys.discard(key)
        return key in self.alive


def lease_with(store: Refreshing, keys: list[str]) -> int:
    lease_id = asyncio.run(store.grant(20))
    store._leases[lease_id].keys.update(keys)
    return lease_id


def test_keep_alive_refreshes_every_key_and_a_lost_key_ends_the_lease():
    keys = [f"/k/endpoint/{n}" for n in range(40)]  # more than one batch
    store = Refreshing(set(keys))
    lease_id = lease_with(store, keys)
    assert asyncio.run(store.keep_alive(lease_id)) == 20 and sorted(store.refreshed) == sorted(keys)
    store.alive.discard(keys[5])
    assert asyncio.run(store.keep_alive(lease_id)) == 0
    assert asyncio.run(store.keep_alive(lease_id)) == 0  # over for good: its holder takes a new one
    assert lease_id not in store._leases


def test_a_key_deleted_while_its_refresh_runs_is_no_expiry():
    store = Refreshing({"/k/a"}, deleting="/k/gone")
    lease_id = lease_with(store, ["/k/a", "/k/gone"])
    assert asyncio.run(store.keep_alive(lease_id)) == 20
    assert store._leases[lease_id].keys == {"/k/a"}
