"""The cluster store: dockerd's ``--cluster-store etcd://...`` (pre-swarm), over etcd's v3 API or its v2.

dockerd 20.10 kept its global networks, their address allocations and every engine's endpoints in a
key-value store named by ``--cluster-store`` and announced itself with ``--cluster-advertise``. This
module is the connection: the flags parsed into a typed config, and a small synchronous face over the
project's asynchronous etcd client (``muslin.etcd``, which the fabric's agent uses too) for the
engine's worker thread.

Which API is found when etcd first answers: the v3 JSON gateway if it does, else v2 (the article's etcd
may serve only that, as dockerd 20.10's libkv spoke it). The engine does not know which: on v2 the
client emulates v3's transactions and leases (``muslin.etcd.EtcdV2Store``), and the log says which one
is in use.

The client lives on an event loop of its own, in a thread of its own: the engine's worker blocks on a
call for at most its timeout, and the watch that keeps the engine in step with the other engines runs
there without touching the API's loop. The engine holds one lease of its own (``discovery.ttl``,
renewed every ``discovery.heartbeat``): its endpoints and addresses are written with it, so they go
away with an engine that dies, and an engine that lost its lease (etcd was away longer than the TTL)
takes a new one and writes them again (``on_new_lease``). On v2 the lease is TTL keys refreshed every
heartbeat.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from muslin import etcd
from muslin.etcd import Absent, Delete, Present
from muslin.errors import EngineError, InvalidArgument

log = logging.getLogger(__name__)
T = TypeVar("T")

# Not dockerd's "docker": our records are not libnetwork's, and dockerd 20.10 panics listing networks
# when it meets ours under its prefix (and we would have to skip its records). Sharing an etcd with
# dockerd then just works; a user who wants the old paths names the prefix.
DEFAULT_PREFIX = "muslin"
DEFAULT_TTL = 20  # seconds; dockerd's discovery.ttl defaulted to 60, too long for a lab to watch
DEFAULT_HEARTBEAT = 5
STORE_OPTS = ("kv.cacertfile", "kv.certfile", "kv.keyfile", "discovery.ttl", "discovery.heartbeat")


class StoreUnavailable(EngineError):
    """No member of the cluster store answered: the engine's global state cannot change now."""

    status = 503


class StoreRefused(EngineError):
    """The cluster store answered but refused (TLS, permissions)."""


class WatchCompacted(RuntimeError):
    """The watch's start revision is compacted away: list again."""


@dataclass(frozen=True)
class StoreAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ClusterConfig:
    """``--cluster-store``, ``--cluster-advertise`` and ``--cluster-store-opt``, checked."""

    url: str  # as given, for docker info
    members: tuple[StoreAddress, ...]
    prefix: str  # keys live under /<prefix>/network/v1.0/
    advertise: str  # as given: IFACE:PORT or IP:PORT
    cacertfile: str = ""
    certfile: str = ""
    keyfile: str = ""
    ttl: int = DEFAULT_TTL
    heartbeat: int = DEFAULT_HEARTBEAT

    @property
    def advertise_host(self) -> str:
        return self.advertise.rpartition(":")[0]

    @property
    def tls(self) -> bool:
        return bool(self.cacertfile or self.certfile or self.keyfile)


def parse_cluster_config(store: str, advertise: str, opts: list[str]) -> ClusterConfig:
    """dockerd's three flags; ValueError says what is wrong with which."""
    parts = urllib.parse.urlsplit(store)
    if parts.scheme != "etcd":
        raise ValueError(f"--cluster-store {store!r}: only etcd://host:port[,host:port...][/prefix] is supported")
    members = []
    for item in parts.netloc.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--cluster-store {store!r}: {item!r} is not host:port")
        members.append(StoreAddress(host.strip("[]"), int(port)))
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if not advertise:
        raise ValueError("--cluster-advertise is required with --cluster-store (IFACE:PORT or IP:PORT)")
    host, sep, port = advertise.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--cluster-advertise {advertise!r}: expected IFACE:PORT or IP:PORT, like eth0:2376")
    values: dict[str, str] = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or key not in STORE_OPTS:
            raise ValueError(f"--cluster-store-opt {opt!r}: expected one of {', '.join(o + '=' for o in STORE_OPTS)}")
        values[key] = value
    ttl = _seconds(values.get("discovery.ttl"), DEFAULT_TTL, "discovery.ttl")
    heartbeat = _seconds(values.get("discovery.heartbeat"), DEFAULT_HEARTBEAT, "discovery.heartbeat")
    if heartbeat >= ttl:
        raise ValueError(f"--cluster-store-opt discovery.heartbeat ({heartbeat}s) must be shorter than "
                         f"discovery.ttl ({ttl}s)")
    return ClusterConfig(url=store, members=tuple(members), prefix=prefix, advertise=advertise,
                         cacertfile=values.get("kv.cacertfile", ""), certfile=values.get("kv.certfile", ""),
                         keyfile=values.get("kv.keyfile", ""), ttl=ttl, heartbeat=heartbeat)


