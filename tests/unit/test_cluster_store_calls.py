"""The cluster store's calls from the engine's worker: a wait past its bound is the store's 503 error,
and the coroutine behind it does not keep running."""

from __future__ import annotations

import asyncio
import threading

import pytest

from muslin.engine.cluster_store import ClusterStore, StoreUnavailable, parse_cluster_config


@pytest.fixture
def store():
    # nothing listens there: no call in these tests reaches the network
    s = ClusterStore(parse_cluster_config("etcd://127.0.0.1:9", "127.0.0.1:2376", []))
    yield s
    s.close()


def test_a_call_past_its_timeout_is_store_unavailable_and_cancelled(store: ClusterStore):
    cancelled = threading.Event()

    async def never_answers() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(StoreUnavailable) as raised:
        store.run(never_answers(), timeout=0.2)
    assert raised.value.status == 503 and "did not answer within 0.2s" in raised.value.message
    assert cancelled.wait(5), "the coroutine still runs on the store's loop"


def test_detached_run_reports_its_result_without_being_waited_for(store: ClusterStore):
    started = threading.Event()

    async def work() -> str:
        started.set()
        return "done"

    future = store.run_detached(work(), what="a test's work")
    assert future.result(5) == "done" and started.is_set()
