"""The agent's decisions against an in-memory store and a recording backend (pure logic: no kernel, no
firewall, no etcd)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

import pytest

from muslin.fabric import agent as agent_module
from muslin.fabric.agent import Agent, AgentOptions
from muslin.fabric.backends.base import LocalNetwork
from muslin.fabric.config import parse_config
from muslin.fabric.subnets import Lease, LeaseAttrs, SubnetManager, subnet_key
from tests.fabric.memstore import MemoryStore

PREFIX = "/atomic.io/network"
CONFIG = parse_config('{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}')
OURS = LeaseAttrs(IPv4Address("192.0.2.1"), "host-gw")


class RecordingBackend:
    def __init__(self) -> None:
        self.registered: list[Lease] = []
        self.reconciled: list[list[Lease]] = []
        self.closed = False
        self.interrupted = False

    def lease_attrs(self) -> LeaseAttrs:
        return OURS

    def register_network(self, lease: Lease) -> LocalNetwork:
        self.registered.append(lease)
        return LocalNetwork("eth0", 1500)

    def reconcile(self, peers: Iterable[Lease]) -> None:
        self.reconciled.append(list(peers))

    def interrupt(self) -> None:
        self.interrupted = True

    def close(self) -> None:
        raise OSError("device busy")


@pytest.fixture
def agent(tmp_path, monkeypatch):
    monkeypatch.setattr(agent_module.firewall, "apply", lambda spec: None)  # the firewall is not under test
    a = Agent(AgentOptions(endpoints=[], subnet_file=str(tmp_path / "subnet.env")))
    a.store = MemoryStore()
    a.config, a.manager, a.backend = CONFIG, SubnetManager(a.store, PREFIX, lease_ttl=60), RecordingBackend()
    yield a
    a._kernel_thread.shutdown(wait=True)


def test_concurrent_retakes_of_one_lost_lease_take_it_once(agent) -> None:
    async def scenario() -> None:
        await agent._take_lease(None)
        lost = agent.lease
        await agent.store.delete(subnet_key(PREFIX, lost.subnet))
        # The watch, the renewal and the reconcile all notice at once.
        await asyncio.gather(*(agent._retake_lease("gone", lost) for _ in range(3)))
    asyncio.run(scenario())
    assert len(agent.backend.registered) == 2  # the first take and one retake
    assert agent.lease.subnet == agent.backend.registered[0].subnet  # the same subnet, taken back
    assert list(agent.store.data) == [subnet_key(PREFIX, agent.lease.subnet)]


def test_moving_off_a_claimed_subnet_makes_the_claimer_a_peer_at_once(agent) -> None:
    claimer = LeaseAttrs(IPv4Address("192.0.2.9"), "host-gw")

    async def scenario() -> None:
        await agent._take_lease(None)
        await agent._resync()
        claimed = agent.lease
        await agent.store.put(subnet_key(PREFIX, claimed.subnet), claimer.to_json().encode(), 60)
        await agent._retake_lease("claimed", claimed)
    asyncio.run(scenario())
    old = agent.backend.registered[0].subnet
    assert agent.lease.subnet != old
    assert agent.peers[old].attrs == claimer
    assert [p.subnet for p in agent.backend.reconciled[-1]] == [old]


def test_shutdown_runs_every_step_when_one_fails(agent, caplog) -> None:
    closed: list[str] = []

    class Handle:
        def close(self) -> None:
            closed.append("netlink")

    async def close_store() -> None:
        closed.append("etcd")

    agent.ipr = Handle()
    agent.store.close = close_store
    asyncio.run(agent.shutdown())
    assert closed == ["netlink", "etcd"] and agent.backend.interrupted
    assert "closing the backend failed: device busy" in caplog.text


def test_shutdown_does_not_wait_past_its_bound_for_a_stuck_kernel_call(agent, caplog, monkeypatch) -> None:
    monkeypatch.setattr(agent_module, "SHUTDOWN_SECONDS", 1.0)
    stuck = threading.Event()
    agent._kernel_thread.submit(stuck.wait, 30)  # a kernel call that never returns (until the test ends)
    agent.lease = Lease(IPv4Network("10.5.1.0/24"), OURS)
    started = time.monotonic()
    try:
        asyncio.run(agent.shutdown())
        took = time.monotonic() - started
    finally:
        stuck.set()
    assert took < 1.5
    assert "waiting for the running kernel call: not done within 1.0 s" in caplog.text
    assert "removing firewall rules: skipped, no time left" in caplog.text
    assert agent.backend.interrupted