def _seconds(text: str | None, default: int, what: str) -> int:
    if text is None:
        return default
    value = text.removesuffix("s")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--cluster-store-opt {what}={text}: expected a number of seconds, like 20s")
    return int(value)


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class Change:
    kind: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    leased: bool = False  # under the engine's lease: gone when the engine is


class ClusterStore:
    """etcd for the engine: synchronous calls from any thread (each member tried once, for etcd's call
    timeout), the engine's own lease kept alive, and watches run on the store's loop."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.root = f"/{config.prefix}/network/v1.0/"
        scheme = "https" if config.tls else "http"
        tls = etcd.TlsFiles(config.cacertfile or None, config.certfile or None, config.keyfile or None)
        endpoints = [etcd.Endpoint(scheme, m.host, m.port) for m in config.members]
        try:
            self._candidates = (etcd.EtcdV3Store(endpoints, tls), etcd.EtcdV2Store(endpoints, tls))
        except OSError as exc:
            raise InvalidArgument(f"--cluster-store-opt: cannot use {exc.filename}: {exc.strerror}") from None
        self._etcd: etcd.ClusterKeyValueStore | None = None  # the API etcd serves, once it answered
        self._connecting: asyncio.Lock | None = None
        self.lease_id = 0
        self.on_new_lease: Callable[[], None] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cluster-store", daemon=True)
        self._thread.start()

    # -- plumbing ---------------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the store's loop and wait for it (from another thread), at most ``timeout``
        seconds (default: long enough for every member to be tried once); past it the coroutine is
        cancelled and the store counts as unavailable."""
        if timeout is None:
            timeout = (etcd.CALL_TIMEOUT + 2) * (len(self.config.members) + 1)
        future = asyncio.run_coroutine_threadsafe(self._call(coro), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StoreUnavailable(f"the cluster store {self.config.url} did not answer within {timeout:g}s") from None

    def run_detached(self, coro: Coroutine[Any, Any, object], what: str) -> concurrent.futures.Future[object]:
        """Run a coroutine on the store's loop without waiting for it; its failure is logged (as
        ``what``), for work that the periodic listing finishes anyway if this attempt fails."""
        def report(done: concurrent.futures.Future[object]) -> None:
            if done.cancelled():
                return
            exc = done.exception()
            if isinstance(exc, EngineError):
                log.warning("%s: %s (the next listing of the store does it)", what, exc.message)
            elif exc is not None:
                log.error("%s failed", what, exc_info=exc)

        future = asyncio.run_coroutine_threadsafe(self._call(coro), self._loop)
        future.add_done_callback(report)
        return future

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop)  # ended by close()

    async def _kv(self) -> etcd.ClusterKeyValueStore:
        """The store in the API etcd serves, found at the first call that reaches it."""
        if self._etcd is None:
            if self._connecting is None:
                self._connecting = asyncio.Lock()
            async with self._connecting:
                if self._etcd is None:
                    found = await etcd.detect_api(*self._candidates)
                    log.info("cluster store %s speaks etcd's %s API%s", self.config.url, found.api,
                             "" if found.api == "v3" else " (its v3 JSON gateway does not answer)")
                    self._etcd = found
        return self._etcd

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """etcd's errors as the engine's: a Docker-style message naming the cluster store."""
        try:
            return await coro
        except etcd.StoreUnavailable as exc:
            raise StoreUnavailable(f"the cluster store {self.config.url} is unreachable: {exc}") from None
        except etcd.StoreError as exc:
            raise StoreRefused(f"the cluster store {self.config.url} refused the request: {exc}") from None

    # -- key-value operations -------------------------------------------------------------------------
    def get(self, key: str) -> KeyValue | None:
        return self.run(self.get_async(key))

    def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under prefix, and the store's revision they were read at."""
        return self.run(self.list_async(prefix))

    async def list_async(self, prefix: str) -> tuple[list[KeyValue], int]:
        """``list`` for coroutines on the store's own loop."""
        entries, revision = await self._call(self._list(prefix))
        return [KeyValue(e.key, e.value, e.revision) for e in entries], revision

    def transaction(self, compares: list[Absent | Present], operations: list[Put | Delete]) -> bool:
        """All operations if every compare holds, else none; whether they were done."""
        return self.run(self.transaction_async(compares, operations))

    async def transaction_async(self, compares: list[Absent | Present], operations: list[Put | Delete]) -> bool:
        """``transaction`` for coroutines on the store's own loop."""
        ops = self._operations(operations)
        return await self._call(self._transaction(list(compares), ops))

    async def get_async(self, key: str) -> KeyValue | None:
        """``get`` for coroutines on the store's own loop."""
        entry = await self._call(self._get(key))
        return None if entry is None else KeyValue(entry.key, entry.value, entry.revision)

    async def _get(self, key: str) -> etcd.Entry | None:
        return await (await self._kv()).get(key)

    async def _list(self, prefix: str) -> tuple[list[etcd.Entry], int]:
        return await (await self._kv()).list(prefix)

    async def _transaction(self, compares: list[etcd.Compare], ops: list[etcd.Operation]) -> bool:
        return await (await self._kv()).transaction(compares, ops)

    def _operations(self, operations: list[Put | Delete]) -> list[etcd.Operation]:
        ops: list[etcd.Operation] = []
        for op in operations:
            if isinstance(op, Put):
                if op.leased and not self.lease_id:
                    raise StoreUnavailable(f"the cluster store {self.config.url} granted no lease yet")
                ops.append(etcd.Put(op.key, op.value, self.lease_id if op.leased else 0))
            else:
                ops.append(op)
        return ops

    def put(self, key: str, value: bytes, leased: bool = False) -> None:
        self.transaction([], [Put(key, value, leased)])

    async def watch(self, prefix: str, start_revision: int, timeout: float) -> AsyncIterator[Change]:
        """Changes under prefix from start_revision on, for at most ``timeout`` seconds (then the
        caller lists again: the periodic reconcile). Raises StoreUnavailable or WatchCompacted."""
        try:
            kv = await self._kv()
        except etcd.StoreError as exc:
            raise StoreUnavailable(f"the cluster store's watch cannot start: {exc}") from exc
        events = kv.watch(prefix, start_revision)
        deadline = self._loop.time() + timeout
        try:
            while (left := deadline - self._loop.time()) > 0:
                try:
                    ev = await asyncio.wait_for(events.__anext__(), left)
                except (asyncio.TimeoutError, StopAsyncIteration):
                    return
                yield Change(ev.kind, ev.key, ev.value or b"", ev.revision)
        except etcd.WatchResync as exc:
            raise WatchCompacted(str(exc)) from exc
        except etcd.StoreError as exc:
            raise StoreUnavailable(f"the cluster store's watch broke: {exc}") from exc
        finally:
            await events.aclose()

    # -- the engine's lease ---------------------------------------------------------------------------
    def start_lease(self) -> None:
        """Grant the lease now if etcd answers (else the keeper grants it when it does), then keep it."""
        try:
            self.run(self._grant())
        except StoreUnavailable as exc:
            log.warning("%s; global networks wait for it", exc.message)
        self.spawn(self._keep_lease())

    async def _grant(self) -> None:
        self.lease_id = await self._call(self._grant_lease())
        log.info("cluster store %s: lease %x (ttl %ds)", self.config.url, self.lease_id, self.config.ttl)

    async def _grant_lease(self) -> int:
        return await (await self._kv()).grant(self.config.ttl)

    async def _keep_alive(self) -> int:
        return await (await self._kv()).keep_alive(self.lease_id)

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat if self.lease_id else 1)
            try:
                if self.lease_id:
                    if await self._call(self._keep_alive()) > 0:
                        continue
                    log.warning("cluster store lease %x expired: granting a new one", self.lease_id)
                await self._grant()
            except (StoreUnavailable, StoreRefused) as exc:
                log.debug("lease keep-alive: %s", exc.message)
                continue
            if self.on_new_lease is not None:
                self.on_new_lease()

    def close(self) -> None:
        """Stop the watches and the keeper; the lease is left to expire (an engine that stops keeps its
        containers running, and a restart within the TTL finds its records where they were)."""
        async def shutdown() -> None:
            # Every task of the loop (the watches, the keeper and calls in flight) ends before it stops:
            # one still unwinding (a long poll's connection being closed) would find the loop closed.
            running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running, timeout=2)
            for candidate in self._candidates:  # the one found, and the other that detection tried
                await candidate.close()
        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(3)
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(3)
