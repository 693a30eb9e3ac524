"""The engine's locks: state changes run on a pool of worker threads, ordered only where they conflict.

Which lock guards what (taken in this order, never the other way round; a thread holds at most one lock
of each kind, except that a network's create takes the new network's lock before ``network_table``:
nobody can wait for an id that is not recorded yet):

1. ``model`` (shared/exclusive): every state-changing engine call holds it shared (``Engine.call``).
   Exclusive: what must see the model and the kernel still, with nothing half done: the engine's start
   (reconcile, recovery), the firewall guard's full restore (a network's teardown between its read of
   the model and its write would have it put the torn-down rules back), the cluster store's changes
   to global networks (applied in order, one at a time, as before there was a pool).
2. ``images`` (shared/exclusive): container creates read images shared; removing and tagging them is
   exclusive (no container is created from an image being removed). Imports and loads take none: they
   remove nothing, and the image store takes its own lock only to publish what they unpacked (a multi-
   second load must not keep the workers of six `docker run` waiting).
3. ``container_name(name)``: a name between its check and the record that takes it (create, rename):
   of two creates of one name, one wins, the other gets Docker's conflict.
4. ``container(id)``: one state change of a container at a time (start, the handling of its exit,
   stop/kill's marks, connect, disconnect, rename, update, rm). The slow part of a stop (waiting for
   the process) holds no lock at all: it is awaited on the event loop.
5. ``volumes`` (shared/exclusive): a container's create (its mount points) and the removal of its
   anonymous volumes shared; volume create, rm and prune exclusive (a volume in use is never removed).
   Held only around the volume work itself, so a kill's wait in an `rm -f` holds up no volume change.
   ``volume(name)``, under ``volumes`` shared: a named volume a container's create mounts, from its
   lookup to its image content copied in (of two creates mounting one new volume, one makes and fills
   it, the other finds it filled). One at a time: a create takes its mounts' one after the other.
6. ``network_table``: the set of local networks' names, subnets and bridge names, from a create's check
   until its record is committed (two creates never pick one subnet; docker_gwbridge is made once).
7. ``network(id)`` (shared/exclusive): joins of endpoints hold their network shared, from the lookup of
   the network to the endpoint wired (so starts on one network run together); a network's create holds
   it exclusive from its record until its kernel state exists, its removal from the check for endpoints
   until its record is gone. Overlay joins hold it exclusive (the driver's per-network namespace).
8. ``firewall``: every call into the host's Firewall (``SerialFirewall``): its own-commit tracking
   (generation counting) needs its commits one after the other. Held only around a firewall call.
   The overlay encryption's sync lock (``GlobalNetworks``'; its iptables commits go through here too)
   is taken just outside it, inside ``network(id)``.
The store's own lock (its one writing connection, ``Store``) is taken innermost, by the store itself;
reads outside a transaction take none (WAL). IPAM allocates inside a store transaction, so two joins of
one network never get the same address.

Slow runtime work (runc create and start, a stop's wait) runs without any lock others need beyond
``model`` shared and its own container's. Locks are threading locks: they are held on worker threads
only, never across an await of the event loop.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from .firewall import BridgeSpec, Firewall, PortSpec


class SharedExclusiveLock:
    """Many holders in shared mode or one in exclusive mode. A waiting exclusive holder stops new shared
    ones (no starvation of a removal under a stream of starts); not reentrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._exclusive_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._exclusive_waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._exclusive_waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

    def idle(self) -> bool:
        with self._cond:
            return not (self._shared or self._exclusive or self._exclusive_waiting)


class _Keyed:
    """Locks made on first use for a key and dropped once nobody holds or waits for them."""

    def __init__(self, make: type) -> None:
        self._make = make
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[object, int]] = {}

    @contextlib.contextmanager
    def holding(self, key: str) -> Iterator[object]:
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            if lock is None:
                lock = self._make()
            self._locks[key] = (lock, users + 1)
        try:
            yield lock
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class EngineLocks:
    """The engine's locks (see the module's docstring for what each guards and their order)."""

    def __init__(self) -> None:
        self.model = SharedExclusiveLock()
        self.images = SharedExclusiveLock()
        self.volumes = SharedExclusiveLock()
        self.network_table = threading.Lock()
        self.firewall = threading.Lock()
        self._names = _Keyed(threading.Lock)
        self._containers = _Keyed(threading.Lock)
        self._networks = _Keyed(SharedExclusiveLock)
        self._volumes = _Keyed(threading.Lock)

    @contextlib.contextmanager
    def container_name(self, name: str) -> Iterator[None]:
        with self._names.holding(name) as lock, lock:  # type: ignore[attr-defined]
            yield

    @contextlib.contextmanager
    def container(self, cid: str) -> Iterator[None]:
        with self._containers.holding(cid) as lock, lock:  # type: ignore[attr-defined]
            yield

    @contextlib.contextmanager
    def volume(self, name: str) -> Iterator[None]:
        with self._volumes.holding(name) as lock, lock:  # type: ignore[attr-defined]
            yield

    @contextlib.contextmanager
    def network(self, network_id: str, exclusive: bool = False) -> Iterator[None]:
        with self._networks.holding(network_id) as lock:
            assert isinstance(lock, SharedExclusiveLock)
            with lock.exclusive() if exclusive else lock.shared():
                yield

    def held(self) -> int:
        """How many keyed locks exist now (held or waited for): 0 when the engine is idle."""
        return len(self._names) + len(self._containers) + len(self._networks) + len(self._volumes)


class SerialFirewall:
    """A Firewall whose calls run one at a time under the engine's ``firewall`` lock, whatever the
    backend (iptables, nftables): backends track their own commits and assume nobody commits in between."""

    def __init__(self, backend: Firewall, lock: threading.Lock) -> None:
        self.backend = backend
        self._lock = lock

    def intact(self) -> bool:
        with self._lock:
            return self.backend.intact()

    def setup_network(self, spec: BridgeSpec) -> None:
        with self._lock:
            self.backend.setup_network(spec)

    def teardown_network(self, spec: BridgeSpec) -> None:
        with self._lock:
            self.backend.teardown_network(spec)

    def add_port_forwards(self, ports: list[PortSpec]) -> None:
        with self._lock:
            self.backend.add_port_forwards(ports)

    def remove_port_forwards(self, ports: list[PortSpec]) -> None:
        with self._lock:
            self.backend.remove_port_forwards(ports)

    def remove_rules_naming(self, ifname: str) -> None:
        with self._lock:
            self.backend.remove_rules_naming(ifname)

    def remove_legacy_rules(self, networks: list[BridgeSpec]) -> None:
        with self._lock:
            self.backend.remove_legacy_rules(networks)

    def ensure(self, networks: list[BridgeSpec], ports: list[PortSpec]) -> int:
        with self._lock:
            return self.backend.ensure(networks, ports)

    def commit_beside(self, commit: Callable[[], object], commits: int) -> None:
        with self._lock:
            self.backend.commit_beside(commit, commits)

    def close(self) -> None:
        with self._lock:
            self.backend.close()
