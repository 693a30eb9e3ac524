"""The engine's locks (engine/locks.py): what may hold them together, what waits, in which order."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from muslin.engine.firewall import BridgeSpec, PortSpec
from muslin.engine.locks import EngineLocks, SerialFirewall, SharedExclusiveLock

BOUND = 10.0  # seconds: only ever reached when the behaviour is wrong


def test_shared_holders_hold_together() -> None:
    lock = SharedExclusiveLock()
    inside = threading.Barrier(3, timeout=BOUND)  # broken unless all three are inside at once

    def hold() -> None:
        with lock.shared():
            inside.wait()

    with ThreadPoolExecutor(3) as pool:
        for fut in [pool.submit(hold) for _ in range(3)]:
            fut.result()
    assert lock.idle()


def test_exclusive_waits_for_shared_and_new_shared_wait_for_a_waiting_exclusive() -> None:
    """A removal waiting for the starts under way goes before starts that come after it."""
    lock = SharedExclusiveLock()
    order: list[str] = []
    release_first = threading.Event()
    first_in = threading.Event()

    def first_shared() -> None:
        with lock.shared():
            first_in.set()
            release_first.wait(BOUND)
            order.append("first")

    def exclusive() -> None:
        with lock.exclusive():
            order.append("exclusive")

    def later_shared() -> None:
        with lock.shared():
            order.append("later")

    with ThreadPoolExecutor(3) as pool:
        a = pool.submit(first_shared)
        assert first_in.wait(BOUND)
        b = pool.submit(exclusive)
        while not lock._exclusive_waiting:  # noqa: SLF001 - the waiting writer is what this test is about
            threading.Event().wait(0.01)
        c = pool.submit(later_shared)
        release_first.set()
        for fut in (a, b, c):
            fut.result(BOUND)
    assert order == ["first", "exclusive", "later"]
    assert lock.idle()


def test_keyed_locks_order_one_key_and_leave_nothing_behind() -> None:
    locks = EngineLocks()
    counter = {"inside": 0, "most": 0}
    guard = threading.Lock()

    def change(cid: str) -> None:
        with locks.container(cid):
            with guard:
                counter["inside"] += 1
                counter["most"] = max(counter["most"], counter["inside"])
            threading.Event().wait(0.001)
            with guard:
                counter["inside"] -= 1

    with ThreadPoolExecutor(8) as pool:
        for fut in [pool.submit(change, "same") for _ in range(40)]:
            fut.result(BOUND)
    assert counter["most"] == 1
    # Different keys do not exclude each other: both are held at once.
    both = threading.Barrier(2, timeout=BOUND)

    def hold(key: str) -> None:
        with locks.container(key):
            both.wait()

    with ThreadPoolExecutor(2) as pool:
        for fut in [pool.submit(hold, k) for k in ("a", "b")]:
            fut.result(BOUND)
    assert locks.held() == 0


def test_a_network_removal_excludes_its_joins_only() -> None:
    locks = EngineLocks()
    with locks.network("n1", exclusive=True):
        joined_other = threading.Event()

        def join_other() -> None:
            with locks.network("n2"):
                joined_other.set()

        threading.Thread(target=join_other).start()
        assert joined_other.wait(BOUND)
    assert locks.held() == 0


class RecordingFirewall:
    """Counts calls in flight at once (the real backends assume one at a time)."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self._guard = threading.Lock()

    def _call(self) -> None:
        with self._guard:
            self.inside += 1
            self.most = max(self.most, self.inside)
        threading.Event().wait(0.001)
        with self._guard:
            self.inside -= 1

    def intact(self) -> bool:
        self._call()
        return True

    def setup_network(self, spec: BridgeSpec) -> None:
        self._call()

    def teardown_network(self, spec: BridgeSpec) -> None:
        self._call()

    def add_port_forwards(self, ports: list[PortSpec]) -> None:
        self._call()

    def remove_port_forwards(self, ports: list[PortSpec]) -> None:
        self._call()

    def remove_rules_naming(self, ifname: str) -> None:
        self._call()

    def remove_legacy_rules(self, networks: list[BridgeSpec]) -> None:
        self._call()

    def ensure(self, networks: list[BridgeSpec], ports: list[PortSpec]) -> int:
        self._call()
        return 0

    def close(self) -> None:
        self._call()


def test_firewall_calls_run_one_at_a_time() -> None:
    backend = RecordingFirewall()
    firewall = SerialFirewall(backend, EngineLocks().firewall)
    work = [lambda: firewall.add_port_forwards([]), lambda: firewall.remove_port_forwards([]),
            lambda: firewall.ensure([], []), firewall.intact]
    with ThreadPoolExecutor(8) as pool:
        for fut in [pool.submit(work[i % len(work)]) for i in range(40)]:
            fut.result(BOUND)
    assert backend.most == 1
