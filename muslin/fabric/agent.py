"""The agent: wires the subnet manager (etcd) to a backend (kernel) and keeps them in agreement.

One task watches the lease table from the last seen revision + 1; one renews our lease; one reconciles
kernel state and firewall rules against the table periodically (and right after any watch error), so a
lost event or a hand-deleted route heals. Kernel calls run on one worker thread (``worker.KernelThread``),
because pyroute2's synchronous handle runs an event loop of its own and must not share ours.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING, TypeVar, cast

from pyroute2 import IPRoute

from muslin.fabric import bgppeers, files, firewall
from muslin.fabric.backends import make_backend
from muslin.fabric.backends.base import Backend, ExternalInterface, LocalNetwork
from muslin.fabric.config import ConfigError, NetworkConfig, parse_config
from muslin.etcd import (Credentials, Endpoint, KeyValueStore, StoreError, TlsFiles, WatchResync,
                                find_config_store)
from muslin.fabric.subnets import DEFAULT_LEASE_TTL, Lease, LeaseAttrs, LeaseEvent, NetworkExhausted, SubnetManager
from muslin.fabric.worker import KernelThread
from muslin.kernel import address, link, route

if TYPE_CHECKING:  # loaded by make_backend only for backend bgp (BIRD's modules are no cost to the others)
    from muslin.fabric.backends.bgp import BgpBackend

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_SECONDS = 1.0
FULL_RESYNC_EVERY = 12  # reconcile rounds between full re-lists of the lease table
# From stop to exit, at most: what supervisors give before SIGKILL is 10 s or more (docker stop, kubelet's
# 30 s, systemd's 90 s), and the tests wait 15 s. The steps' own bounds are in shutdown().
SHUTDOWN_SECONDS = 9.0


class AgentError(RuntimeError):
    """The agent cannot start; the message says what was not done."""


class _StopRequested(Exception):
    """Stop was asked for before the agent finished starting."""


@dataclass
class AgentOptions:
    endpoints: list[Endpoint]
    prefix: str = "/coreos.com/network"
    etcd_api: str = "auto"
    tls: TlsFiles = field(default_factory=TlsFiles)
    auth: Credentials = field(default_factory=Credentials)
    ifaces: list[str] = field(default_factory=list)
    iface_regexes: list[str] = field(default_factory=list)
    iface_can_reach: IPv4Address | None = None
    public_ip: IPv4Address | None = None
    subnet_file: str = files.DEFAULT_SUBNET_FILE
    docker_opts_file: str | None = None
    renew_margin_minutes: int = 60
    lease_ttl: int = DEFAULT_LEASE_TTL
    ip_masq: bool = False
    iptables_resync: float = 5.0
    forward_rules: bool = True
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0
    bird_dir: str | None = None  # None: "bird" next to the subnet file
    bgp_poll: float = 1.0  # seconds between looks at the BGP sessions' state

    @property
    def state_dir(self) -> str:
        return self.bird_dir or os.path.join(os.path.dirname(os.path.abspath(self.subnet_file)), "bird")


def find_external_interface(ipr: IPRoute, ifaces: list[str], public_ip: IPv4Address | None,
                            iface_regexes: list[str] | None = None,
                            can_reach: IPv4Address | None = None) -> ExternalInterface:
    """The underlay interface, in flanneld's order: the first --iface (name or address) that exists, else
    the first interface whose address or name matches an --iface-regex, else the one the route to
    --iface-can-reach leaves by. With none of those given: the interface holding --public-ip, else the
    default route's."""
    addresses = address.ipv4_addresses(ipr)
    chosen = _by_spec(ipr, addresses, ifaces) or _by_regex(ipr, addresses, iface_regexes or [])
    if chosen is None and can_reach is not None:
        chosen = _by_route(addresses, route.route_source(ipr, can_reach)[1])
    if ifaces or iface_regexes or can_reach is not None:
        if chosen is None:
            given = [*(f"--iface {i}" for i in ifaces), *(f"--iface-regex {r}" for r in iface_regexes or []),
                     *([f"--iface-can-reach {can_reach}"] if can_reach else [])]
            raise AgentError(f"no interface matches {', '.join(given)}; no lease was taken")
    elif public_ip is not None:
        chosen = _by_spec(ipr, addresses, [str(public_ip)])
        if chosen is None:
            raise AgentError(f"no interface holds --public-ip {public_ip}: pass --iface; no lease was taken")
    else:
        # The route the kernel picks for an address no more specific route covers is the default route;
        # asking for one (rather than listing routes for 0.0.0.0/0) also honours policy rules and metrics.
        # Not 255.255.255.255: the limited broadcast address is answered from the local table instead.
        chosen = _by_route(addresses, route.route_source(ipr, IPv4Address("255.255.255.254"))[1])
        if chosen is None:
            raise AgentError("no --iface given and no default route to pick an interface by: pass --iface")
    index, ip = chosen
    found = link.link_by_index(ipr, index)
    return ExternalInterface(found.name, index, ip, public_ip or ip, found.mtu)


