"""The engine: one object that owns the store, the daemon's configuration and the services.

State changes of the model (networks, endpoints, container records, ports) run on a pool of worker
threads, so independent requests proceed together (two containers starting on different networks, a
network created while a container starts) and the event loop stays free for streams while netlink,
iptables and runc work. What conflicts is ordered by the locks of ``locks`` (their rules are there):
every call holds the ``model`` lock shared; the engine's start, the firewall guard's full restore and
the cluster store's changes hold it exclusive. Process-level calls into the runtime (stop, attach,
exec) go straight to the container's shim, which serialises them itself.

Netlink handles are per thread (pyroute2's are not to be shared, and close on the thread that opened
them): each worker opens its own into the daemon's namespace on first use, and ``close`` has each
worker close its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from muslin.errors import EngineError
from muslin.kernel import libnftables, netns
from muslin.runtime import ImageStore, Runtime

from . import firewall_choice
from .config import DaemonConfig
from .containers import ContainerService, Recovery
from .dns_service import DNSService
from .execs import ExecService
from .files import FileService
from .firewall import Firewall, IptablesFirewall
from .global_networks import ClusterJob
from .guard import FirewallGuard
from .locks import EngineLocks, SerialFirewall
from .networks import NetworkService
from .nft_firewall import NftablesFirewall
from .store import Store
from .volumes import VolumeService

log = logging.getLogger(__name__)
T = TypeVar("T")
DATA_ROOT_MODE = 0o710
EXEC_ROOT_MODE = 0o700
# Worker threads for state changes: enough that runc, iptables-restore and netlink waits of concurrent
# requests overlap. More is not better: their Python work competes with the event loop for the
# interpreter lock, and reads (`docker ps`, `network ls`) answered on the loop wait longer (50 clients,
# 2 cores: 8 workers no faster than 6, 4 somewhat slower for 8 CLI clients; reads quicker with fewer).
WORKERS = 6
CLOSE_WAIT = 30  # seconds that close waits for every worker to be free to close its netlink handle


def open_firewall(config: DaemonConfig) -> Firewall | None:
    """The host firewall of ``--firewall-backend`` (by default nftables where it can work, see
    ``firewall_choice``), none with ``--iptables=false`` (as dockerd, that flag covers both backends)."""
    if not config.iptables:
        return None
    try:
        choice = firewall_choice.choose(config.firewall_backend)
    except ValueError as exc:  # refused at start, as dockerd's "Failed to find nft tool"
        raise EngineError(str(exc)) from None
    log.info("firewall backend %s (%s)", choice.backend, choice.reason)
    if choice.warning:
        log.warning("%s", choice.warning)
    if choice.backend == firewall_choice.NFTABLES:
        try:
            return NftablesFirewall()
        except libnftables.Unavailable as exc:
            raise EngineError(f"firewall-backend is set to nftables: {exc}") from None
    return IptablesFirewall()


class Engine:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        # As dockerd's: the data root (every container's environment, the database) and the exec root are
        # root's alone; set at every start, so a root made by an older version is closed too.
        for root, mode in ((config.data_root, DATA_ROOT_MODE), (config.exec_root, EXEC_ROOT_MODE)):
            root.mkdir(parents=True, exist_ok=True)
            root.chmod(mode)
        self.store = Store(config.data_root)
        self.locks = EngineLocks()
        backend = open_firewall(config)
        self.firewall = SerialFirewall(backend, self.locks.firewall) if backend is not None else None
        self._workers = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="engine")
        # The cluster store's changes to global networks: applied in order, on a thread of their own.
        self._cluster_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-cluster")
        self.networks = NetworkService(self.store, config, self.firewall, self._submit_in_order, self.locks)
        self.images = ImageStore(config.data_root / "images")
        # The pins' directory is a mount before the shims' mount namespace is copied without it (see Runtime).
        netns.ensure_pin_directory(str(config.sandbox_root))
        self.runtime = Runtime(config.data_root / "runtime", config.exec_root / "runtime", self.images,
                               pin_dirs=(config.sandbox_root,))
        self.dns = DNSService(self.store, self.networks.get, self.networks.remote_endpoints)
        self.volumes = VolumeService(self.store, config.data_root, lambda: self.containers.volume_users(), self.locks)
        self.containers = ContainerService(self.store, config, self.networks, self.images, self.runtime, self.dns,
                                           self.call, self.volumes, self.locks)
        self.execs = ExecService(self.containers, self.runtime)
        self.files = FileService(self.containers, self.runtime)
        self.guard = FirewallGuard(self._restore_firewall_on_worker) if self.firewall else None
        self._recovery: Recovery | None = None
        self._following: asyncio.Task | None = None

    async def start(self) -> None:
        """Everything the API's first answer must reflect: the kernel reconciled, containers that died
        while muslind was away settled, restart policies applied (as dockerd, before it serves)."""
        self.containers.loop = self.dns.loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        self._recovery = await asyncio.wrap_future(self._workers.submit(self._exclusively, self._start))
        await self.containers.restart_after_daemon_start(self._recovery)
        if self.guard:
            self.guard.start()
        log.info("engine ready in %.2f s (%d containers running, %d stopped)", time.perf_counter() - t0,
                 len(self._recovery.running), len(self._recovery.stopped))

    def follow_running(self) -> None:
        """Once the API answers: watch the exits of the containers that kept running (a shim round trip
        each, in the background) and serve their DNS."""
        assert self._recovery is not None
        self._following = asyncio.ensure_future(self.containers.follow_running(self._recovery))
        self._recovery = None

    def _start(self) -> Recovery:
        steps = [time.perf_counter()]
        self.images.ensure_busybox()
        broken = self.networks.start()
        steps.append(time.perf_counter())
        recovery = self.containers.recover(broken)
        steps.append(time.perf_counter())
        if self.firewall:
            # Every network's and published port's rules in one transaction (what a reload while muslind
            # was away removed comes back), rather than a read and a write of the ruleset for each.
            self.firewall.ensure(self.networks.firewall_specs(),
                                 self.containers.published_port_specs([c for c, _ in recovery.running]))
        steps.append(time.perf_counter())
        log.info("start: networks %.2f s, containers %.2f s, firewall %.2f s",
                 *(b - a for a, b in zip(steps, steps[1:])))
        return recovery

    def remove_image(self, ref: str, force: bool) -> list[dict[str, str]]:
        """Under the images lock, so no container can be created from the image between check and removal."""
        with self.locks.images.exclusive():
            return self.images.remove(ref, force, self.runtime.images_in_use())

    def change_images(self, fn: Callable[..., T], *args: object) -> T:
        """An image store change (a tag): none while a container create reads the images. Imports and
        loads need no such lock (they remove nothing a create could be reading; ImageStore orders them)."""
        with self.locks.images.exclusive():
            return fn(*args)

    def restore_firewall(self) -> int:
        """Put back any missing rule of the networks and published ports; how many that was. When only
        muslind has committed since its rules were last complete, there is nothing to look for (the
        guard is woken by muslind's own commits too). Otherwise the model is held still while its rules
        are read and written: a network torn down in between would get its rules back."""
        assert self.firewall is not None
        if self.firewall.intact():
            return 0
        with self.locks.model.exclusive():
            if self.firewall.intact():
                return 0
            return self.firewall.ensure(self.networks.firewall_specs(), self.containers.published_port_specs())

    async def _restore_firewall_on_worker(self) -> int:
        return await asyncio.wrap_future(self._workers.submit(self.restore_firewall))

    async def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run a state-changing engine call on a worker thread, holding the model lock shared (``fn``
        takes the finer locks it needs)."""
        return await asyncio.wrap_future(self._workers.submit(self._shared, functools.partial(fn, *args, **kwargs)))

    def _shared(self, fn: Callable[[], T]) -> T:
        with self.locks.model.shared():
            return fn()

    def _exclusively(self, fn: Callable[[], T]) -> T:
        with self.locks.model.exclusive():
            return fn()

    def _submit_in_order(self, fn: ClusterJob) -> Future[None]:
        """For the global networks: their changes one after the other, each with the model still; the
        writes to the cluster store that a change returns run after it on the same lane, without the
        model lock (they touch no local state, and a slow etcd would hold up every other state change)."""
        return self._cluster_lane.submit(self._exclusively_then_writes, fn)

    def _exclusively_then_writes(self, fn: ClusterJob) -> None:
        writes = self._exclusively(fn)
        if writes is not None:
            writes()

    def close(self) -> None:
        if self._following is not None:
            self._following.cancel()
        if self.guard:
            self.guard.close()
        # Queued state changes finish first (the cluster store's: dropped once it is closed, below).
        # The netlink handles close on the thread that opened them (pyroute2 keeps an event loop per
        # thread, which only that thread's close releases): a job on each worker at once, each one
        # waiting for the others so that no worker runs two of them.
        if self.networks.global_networks is not None:
            self.networks.global_networks.close()
        self._cluster_lane.submit(self.networks.close_thread_handles).result()
        self._cluster_lane.shutdown(wait=True)
        everyone = threading.Barrier(WORKERS)

        def close_own() -> None:
            everyone.wait(timeout=CLOSE_WAIT)
            self.networks.close_thread_handles()

        failed = 0
        for done in [self._workers.submit(close_own) for _ in range(WORKERS)]:
            try:
                done.result()
            except threading.BrokenBarrierError:
                failed += 1
            except Exception:  # noqa: BLE001 - the firewall, runtime and store below close whatever happens
                failed += 1
                log.exception("closing a worker's netlink handle failed")
        if failed:
            # A worker still busy (or failing): its handle is left to the process's exit, the rest closes.
            log.warning("%d of %d workers' netlink handles not closed (a worker still busy %d s into close?)",
                        failed, WORKERS, CLOSE_WAIT)
        self._workers.shutdown(wait=True)
        if self.firewall:
            self.firewall.close()
        self.runtime.close()
        self.store.close()