def _by_spec(ipr: IPRoute, addresses: list[address.AddressInfo],
             specs: list[str]) -> tuple[int, IPv4Address] | None:
    for spec in specs:
        try:
            wanted = IPv4Address(spec)
        except ValueError:
            found = link.find_link(ipr, spec)
            if found is None:
                log.warning("--iface %s: no such interface here", spec)
                continue
            mine = [a.address.ip for a in addresses if a.index == found.index]
            if not mine:
                log.warning("--iface %s has no IPv4 address", spec)
                continue
            return found.index, mine[0]
        holders = [a.index for a in addresses if a.address.ip == wanted]
        if holders:
            return holders[0], wanted
        log.warning("--iface %s: no interface holds that address", spec)
    return None


def _by_regex(ipr: IPRoute, addresses: list[address.AddressInfo],
              patterns: list[str]) -> tuple[int, IPv4Address] | None:
    for pattern in patterns:
        regex = re.compile(pattern)
        for held in sorted(addresses, key=lambda a: (a.index, a.address)):
            if regex.search(str(held.address.ip)) or regex.search(link.link_by_index(ipr, held.index).name):
                return held.index, held.address.ip
    return None


def _by_route(addresses: list[address.AddressInfo], oif: int | None) -> tuple[int, IPv4Address] | None:
    mine = [a.address.ip for a in addresses if a.index == oif]
    return (oif, mine[0]) if oif is not None and mine else None


def previous_subnet(subnet_file: str, network: IPv4Network) -> IPv4Network | None:
    """The subnet a previous run wrote to the subnet file, if it belongs to this network."""
    try:
        env = files.parse_subnet_env(files.read_subnet_env(subnet_file))
    except (OSError, ValueError):
        return None
    return env.subnet.network if env.network == network else None


class Agent:
    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self._kernel_thread = KernelThread()
        self.ipr: IPRoute | None = None
        self.store: KeyValueStore | None = None
        self.manager: SubnetManager | None = None
        self.config: NetworkConfig | None = None
        self.backend: Backend | None = None
        self.ext: ExternalInterface | None = None
        self.lease: Lease | None = None
        self.local: LocalNetwork | None = None
        self.peers: dict[IPv4Network, Lease] = {}  # changed only between awaits, so no lock guards it
        self.revision = 0
        # Held by whatever reads or changes our lease and what hangs off it (take, renew, install, register):
        # the watch, renew and reconcile tasks would otherwise interleave at every await.
        self._lease_lock = asyncio.Lock()

    async def _kernel(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._kernel_thread, fn, *args)

    # ------------------------------------------------------------------------------------------ startup

    async def _wait_for_config(self, stop: asyncio.Event) -> NetworkConfig:
        key = f"{self.options.prefix.rstrip('/')}/config"
        waited = False
        while not stop.is_set():
            try:
                store, entry = await find_config_store(self.options.endpoints, self.options.tls,
                                                       self.options.etcd_api, key, self.options.auth)
            except StoreError as exc:
                log.error("cannot read the network config: %s; retrying", exc)
                await _sleep_or_stop(stop, RETRY_SECONDS)
                continue
            if entry is None:
                if not waited:
                    log.info("waiting for the network config at %s (etcd API: %s)", key, self.options.etcd_api)
                    waited = True
                await store.close()
                await _sleep_or_stop(stop, RETRY_SECONDS)
                continue
            try:
                config = parse_config(entry.value)
            except ConfigError as exc:
                log.error("%s; nothing was set up, waiting for a corrected %s", exc, key)
                await store.close()
                await _sleep_or_stop(stop, 5 * RETRY_SECONDS)
                continue
            self.store = store
            log.info("network config read from the etcd %s keyspace at %s: Network %s, SubnetLen %d, "
                     "SubnetMin %s, SubnetMax %s, backend %s%s", store.api, key, config.network,
                     config.subnet_len, config.subnet_min, config.subnet_max, config.backend.type,
                     "" if config.backend.explicit else " (no Backend in the config: udp, flanneld's default)")
            return config
        raise _StopRequested

    async def _take_lease(self, previous: IPv4Network | None) -> None:
        assert self.manager and self.config and self.backend
        attrs = await self._kernel(self.backend.lease_attrs)
        self.lease = await self.manager.acquire(self.config, attrs, previous)
        await self._install_lease()

    async def _install_lease(self) -> None:
        assert self.backend and self.lease and self.config
        self.local = await self._kernel(self.backend.register_network, self.lease)
        first = IPv4Interface(f"{self.lease.subnet[1]}/{self.lease.subnet.prefixlen}")
        env = files.SubnetEnv(self.config.network, first, self.local.mtu, self.options.ip_masq)
        docker_opts = self.options.docker_opts_file or files.docker_opts_path_for(self.options.subnet_file)
        files.write_subnet_files(env, self.options.subnet_file, docker_opts)
        await self._kernel(firewall.apply, self._firewall_spec())
        log.info("lease %s on %s (%s, MTU %d); wrote %s", self.lease.subnet, self.lease.attrs.public_ip,
                 self.local.device, self.local.mtu, self.options.subnet_file)

    def _set_peers(self, leases: list[Lease], revision: int) -> None:
        """Every listed lease but ours is a peer (unless events newer than the listing were applied)."""
        assert self.lease
        if revision >= self.revision:
            self.peers = {p.subnet: p for p in leases if p.subnet != self.lease.subnet}
            self.revision = revision

    def _firewall_spec(self) -> firewall.FirewallSpec:
        assert self.config and self.lease
        return firewall.FirewallSpec(self.config.network, self.lease.subnet, self.options.ip_masq,
                                     self.options.forward_rules)

    async def start(self, stop: asyncio.Event) -> None:
        self.ipr = await self._kernel(IPRoute)
        self.ext = await self._kernel(find_external_interface, self.ipr, self.options.ifaces, self.options.public_ip,
                                      self.options.iface_regexes, self.options.iface_can_reach)
        log.info("using interface %s (%s), public IP %s", self.ext.name, self.ext.address, self.ext.public_ip)
        self.config = await self._wait_for_config(stop)
        assert self.store
        self.manager = SubnetManager(self.store, self.options.prefix, self.options.lease_ttl)
        self.backend = await self._kernel(make_backend, self.config, self.ext, self.ipr, self.options.state_dir)
        previous = previous_subnet(self.options.subnet_file, self.config.network)
        while True:
            try:
                await self._take_lease(previous)
                await self._resync(just_installed=True)
                return
            except NetworkExhausted as exc:
                raise AgentError(str(exc)) from exc
            except StoreError as exc:
                log.error("cannot lease a subnet: %s; retrying", exc)
            await _sleep_or_stop(stop, RETRY_SECONDS)
            if stop.is_set():
                raise _StopRequested

    # ------------------------------------------------------------------------------------------ loops

    async def _resync(self, just_installed: bool = False) -> None:
        """Re-list the lease table and make the kernel match it. just_installed: our lease, device, address
        and firewall were set up a moment ago (at start), so only the peers need programming."""
        assert self.manager and self.lease and self.backend
        lease = self.lease
        leases, revision = await self.manager.list_leases()
        self._set_peers(leases, revision)
        if not any(p.subnet == lease.subnet and p.attrs.public_ip == lease.attrs.public_ip for p in leases):
            await self._retake_lease("our lease is gone from etcd", lease)
        elif just_installed:
            await self._kernel(self.backend.reconcile, list(self.peers.values()))
            return
        await self._reconcile_kernel()

    async def _reconcile_kernel(self) -> None:
        assert self.backend and self.manager
        lost = False
        async with self._lease_lock:
            lease = self.lease
            assert lease
            attrs: LeaseAttrs = await self._kernel(self.backend.lease_attrs)
            if attrs == lease.attrs:
                await self._kernel(self.backend.register_network, lease)
            else:
                # The device was recreated (new VtepMAC) or the address changed: publish what peers need now.
                log.warning("lease attributes changed (%s); republishing", attrs.to_json())
                renewed = await self.manager.renew(lease, attrs)
                lost = renewed is None
                if renewed is not None:
                    self.lease = renewed
                    await self._install_lease()  # registers the network with the new lease
            if not lost:
                await self._kernel(self.backend.reconcile, list(self.peers.values()))
                await self._kernel(firewall.apply, self._firewall_spec())
                return
        # Not ours any more (the lock is released first: retaking takes it).
        await self._retake_lease("our lease changed before we could republish it", lease)

    async def _retake_lease(self, why: str, stale: Lease) -> None:
        """Take our lease back, or a new one, unless another task already replaced the stale lease."""
        assert self.manager and self.backend
        async with self._lease_lock:
            if self.lease is not stale:
                return
            old = stale.subnet
            log.warning("%s: taking lease %s back (or a new one)", why, old)
            await self._take_lease(old)
            assert self.lease
            if self.lease.subnet == old:
                return
            log.warning("subnet changed from %s to %s; containers must be restarted on the new one",
                        old, self.lease.subnet)
            # Whoever holds our old subnet now (and any peer we knew at our new one) must be seen at once,
            # not at the next full re-list: list again and reconcile against the fresh table.
            leases, revision = await self.manager.list_leases()
            self._set_peers(leases, max(revision, self.revision))
            await self._kernel(self.backend.reconcile, list(self.peers.values()))

    async def _apply_event(self, event: LeaseEvent) -> None:
        assert self.backend and self.lease
        if event.subnet == self.lease.subnet:
            if event.kind == "removed":
                await self._retake_lease("our lease was deleted or expired", self.lease)
            elif event.lease and event.lease.attrs.public_ip != self.lease.attrs.public_ip:
                await self._retake_lease(f"our subnet is now claimed by {event.lease.attrs.public_ip}", self.lease)
            return
        old = self.peers.pop(event.subnet, None)
        if event.lease is not None:
            self.peers[event.subnet] = event.lease
        if event.kind == "removed":
            if old is not None:
                log.info("peer %s (%s) left", event.subnet, old.attrs.public_ip)
                await self._kernel(self.backend.remove_peer, old)
            return
        assert event.lease is not None
        if old is not None and old.attrs != event.lease.attrs:
            await self._kernel(self.backend.remove_peer, old)
        if old is None or old.attrs != event.lease.attrs:
            log.info("peer %s at %s", event.subnet, event.lease.attrs.public_ip)
        await self._kernel(self.backend.add_peer, event.lease)

    async def _watch_loop(self) -> None:
        assert self.manager
        while True:
            try:
                async for event in self.manager.watch(self.revision + 1):
                    # Recorded before the event is applied: if applying fails, the reconcile that follows
                    # re-lists the whole table, so the event is not lost; resuming the watch at it again
                    # would instead replay a failing event forever.
                    self.revision = max(self.revision, event.revision)
                    await self._apply_event(event)
            except asyncio.CancelledError:
                raise
            except WatchResync as exc:
                log.warning("watch cannot resume (%s); re-listing leases", exc)
            except Exception as exc:
                log.error("lease watch failed: %s; reconciling and watching again", exc)
                await asyncio.sleep(RETRY_SECONDS)
            await self._resync_safely()

    async def _resync_safely(self) -> None:
        try:
            await self._resync()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("reconcile failed: %s; retrying", exc)

    async def _reconcile_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(self.options.iptables_resync)
            rounds += 1
            if rounds % FULL_RESYNC_EVERY == 0:
                await self._resync_safely()
                continue
            try:
                await self._reconcile_kernel()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("reconcile failed: %s; re-listing leases", exc)
                await self._resync_safely()

    def renew_delay(self) -> float:
        ttl = self.options.lease_ttl
        margin = self.options.renew_margin_minutes * 60
        return ttl - margin if margin < ttl else ttl / 2

    async def _renew_loop(self) -> None:
        assert self.manager
        delay = self.renew_delay()
        while True:
            await asyncio.sleep(delay)
            try:
                async with self._lease_lock:
                    lease = self.lease
                    assert lease
                    renewed = await self.manager.renew(lease)  # only if etcd still names us
                    if renewed is not None:
                        self.lease = renewed
                        log.info("renewed lease %s", renewed.subnet)
                if renewed is None:
                    await self._retake_lease("our lease vanished or was claimed before renewal", lease)
                delay = self.renew_delay()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("lease renewal failed: %s; retrying", exc)
                delay = min(60.0, self.renew_delay() / 4)

    async def _bgp_resources_loop(self, backend: BgpBackend) -> None:
        """Keep the bgp backend's peers and reflectors equal to ``<prefix>/bgp/`` (no restart needed)."""
        assert self.store
        while True:
            try:
                resources, revision = await bgppeers.load(self.store, self.options.prefix)
                await self._kernel(backend.set_resources, resources)
                async for revision in bgppeers.changes(self.store, self.options.prefix, revision + 1):
                    resources, _ = await bgppeers.load(self.store, self.options.prefix)
                    await self._kernel(backend.set_resources, resources)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("BGP peers watch failed: %s; reading them again", exc)
                await asyncio.sleep(RETRY_SECONDS)

    async def _bgp_sessions_loop(self, backend: BgpBackend) -> None:
        while True:
            try:
                await self._kernel(backend.log_session_changes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a look at the sessions failing must not stop the agent
                log.error("reading the BGP sessions failed: %s", exc)
            await asyncio.sleep(self.options.bgp_poll)

    async def _serve_healthz(self) -> asyncio.AbstractServer | None:
        if not self.options.healthz_port:
            return None

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                request = await asyncio.wait_for(reader.readline(), 5)
                while (await asyncio.wait_for(reader.readline(), 5)).strip():
                    pass
                ok = request.split(b" ")[1:2] == [b"/healthz"]
                body = b"ok\n" if ok else b"not found\n"
                writer.write(b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (b"200 OK" if ok else b"404 Not Found", len(body), body))
                await writer.drain()
            except (OSError, asyncio.TimeoutError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(handle, self.options.healthz_ip, self.options.healthz_port)

    async def run(self, stop: asyncio.Event) -> None:
        """Start, serve until stop is set, then shut down cleanly (firewall rules removed, lease kept)."""
        tasks: list[asyncio.Task] = []
        server = None
        try:
            try:
                # Stop also cuts a start short: it may wait on etcd (a call per member, 6 s each) or on BIRD.
                await _unless_stopped(stop, self.start(stop))
            except _StopRequested:
                return
            server = await self._serve_healthz()
            loops = [self._watch_loop(), self._renew_loop(), self._reconcile_loop()]
            if self.backend is not None and self.backend.type == "bgp":
                bgp = cast("BgpBackend", self.backend)
                loops += [self._bgp_resources_loop(bgp), self._bgp_sessions_loop(bgp)]
            tasks = [asyncio.create_task(coro) for coro in loops]
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for task in done:
                if task is not stopper and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            # Cancelling the loops also cancels their kernel calls still queued; the one running goes on.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if server is not None:
                server.close()
            await self.shutdown()

    async def shutdown(self) -> None:
        """Undo what dies with the agent, within SHUTDOWN_SECONDS whatever BIRD, etcd or the kernel do; every
        step runs even when an earlier one failed or ran out of time.

        In this order: the backend is interrupted first, from a thread of its own, because the kernel thread may
        be waiting on BIRD (5 s for a control command, 10 s for a start) and every later step queues behind
        that wait; then the kernel thread gets a moment to finish its call; then the firewall, the backend
        (a BIRD that does not answer is stopped and its leftovers removed) and the netlink socket, on the kernel
        thread; etcd last (nothing to send: the lease stays). Bounds: interrupt 5 s (BIRD's probe 2 s, its
        stop 1.5 s, a SIGKILL 1 s), drain 2 s, each later step what is left of SHUTDOWN_SECONDS, at most 3 s.
        A call still stuck on the kernel thread is abandoned: the thread is a daemon, and exit does not wait.
        """
        deadline = asyncio.get_running_loop().time() + SHUTDOWN_SECONDS
        if self.backend is not None:
            interrupter = KernelThread("interrupt")
            await _step("interrupting the backend", _run_on(interrupter, self.backend.interrupt), deadline, 5.0)
            interrupter.shutdown(wait=False)
        await _step("waiting for the running kernel call", self._kernel(_nothing), deadline, 2.0)
        if self.lease is not None:
            await _step("removing firewall rules", self._kernel(firewall.remove), deadline)
        if self.backend is not None:
            await _step("closing the backend", self._kernel(self.backend.close), deadline)
        if self.ipr is not None:
            await _step("closing the netlink socket", self._kernel(self.ipr.close), deadline)
        if self.store is not None:  # closing a channel to a dead member may fail; we are leaving anyway
            await _step("closing the etcd client", self.store.close(), deadline)
        self._kernel_thread.shutdown(wait=False, cancel_futures=True)
        log.info("stopped; lease %s kept for the next start", self.lease.subnet if self.lease else None)


async def _run_on(thread: KernelThread, fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(thread, fn)


def _nothing() -> None:
    """Queued on the kernel thread: it runs once the call before it has ended."""


async def _step(what: str, action: Awaitable[object], deadline: float, longest: float = 3.0) -> None:
    """One shutdown step, given at most longest seconds and never past deadline: a failure or a timeout is
    logged, and the next step runs."""
    seconds = min(longest, deadline - asyncio.get_running_loop().time())
    if seconds <= 0:
        log.error("%s: skipped, no time left", what)
        if asyncio.iscoroutine(action):
            action.close()  # never awaited: closed so that it does not warn
        return
    try:
        await asyncio.wait_for(action, seconds)
    except asyncio.TimeoutError:
        log.error("%s: not done within %.1f s; going on without it", what, seconds)
    except Exception as exc:
        log.error("%s failed: %s", what, exc)


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T:
    """work's result; _StopRequested (and work cancelled) as soon as stop is set."""
    working = asyncio.ensure_future(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([working, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not working.done():
        working.cancel()
        await asyncio.gather(working, return_exceptions=True)
        raise _StopRequested
    return working.result()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass

