"""Containers: Docker's container model on top of the runtime, and their place in the networks.

The runtime runs processes; this service decides what a container is (name, config, network mode) and
wires it: a sandbox namespace per container from create to rm, endpoints joined at start and left when
the container stops, published ports programmed while it runs. Every step that can fail at start is
undone when a later step fails, so a refused start leaves no veth, rule, address or port behind.
What it wires is done elsewhere: the /etc files' text in ``etcfiles``, the embedded DNS in
``dns_service``, endpoints and published ports by the network's driver (through ``networks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
from dataclasses import asdict, dataclass, field
from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import IPv4Address
from typing import Any, TypeVar

from muslin.errors import Conflict, Forbidden, InvalidArgument, NotFound, NotModified
from muslin.kernel import netns
from muslin.runtime import (Cgroups, ContainerSpec, ExitWaiter, ImageStore, LogEntry, LogFilter, NoSuchContainer, Recovered,
                            Runtime, StartFailed, State, Stream, capabilities, check_sysctls, normalize_capability)

from . import dns, etcfiles, link_text, resources
from . import ports as portmod
from .config import DaemonConfig
from .dns_service import DNSService
from .drivers.base import PortPublisher
from .firewall import PortSpec
from .gateway import GatewayCandidate, gateway_endpoint
from .linking import LegacyLink, LegacyLinks
from .listed_states import ListedStates
from .locks import EngineLocks
from .model import Endpoint, Network, new_id, now_rfc3339
from .mounts import MountPoint, borrowed
from .networks import ENDPOINT_DRIVERS, NetworkService
from .ports import PortBinding
from .requests import ContainerCreate, ContainerUpdate, EndpointRequest
from .health import Healthcheck, HealthMonitor, merged as merged_healthcheck
from .restarts import RestartPolicy, RestartSupervisor, restart_after_daemon_start
from .store import Store
from .volumes import VolumeService

log = logging.getLogger(__name__)
T = TypeVar("T")
KILL_WAIT_SECONDS = 10.0  # how long a SIGKILL's kill waits for the exit (a process in D state may lag)

# IPv4-only networks give containers no IPv6 (as Docker 26+): no link-local address on eth0, and no
# IPv6 autoconfiguration work in the kernel for each veth.
SANDBOX_SYSCTLS = {"net/ipv6/conf/default/disable_ipv6": "1"}
ADJECTIVES = ["admiring", "brave", "clever", "dreamy", "eager", "fervent", "gallant", "happy", "jolly",
              "keen", "loving", "modest", "nifty", "optimistic", "peaceful", "quirky", "relaxed", "serene",
              "tender", "upbeat", "vibrant", "wizardly", "youthful", "zealous"]
SURNAMES = ["archimedes", "babbage", "curie", "dijkstra", "euler", "feynman", "galois", "hopper", "jepsen",
            "knuth", "lovelace", "meitner", "noether", "pascal", "ritchie", "shannon", "thompson", "turing",
            "varahamihira", "wozniak", "yalow", "zhukovsky", "shtern", "lamport"]


@dataclass
class NetworkAttachment:
    """What the user asked of one network (EndpointsConfig); the live endpoint is in the store."""

    network_id: str
    ip: str = ""
    mac: str = ""
    aliases: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # "name:alias": names the embedded DNS answers for it
    link_local_ips: list[str] = field(default_factory=list)
    driver_opts: dict[str, str] = field(default_factory=dict)
    gw_priority: int = 0


@dataclass(frozen=True)
class ContainerFiles:
    """Where a container's files live on the host (what inspect shows)."""

    resolv_conf: str
    hostname: str
    hosts: str
    log: str


@dataclass
class Container:
    id: str
    name: str
    created: str
    image: str
    image_id: str
    config: dict[str, Any]
    host_config: dict[str, Any]
    network_mode: str  # "bridge"/<network id>, "host", "none", "container:<id>"
    attachments: list[NetworkAttachment] = field(default_factory=list)
    sandbox: str | None = None
    bindings: list[PortBinding] = field(default_factory=list)  # requested -p
    published: list[PortBinding] = field(default_factory=list)  # assigned while running
    published_network: str = ""  # the id of the network whose endpoint holds them (the gateway's)
    restart_count: int = 0
    manually_stopped: bool = False  # stopped or killed by the user since its last start (unless-stopped)
    stop_signal: int = int(signal.SIGTERM)  # what stop sends first (Config.StopSignal)
    stop_timeout: int | None = None  # seconds stop waits before SIGKILL (Config.StopTimeout); None: 10
    links: list[LegacyLink] = field(default_factory=list)  # HostConfig.Links (``linking``)
    mounts: list[MountPoint] = field(default_factory=list)  # binds, volumes, tmpfs (inspect's Mounts)

    @property
    def joined_container(self) -> str | None:
        return self.network_mode.split(":", 1)[1] if self.network_mode.startswith("container:") else None

    @property
    def owns_sandbox(self) -> bool:
        return self.network_mode not in ("host",) and self.joined_container is None

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Container:
        doc = dict(doc)
        doc["attachments"] = [NetworkAttachment(**a) for a in doc.get("attachments", [])]
        doc["bindings"] = [PortBinding(**b) for b in doc.get("bindings", [])]
        doc["published"] = [PortBinding(**b) for b in doc.get("published", [])]
        doc["links"] = [LegacyLink(**link) for link in doc.get("links", [])]
        doc["mounts"] = [MountPoint(**m) for m in doc.get("mounts", [])]
        return cls(**doc)


@dataclass
class Recovery:
    """What ``recover`` found at muslind's start, for the steps after it: the containers that kept
    running while muslind was away (to follow) and those that ran before and are stopped now (what
    restart policies may start again)."""

    running: list[tuple[Container, Recovered]] = field(default_factory=list)
    stopped: list[tuple[Container, Recovered]] = field(default_factory=list)


def _attachment(net: Network, cfg: EndpointRequest) -> NetworkAttachment:
    return NetworkAttachment(network_id=net.id, ip=str(cfg.ipv4_address or ""), mac=cfg.mac_address,
                             aliases=list(cfg.aliases), links=list(cfg.links),
                             link_local_ips=[str(a) for a in cfg.link_local_ips], driver_opts=dict(cfg.driver_opts),
                             gw_priority=cfg.gw_priority)


def _add_implicit_aliases(c: Container, net: Network, att: NetworkAttachment) -> None:
    """dockerd 20.10 lists the short id, and a hostname other than the name, among the aliases of an
    endpoint on a user-defined network from its first connect or start on (inspect shows them)."""
    if net.predefined:
        return
    hostname = c.config.get("Hostname") or ""
    for alias in (c.id[:12], hostname if hostname != c.name else ""):
        if alias and alias not in att.aliases:
            att.aliases.append(alias)


def _holding_container(method: Callable[..., T]) -> Callable[..., T]:
    """A container's state change under its lock (``locks``): the reference is resolved first, then the
    method runs with the full id and reads the container afresh under the lock."""
    @functools.wraps(method)
    def locked(self: ContainerService, ref: str, *args: Any, **kwargs: Any) -> T:
        cid = self.get(ref).id
        with self.locks.container(cid):
            return method(self, cid, *args, **kwargs)
    return locked


def _endpoint_extras(att: NetworkAttachment) -> dict[str, Any]:
    """What an endpoint takes from its attachment besides address, MAC and aliases."""
    return {"link_aliases": link_text.endpoint_aliases(att.links),
            "link_local": [IPv4Address(a) for a in att.link_local_ips]}


class ContainerService:
    """Docker's containers: their records and their lifecycle (create, start, stop, rm, rename, network
    connect/disconnect, recovery after a restart of muslind).

    Threads: the state changes (the sections marked "worker") run on the engine's worker threads,
    through ``engine_call``, each under its container's lock (``locks``: ``_holding_container`` for the
    calls that name the container first; by hand where it is named second or may be gone: connect,
    disconnect, an exit's handling, prune, an unlink's parent), so
    changes of different containers run together and those of one container one at a time; ``run``,
    ``follow_running``, the exit monitors and waiters, and what clients await (stop, restart, attach,
    wait, followed logs: the "event loop" sections) run on the event loop and reach the workers only
    through ``engine_call``: a stop's wait for the process holds no lock. The workers reach the loop
    only through ``loop.call_soon_threadsafe`` (removal waiters) and the DNS service's ``*_soon`` calls.
    Lookups only read, from any thread (and from the API's reader threads: logs).
    ``listed_states`` (the states lists show) has a lock of its own: workers and the loop tell it of changes.
    Loop-only state: ``_exit_waiters``, ``_removal_waiters``, ``_monitors``; workers' only, under the
    container's lock: ``_last_exit``. Not locked: a child's start rewriting its running parents'
    /etc/hosts (legacy links; each write is whole, from the store as it then is).
    """

    def __init__(self, store: Store, config: DaemonConfig, networks: NetworkService, images: ImageStore,
                 runtime: Runtime, embedded_dns: DNSService, engine_call: Callable[..., Awaitable[Any]],
                 volumes: VolumeService, locks: EngineLocks | None = None) -> None:
        self.store = store
        self.locks = locks or EngineLocks()
        self.volumes = volumes
        self.config = config
        self.networks = networks
        self.images = images
        self.runtime = runtime
        self.embedded_dns = embedded_dns
        self.engine_call = engine_call  # runs a function on an engine worker thread (state changes)
        self.sandbox_root = config.sandbox_root
        self._exit_waiters: dict[str, list[asyncio.Future[int]]] = {}
        self._removal_waiters: dict[str, list[asyncio.Future[int]]] = {}
        self._monitors: dict[str, asyncio.Task] = {}
        self._last_exit: dict[str, int] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.restarts = RestartSupervisor(lambda cid: self.run(cid, by_user=False))
        self.linking = LegacyLinks(self)
        self.health = HealthMonitor(runtime)
        self.listed_states = ListedStates(lambda cid: self.runtime.state(cid), self._followed)

    # -- lookups: they only read the store and the runtime's state, from either thread ------------------
    def all(self) -> list[Container]:
        return [Container.from_doc(d) for d in self.store.containers()]

    def with_links(self) -> list[Container]:
        """The containers that have legacy links (an index finds them: few, whatever the total)."""
        return [Container.from_doc(d) for d in self.store.containers_with_links()]

    def get(self, ref: str) -> Container:
        ref = ref.lstrip("/")
        matches = self.store.find_containers(ref)
        if len(matches) == 1:
            return Container.from_doc(matches[0])
        if len(matches) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")  # the client's to narrow
        child = self.linking.child_by_link_name(ref) if "/" in ref else None  # a link's "parent/alias"
        if child is not None:
            return child
        raise NotFound(f"No such container: {ref}")

    def state(self, c: Container) -> State:
        return self.runtime.state(c.id)

    def listed_state(self, c: Container) -> State:
        """The state a list shows: kept in memory between the engine's changes (``listed_states``); event
        loop only (it asks whether an exit monitor follows the container)."""
        return self.listed_states.get(c.id)

    def _followed(self, cid: str) -> bool:
        monitor = self._monitors.get(cid)
        return monitor is not None and not monitor.done()

    def files(self, c: Container) -> ContainerFiles:
        return ContainerFiles(resolv_conf=str(self.runtime.etc_path(c.id, "resolv.conf")),
                              hostname=str(self.runtime.etc_path(c.id, "hostname")),
                              hosts=str(self.runtime.etc_path(c.id, "hosts")), log=self.runtime.log_path(c.id))

    def logs(self, c: Container, flt: LogFilter) -> list[LogEntry]:
        """The log so far (the API reads it off the loop: a long log takes a while)."""
        return self.runtime.logs(c.id, flt)

    def counts(self) -> tuple[int, int, int, int]:
        items = self.all()
        states = [self.listed_state(c) for c in items]  # `docker info` counts what `docker ps` lists
        paused = sum(1 for st in states if st.paused)
        # As dockerd's counters: a container waiting to restart counts as running.
        running = sum(1 for c, st in zip(items, states) if st.running or self.restarts.restarting(c.id)) - paused
        return len(items), running, paused, len(items) - running - paused

    def _save(self, c: Container) -> None:
        with self.store.transaction() as db:
            self.store.put_container(db, c.id, c.name, c.to_doc())

    # -- create (worker) --------------------------------------------------------------------------------
    def _unique_name(self) -> str:
        for _ in range(1000):
            name = f"{random.choice(ADJECTIVES)}_{random.choice(SURNAMES)}"
            if self.store.container_named(name) is None:
                return name
        return f"muslin_{os.urandom(4).hex()}"

    def _check_name(self, name: str, own_id: str = "") -> str:
        """A free name (its form is the API's to check: [a-zA-Z0-9][a-zA-Z0-9_.-]+, one leading "/")."""
        name = name.lstrip("/")
        other = self.store.container_named(name)  # an indexed lookup, not a read of every container
        if other is not None and other != own_id:
            raise Conflict(f'Conflict. The container name "/{name}" is already in use by container '
                           f'"{other}". You have to remove (or rename) that container to be able to reuse that name.')
        return name

    def create(self, req: ContainerCreate) -> Container:
        """Under the images lock shared, the name's from its check to the record, and the volumes lock
        shared (its mount points)."""
        with self.locks.images.shared():
            if req.name:
                with self.locks.container_name(req.name.lstrip("/")), self.locks.volumes.shared():
                    return self._create(req, req.name.lstrip("/"))
            for _ in range(100):
                name = self._unique_name()
                with self.locks.container_name(name):
                    if self.store.container_named(name) is None:  # not taken by a create meanwhile
                        with self.locks.volumes.shared():
                            return self._create(req, name)
            raise Conflict("could not generate a free container name: give one with --name")

    def _create(self, req: ContainerCreate, name: str) -> Container:
        image = self.images.get(req.image)
        name = self._check_name(name)
        cid = new_id()
        try:
            mode, attachments = self._network_mode(req)
        except NotFound as exc:
            # Not a 404: the CLI takes a 404 from create for a missing image and goes to pull it.
            raise InvalidArgument(exc.message) from None
        self._check_mode_conflicts(mode, req)
        legacy_links = self.linking.register(name, req.links, mode)
        image_exposed = portmod.valid_port_keys(image.config.get("ExposedPorts") or {})
        bindings = portmod.bindings_of(req.port_bindings, [*image_exposed, *req.exposed_ports], req.publish_all_ports)
        if mode == "host" or mode == "none":
            bindings = []  # Docker discards published ports in these modes
        if mode.startswith("container:") and bindings:
            raise InvalidArgument("conflicting options: port publishing and the container type network mode")
        # --cap-add/--cap-drop/--privileged/--sysctl: what a network lab container needs (NET_ADMIN to
        # change its routes, net.ipv4.ip_forward=1 to be a router), checked before anything is made.
        host = dict(req.host_config)
        host["CapAdd"] = [normalize_capability(n) for n in req.cap_add] or None
        host["CapDrop"] = [normalize_capability(n) for n in req.cap_drop] or None
        caps = capabilities(host["CapAdd"] or [], host["CapDrop"] or [], req.privileged)
        check_sysctls(req.sysctls, host_network=mode == "host")
        if req.host_config.get("AutoRemove") and not RestartPolicy.of(req.host_config).none:
            raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
        resources.check(host)
        host = resources.with_defaults(host)
        config = dict(req.config)
        healthcheck = merged_healthcheck(req.config.get("Healthcheck"), image.config.get("Healthcheck"))
        if healthcheck is not None:
            config["Healthcheck"] = healthcheck
        c = Container(id=cid, name=name, created=now_rfc3339(), image=req.image, image_id=image.id,
                      config=config, host_config=host, network_mode=mode, attachments=attachments,
                      bindings=bindings, stop_signal=req.stop_signal or int(signal.SIGTERM),
                      stop_timeout=req.stop_timeout, links=legacy_links)
        hostname = req.hostname or cid[:12]
        if mode == "host":
            hostname = req.hostname or os.uname().nodename
        joined = self.get(c.joined_container) if c.joined_container else None
        if joined is not None:
            c.sandbox = joined.sandbox
            hostname = joined.config.get("Hostname") or joined.id[:12]
        elif c.owns_sandbox:
            c.sandbox = netns.create(str(self.sandbox_root / cid[:12]), SANDBOX_SYSCTLS)
        try:
            image_volumes = list(image.config.get("Volumes") or {})
            c.mounts = self.volumes.mount_points(list(req.mounts), [*req.volumes, *image_volumes],
                                                 self.images.lower_dirs(image), self._volumes_from(req))
            spec = ContainerSpec(
                id=cid, image=image.id, args=self._argv(req, image.config), env=list(req.env),
                workdir=req.working_dir, user=req.user, tty=req.tty, open_stdin=req.open_stdin, hostname=hostname,
                console_size=req.console_size, domainname=req.domainname,
                netns_path=c.sandbox, hosts=self._hosts_file(c, [], hostname),
                resolv_conf=self._resolv_conf(host, embedded_dns=self._uses_embedded_dns(c)),
                capabilities=tuple(caps), privileged=req.privileged, sysctls=dict(req.sysctls),
                resources=resources.resources_of(host),
                mounts=[m.runtime_mount() for m in c.mounts], group_add=list(req.group_add))
            self.runtime.create(spec)
            c.config = {**c.config, "Hostname": hostname}
            self._save(c)
        except BaseException:
            with contextlib.suppress(Exception):
                self.runtime.delete(cid, force=True)
            if c.owns_sandbox and c.sandbox:
                netns.remove(c.sandbox)
            self.volumes.discard([m.name for m in c.mounts if m.anonymous])
            raise
        log.info("created container %s (%s) in %s", name, cid[:12], mode)
        return c

    def _volumes_from(self, req: ContainerCreate) -> list[MountPoint]:
        inherited = []
        for ref, mode in req.volumes_from:
            try:
                inherited += borrowed(self.get(ref).mounts, mode)
            except NotFound as exc:  # not a 404: the CLI would take it for a missing image and pull
                raise InvalidArgument(exc.message) from None
        return inherited

    @staticmethod
    def _argv(req: ContainerCreate, image_config: dict[str, Any]) -> list[str]:
        """An entrypoint given replaces the image's and its Cmd; a Cmd given replaces only the Cmd."""
        if req.entrypoint is None:
            entrypoint = list(image_config.get("Entrypoint") or [])
            cmd = list(req.cmd) if req.cmd is not None else list(image_config.get("Cmd") or [])
        else:
            entrypoint, cmd = list(req.entrypoint), list(req.cmd or [])
        return [*entrypoint, *cmd]

    @staticmethod
    def _check_mode_conflicts(mode: str, req: ContainerCreate) -> None:
        """What dockerd refuses for a container that lives in another's (or the host's) namespace: it
        would be silently ignored otherwise."""
        joined = mode.startswith("container:")
        if joined and req.hostname:
            raise InvalidArgument("conflicting options: hostname and the network mode")
        if joined and req.extra_hosts:
            raise InvalidArgument("conflicting options: custom host-to-IP mapping and the network mode")
        if joined and req.dns:
            raise InvalidArgument("conflicting options: dns and the network mode")
        macs = [req.mac_address, *(e.mac_address for e in req.endpoints.values())]
        if (joined or mode == "host") and any(macs):
            raise InvalidArgument("conflicting options: mac-address and the network mode")

    def _network_mode(self, req: ContainerCreate) -> tuple[str, list[NetworkAttachment]]:
        mode = req.network_mode or "default"
        endpoints = req.endpoints
        if mode in ("default", "bridge"):
            mode = "bridge"
        if mode in ("host", "none"):
            return mode, []
        if mode.startswith("container:"):
            target = self.get(mode.split(":", 1)[1])
            if target.joined_container:
                # Join the namespace's owner, as Docker does for chains of container: modes.
                target = self.get(target.joined_container)
            if target.network_mode == "host":
                return "host", []
            return f"container:{target.id}", []
        attachments = []
        primary = self.networks.get(mode)
        no_settings = EndpointRequest()
        wanted = [(primary, endpoints.get(mode) or endpoints.get(primary.name) or endpoints.get("default") or no_settings)]
        for key, cfg in endpoints.items():
            if key in (mode, primary.name, "default"):
                continue
            wanted.append((self.networks.get(key), cfg))
        for net, cfg in wanted:
            if net.driver not in ENDPOINT_DRIVERS:
                raise InvalidArgument(f"container cannot be connected to network {net.name} ({net.driver}) together with others")
            attachments.append(_attachment(net, cfg))
        if req.mac_address and attachments and not attachments[0].mac:
            attachments[0].mac = req.mac_address
        return primary.id if not primary.predefined else primary.name, attachments

    # -- files the container sees (worker) --------------------------------------------------------------
    def _etc_files(self, c: Container, endpoints: list[Endpoint]) -> tuple[str, str]:
        """/etc/hosts and /etc/resolv.conf as of this start (networks may have changed since create).
        A container in another's namespace sees that one's files, as in Docker: its names, its DNS."""
        if c.joined_container:
            owner = c.joined_container
            return (self.runtime.etc_path(owner, "hosts").read_text(),
                    self.runtime.etc_path(owner, "resolv.conf").read_text())
        return self._hosts_file(c, endpoints), self._resolv_conf(c.host_config, self._uses_embedded_dns(c))

    def _hosts_file(self, c: Container, endpoints: list[Endpoint], hostname: str | None = None) -> str:
        entries = c.host_config.get("ExtraHosts") or []
        gateway = None  # looked up only when asked for: a start reads no more of the store than it needs
        if any(e.endswith(":" + etcfiles.HOST_GATEWAY) for e in entries):
            pool = self.networks.get("bridge").pool
            gateway = pool.gateway if pool else None
        extra = etcfiles.extra_hosts(entries, gateway) + self.linking.hosts_lines(c)
        if c.network_mode == "host":  # the host's names, as dockerd gives a --network host container
            own = etcfiles.read_host_hosts()
            if own is not None:
                return etcfiles.host_network_hosts_file(own, extra)
        hostname = hostname or etcfiles.container_hostname(c.config.get("Hostname") or "", c.id)
        return etcfiles.hosts_file(hostname, c.config.get("Domainname") or "",
                                   [ep.address.ip for ep in endpoints if ep.address], extra)

    def _endpoints_in_order(self, c: Container) -> list[Endpoint]:
        """The container's live endpoints in the order of its attachments (the first holds the gateway)."""
        order = {a.network_id: i for i, a in enumerate(c.attachments)}
        return sorted(self.store.endpoints(container_id=c.id), key=lambda e: order.get(e.network_id, len(order)))

    def _rewrite_hosts(self, c: Container) -> None:
        """A running container's /etc/hosts after a network connect or disconnect."""
        self.runtime.write_etc(c.id, hosts=self._hosts_file(c, self._endpoints_in_order(c)))

    def _uses_embedded_dns(self, c: Container, networks: dict[str, Network] | None = None) -> bool:
        """Docker gives containers on user-defined networks its embedded DNS server. ``networks``: every
        network by id, when the caller has read them all (muslind's start, for each running container)."""
        if networks is not None:
            return any(not networks[a.network_id].predefined for a in c.attachments if a.network_id in networks)
        return any(not self.networks.get(a.network_id).predefined for a in c.attachments)

    @staticmethod
    def _resolv_conf(host: dict[str, Any], embedded_dns: bool) -> str:
        return etcfiles.resolv_conf(host.get("Dns") or [], host.get("DnsSearch") or [], host.get("DnsOptions") or [],
                                    dns.EMBEDDED_ADDRESS if embedded_dns else None, etcfiles.HostResolvConf.read())

    # -- start (worker) ---------------------------------------------------------------------------------
    @_holding_container
    def start(self, ref: str, by_user: bool = True) -> Container:
        """``by_user``: the user's start (not a restart policy's), which resets the restart count."""
        c = self.get(ref)
        st = self.state(c)
        if st.running:
            raise NotModified("container already started")
        if c.joined_container:
            owner = self.get(c.joined_container)
            if not self.state(owner).running:
                raise Conflict(f"cannot join network namespace of a non running container: {owner.id}")
        # A namespace with no DNS redirect yet: made by this start (after a reboot), or made by create for
        # a container that never ran. Only the others need their nat table read (a crash inside a first
        # start can at worst leave a second, never-reached jump).
        fresh_sandbox = bool(c.owns_sandbox and c.sandbox
                             and (st.started_at == 0 or not netns.exists(c.sandbox)))
        if c.owns_sandbox and c.sandbox:
            netns.create(c.sandbox, SANDBOX_SYSCTLS)  # gone after a reboot (on a tmpfs); a no-op otherwise
        self.release_networking(c)  # what an exit not yet handled still holds
        self.linking.check_children(c)
        wired: list[tuple[Network, Endpoint]] = []
        try:
            for i, att in enumerate(c.attachments):
                with self.networks.joining(att.network_id) as net:
                    _add_implicit_aliases(c, net, att)
                    ep = self.networks.allocate_endpoint(net, c.id, c.name, f"eth{i}", ip=att.ip, mac=att.mac,
                                                         aliases=att.aliases, hostname=c.config.get("Hostname") or "",
                                                         **_endpoint_extras(att))
                    assert c.sandbox is not None
                    self.networks.wire_endpoint(net, ep, c.sandbox)
                wired.append((net, ep))
            if c.sandbox:  # containers only on overlays go out through docker_gwbridge (see gwbridge)
                wired += self.networks.attach_gateway(c.id, c.name, c.sandbox, wired)
            # Each endpoint with a gateway adds a default route unless there is one: the first one's holds.
            holder = next((ep.id for _, ep in wired if ep.gateway is not None), None)
            priority = {a.network_id: a.gw_priority for a in c.attachments}
            self._follow_gateway(c, [GatewayCandidate(net, ep, priority.get(net.id, 0)) for net, ep in wired], holder)
            if c.links:
                self.runtime.set_start_env(c.id, self.linking.start_env(c))
            self.runtime.write_etc(c.id, *self._etc_files(c, [ep for _, ep in wired]))
            self._bind_dns(c, fresh_sandbox)
            try:
                self.runtime.start(c.id)
            finally:
                self.listed_states.changed(c.id)  # running now, or exited at once
            if by_user:
                c.restart_count, c.manually_stopped = 0, False
        except BaseException as exc:
            if isinstance(exc, StartFailed):
                self._last_exit[c.id] = exc.exit_code
            self.embedded_dns.discard(c.id)
            try:
                self._unpublish(c)
            except Exception:
                log.exception("could not unpublish the ports of %s", c.name)
            for net, ep in reversed(wired):
                try:
                    self.networks.release_endpoint(net, ep, c.sandbox)
                except Exception:
                    log.exception("could not release the endpoint of %s on %s", c.name, net.name)
            raise
        self._save(c)
        for parent in self.linking.running_parents(c):  # their /etc/hosts follow the child's new address
            self._rewrite_hosts(parent)
        return c

    def _bind_dns(self, c: Container, fresh_sandbox: bool = False, networks: dict[str, Network] | None = None) -> bool:
        """Bind the container's embedded DNS (worker thread), if it is on a user-defined network."""
        if not c.sandbox or not c.owns_sandbox or not self._uses_embedded_dns(c, networks):
            return False
        return self.embedded_dns.bind(c.id, c.name, c.sandbox, fresh_sandbox)

    # -- published ports: the network's driver programs them, the container records them (worker) -------
    def _follow_gateway(self, c: Container, candidates: list[GatewayCandidate], route_holder: str | None = None) -> None:
        """The default route and the published ports on the endpoint that gives the container its gateway
        (``gateway``), moved there when a start, connect or disconnect changed which one that is.
        ``route_holder``: the id of the endpoint known to hold the default route already, if any."""
        chosen = gateway_endpoint(candidates)
        if chosen is not None and chosen.endpoint.id != route_holder:
            assert c.sandbox is not None
            self.networks.route_default_via(chosen.endpoint, c.sandbox)
        on = self._published_on(c)
        if on is not None and chosen is not None and on[2].id == chosen.endpoint.id:
            return
        moved_from = c.published
        if c.published:
            self._unpublish(c)
        if c.bindings and chosen is not None:
            self._publish(c, chosen.network, chosen.endpoint, moved_from)

    def _live_gateway_candidates(self, c: Container) -> list[GatewayCandidate]:
        priority = {a.network_id: a.gw_priority for a in c.attachments}
        return [GatewayCandidate(self.networks.get(ep.network_id), ep, priority.get(ep.network_id, 0))
                for ep in self.store.endpoints(container_id=c.id)]

    def _publish(self, c: Container, net: Network, ep: Endpoint, moved_from: list[PortBinding]) -> None:
        """Publish the container's -p on its gateway endpoint, if that network's driver has NAT. Ports
        moving from another endpoint keep the host ports they had."""
        driver = self.networks.port_publisher(net)
        if driver is None:
            return
        requested = portmod.keep_host_ports(c.bindings, moved_from)
        # The taken ports are read and the chosen ones recorded in one transaction (as IPAM does): two
        # starts publishing one port never both see it free; the second gets Docker's "already allocated".
        # Recorded before the rules exist, with the container's record: after a crash in between,
        # release_networking still knows which rules to remove.
        with self.store.transaction() as db:
            taken = [(proto, ip, port) for proto, ip, port, owner in self.store.ports() if owner != c.id]
            assigned = driver.assign_ports(net, ep, requested, taken)
            c.published = assigned
            c.published_network = net.id
            for b in assigned:
                self.store.bind_port(db, b.proto, b.host_ip, b.host_port, c.id)
            self.store.put_container(db, c.id, c.name, c.to_doc())
        driver.publish_ports(net, ep, assigned)

    def _published_on(self, c: Container, endpoints: dict[tuple[str, str], Endpoint] | None = None,
                       networks: dict[str, Network] | None = None) -> tuple[PortPublisher, Network, Endpoint] | None:
        """Where the container's ports are published: its live endpoint on the network that holds them,
        with that network's driver; None when nothing is. ``endpoints`` (the first of each network and
        container) and ``networks`` (by id): every one, when the caller has read them all."""
        if not c.published or not c.attachments:
            return None
        # Records older than published_network published on the first network.
        network_id = c.published_network or c.attachments[0].network_id
        if endpoints is not None:
            ep = endpoints.get((network_id, c.id))
        else:
            ep = next(iter(self.store.endpoints(network_id=network_id, container_id=c.id)), None)
        if ep is None or ep.address is None:
            return None
        net = networks[ep.network_id] if networks is not None else self.networks.get(ep.network_id)
        driver = self.networks.port_publisher(net)
        return (driver, net, ep) if driver is not None else None

    def _unpublish(self, c: Container) -> None:
        """Give back the container's host ports and remove their forwards (before its endpoint goes)."""
        on = self._published_on(c)
        if on is not None:
            driver, net, ep = on
            driver.unpublish_ports(net, ep, c.published)
        with self.store.transaction() as db:
            self.store.unbind_ports(db, c.id)
        c.published = []
        c.published_network = ""

    def published_port_specs(self, containers: list[Container] | None = None) -> list[PortSpec]:
        """What the firewall must hold for every published port of a container with its endpoints: one
        read of the containers, the endpoints and the networks, whatever their number. ``containers``:
        all that may publish, when the caller has them (at start, those recover found running)."""
        publishing = [c for c in (self.all() if containers is None else containers) if c.published]
        endpoints: dict[tuple[str, str], Endpoint] = {}
        for ep in self.store.endpoints() if publishing else []:
            endpoints.setdefault((ep.network_id, ep.container_id), ep)
        networks = {n.id: n for n in self.networks.list()}
        specs = []
        for c in publishing:
            on = self._published_on(c, endpoints, networks)
            if on is not None:
                driver, net, ep = on
                specs.extend(driver.port_forwards(net, ep, c.published))
        return specs

    def release_networking(self, c: Container) -> None:
        """What a stopped container gives back: its ports and endpoints (the sandbox stays until rm)."""
        endpoints = self.store.endpoints(container_id=c.id)
        if not endpoints and not c.published:
            return
        self._unpublish(c)
        for ep in endpoints:
            net = self.networks.get(ep.network_id)
            self.networks.release_endpoint(net, ep, c.sandbox)
        self._save(c)

    # -- exit, removal, rename (worker) -----------------------------------------------------------------
    def _after_exit(self, cid: str, code: int) -> None:
        with self.locks.container(cid):
            try:
                c = self.get(cid)
            except NotFound:
                return
            self._last_exit[cid] = code  # for the removal waiters, once the runtime has forgotten it
            self.release_networking(c)
            if c.host_config.get("AutoRemove"):
                self._remove(c)

    @_holding_container
    def remove(self, ref: str, force: bool, volumes: bool = False) -> Container:
        c = self.get(ref)
        st = self.state(c)
        if not force and (st.running or self.restarts.restarting(c.id)):
            procedure = "Stop the container before attempting removal or force remove"
            if st.paused:
                procedure = "Unpause and then stop the container before attempting removal or force remove"
            state = "paused" if st.paused else "running" if st.running else "restarting"
            raise Conflict(f"You cannot remove a {state} container {c.id}. {procedure}")
        self._remove(c, volumes)  # the runtime's forced delete kills a running container and waits for it
        return c

    def prune(self, keep: Callable[[Container], bool]) -> tuple[list[str], int]:
        """Remove every stopped container that ``keep`` lets go; their ids and the bytes their writable
        layers held."""
        removed, space = [], 0
        for listed in self.all():
            with self.locks.container(listed.id):
                found = self.store.find_containers(listed.id)  # again, under its lock
                c = Container.from_doc(found[0]) if found else None
                if c is None or self.state(c).running or self.restarts.restarting(c.id) or keep(c):
                    continue
                space += self.runtime.rw_size(c.id)
                self._remove(c)
                removed.append(c.id)
        return removed, space

    @_holding_container
    def remove_after_failed_start(self, ref: str) -> None:
        """A --rm container whose start failed goes (``run``)."""
        self._remove(self.get(ref))

    def _remove(self, c: Container, volumes: bool = False) -> None:
        """``volumes`` (`docker rm -v`, and always for --rm): its anonymous volumes go too."""
        # The exit monitor may not have released the networking yet (rm right after an exit).
        self.release_networking(c)
        code = self._last_exit.pop(c.id, None)
        if code is None:
            code = self._safe_exit_code(c.id)  # before the runtime forgets it
        try:
            self.runtime.delete(c.id, force=True)
        finally:
            self.listed_states.changed(c.id)
        # Containers that joined this one's namespace keep it alive through their own processes.
        if c.owns_sandbox and c.sandbox:
            netns.remove(c.sandbox)
        with self.store.transaction() as db:
            self.store.delete_container(db, c.id)
        if volumes or c.host_config.get("AutoRemove"):
            with self.locks.volumes.shared():  # only here: a kill's wait above holds up no volume change
                self.volumes.remove_anonymous([m.name for m in c.mounts if m.anonymous])
        self.embedded_dns.stop_soon(c.id)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.restarts.forget, c.id)
            self.loop.call_soon_threadsafe(self.health.forget, c.id)
            self.loop.call_soon_threadsafe(self._notify_removed, c.id, code)
        log.info("removed container %s (%s)", c.name, c.id[:12])

    def _safe_exit_code(self, cid: str) -> int:
        try:
            return self.runtime.state(cid).exit_code
        except Exception:
            return 0

    def remove_link(self, ref: str) -> None:
        """``docker rm --link parent/alias``: only the link goes (``linking``), under the parent's lock
        (a reference that names no parent is refused by ``unlink`` as dockerd refuses it)."""
        parent_ref = ref.strip("/").rpartition("/")[0]
        found = self.store.find_containers(parent_ref) if parent_ref else []
        with self.locks.container(found[0]["id"]) if len(found) == 1 else contextlib.nullcontext():
            parent = self.linking.unlink(ref)
            self._save(parent)
            if self.state(parent).running:
                self._rewrite_hosts(parent)

    def volume_users(self) -> dict[str, list[str]]:
        """Every volume in use -> the ids of the containers that mount it (one read of the containers)."""
        users: dict[str, list[str]] = {}
        for c in self.all():
            for name in dict.fromkeys(m.name for m in c.mounts if m.name):
                users.setdefault(name, []).append(c.id)
        return users

    def rename(self, ref: str, new_name: str) -> None:
        with self.locks.container_name(new_name.lstrip("/")):
            self._rename(ref, new_name)

    @_holding_container
    def _rename(self, ref: str, new_name: str) -> None:
        c = self.get(ref)
        c.name = self._check_name(new_name, c.id)
        with self.store.transaction() as db:
            self.store.put_container(db, c.id, c.name, c.to_doc())
            for ep in self.store.endpoints(container_id=c.id):
                ep.container_name = c.name
                self.store.put_endpoint(db, ep)

    # -- the process, as clients drive it (worker): signals and terminal size ---------------------------
    @_holding_container
    def _signal(self, ref: str, sig: int) -> None:
        """Send the signal of a `docker kill`: from now on the container counts as stopped by the user
        (unless-stopped)."""
        c = self.get(ref)
        if not self.state(c).running:
            raise Conflict(f"Cannot kill container: {ref}: Container {c.id} is not running")
        c.manually_stopped = True
        self._save(c)
        try:
            self.runtime.kill(c.id, sig, thaw=self._final_signal(c, sig))
        finally:
            self.listed_states.changed(c.id)  # thawed, if it was paused

    @staticmethod
    def _final_signal(c: Container, sig: int) -> bool:
        """dockerd's ExitOnNext: after SIGKILL, the container's own StopSignal, or any signal when it has
        none, the exit is final (no restart) and a paused container is thawed to act on it."""
        return sig == int(signal.SIGKILL) or not c.config.get("StopSignal") or sig == c.stop_signal

    @_holding_container
    def update(self, ref: str, req: ContainerUpdate) -> None:
        """`docker update`: new limits (applied at once to a running container) and restart policy."""
        c = self.get(ref)
        host = resources.updated(c.host_config, req.resources)
        if req.resources.get("Memory") and not req.resources.get("MemorySwap") \
                and 0 < (host.get("MemorySwap") or 0) < req.resources["Memory"]:
            raise InvalidArgument(f"Cannot update container {c.id}: Memory limit should be smaller than already set "
                                  "memoryswap limit, update the memoryswap at the same time")
        if req.restart_policy is not None and req.restart_policy.name:
            if c.host_config.get("AutoRemove") and req.restart_policy.name != "no":
                raise InvalidArgument(f"Cannot update container {c.id}: Restart policy cannot be updated because "
                                      "AutoRemove is enabled for the container")
            host["RestartPolicy"] = req.restart_policy.to_json()
        resources.check(host)
        if req.resources:
            self.runtime.update(c.id, resources.resources_of(host))
        c.host_config = host
        self._save(c)

    def running_cgroups(self, ref: str) -> tuple[Container, Cgroups]:
        """A running container and its cgroups, for top and stats (Conflict if it is not running)."""
        c = self.get(ref)
        if self.restarts.restarting(c.id):
            raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
        try:
            return c, self.runtime.cgroups(c.id)
        except NoSuchContainer:
            raise NotFound(f"No such container: {ref}") from None
        except Conflict:
            raise Conflict(f"Container {c.id} is not running") from None

    def pause(self, ref: str) -> None:
        c = self.get(ref)
        st = self.state(c)
        if self.restarts.restarting(c.id):
            raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
        if not st.running:
            raise Conflict(f"Container {c.id} is not running")
        if st.paused:
            raise Conflict(f"Container {c.id} is already paused")
        try:
            self.runtime.pause(c.id)
        finally:
            self.listed_states.changed(c.id)

    def unpause(self, ref: str) -> None:
        c = self.get(ref)
        if not self.state(c).paused:
            raise Conflict(f"Container {c.id} is not paused")
        try:
            self.runtime.unpause(c.id)
        finally:
            self.listed_states.changed(c.id)

    def resize(self, ref: str, height: int, width: int) -> None:
        c = self.get(ref)
        try:
            self.runtime.resize(c.id, height, width)
        except (Conflict, InvalidArgument):
            # The CLI resizes right after start, racing a short process's exit (and sends 0x0 when it
            # has no terminal size): dockerd lets that pass too.
            pass

    # -- networks of a container (worker) ---------------------------------------------------------------
    def connect(self, net_ref: str, container_ref: str, cfg: EndpointRequest) -> None:
        cid = self.get(container_ref).id
        with self.locks.container(cid):
            self._connect(net_ref, cid, cfg)

    def _connect(self, net_ref: str, container_ref: str, cfg: EndpointRequest) -> None:
        net = self.networks.get(net_ref)
        c = self.get(container_ref)
        if not c.owns_sandbox:
            raise Forbidden("container sharing network namespace with another container or host cannot be connected to any other network")
        if c.network_mode == "none":
            raise Forbidden("container cannot be disconnected from host network or connected to host network" if net.driver == "host"
                             else "container cannot be connected to multiple networks with one of the networks in private (none) mode")
        if net.driver not in ENDPOINT_DRIVERS:
            raise Forbidden(f"container cannot be connected to {net.driver} network {net.name}")
        if any(a.network_id == net.id for a in c.attachments):
            raise Forbidden(f"endpoint with name {c.name} already exists in network {net.name}")
        att = _attachment(net, cfg)
        self.networks.check_endpoint_aliases(net, att.aliases)
        _add_implicit_aliases(c, net, att)
        embedded_dns_before = self._uses_embedded_dns(c)
        running = self.state(c).running
        if running:
            endpoints = self.store.endpoints(container_id=c.id)
            used = {e.ifname for e in endpoints}
            ifname = next(f"eth{i}" for i in range(64) if f"eth{i}" not in used)
            with self.networks.joining(net.id) as net:
                ep = self.networks.allocate_endpoint(net, c.id, c.name, ifname, ip=att.ip, mac=att.mac,
                                                     aliases=att.aliases, hostname=c.config.get("Hostname") or "",
                                                     **_endpoint_extras(att))
                assert c.sandbox is not None
                self.networks.wire_endpoint(net, ep, c.sandbox)
            self.networks.attach_gateway(c.id, c.name, c.sandbox,
                                         [*((self.networks.get(e.network_id), e) for e in endpoints), (net, ep)])
        c.attachments.append(att)
        if running:
            try:
                self._follow_gateway(c, self._live_gateway_candidates(c))
            except Exception:
                # The ports cannot move to the new gateway endpoint (a clash there): the connect is
                # undone, as dockerd's, and they go back where they were.
                self.networks.release_endpoint(net, ep, c.sandbox)
                for gw_net, gw_ep in self.networks.unneeded_gateway(c.id):  # attached for this connect
                    self.networks.release_endpoint(gw_net, gw_ep, c.sandbox)
                c.attachments.remove(att)
                self._follow_gateway(c, self._live_gateway_candidates(c))
                self._save(c)
                raise
        self._save(c)
        if running:
            self._rewrite_hosts(c)
        if running and not embedded_dns_before and self._bind_dns(c):
            # From the default bridge onto a user network: the container's resolver becomes the embedded
            # one now, as with dockerd, not at its next start (and only once its sockets are bound).
            assert c.sandbox is not None
            self.runtime.write_etc(c.id, resolv_conf=self._resolv_conf(c.host_config, embedded_dns=True))
            self.embedded_dns.serve_soon(c.id, c.name, c.sandbox, self._dns_upstreams(c))

    def disconnect(self, net_ref: str, container_ref: str, force: bool) -> None:
        try:
            cid = self.get(container_ref).id
        except NotFound:  # its stale endpoints, with force (below): nothing of a container to lock
            self._disconnect(net_ref, container_ref, force)
            return
        with self.locks.container(cid):
            self._disconnect(net_ref, cid, force)

    def _disconnect(self, net_ref: str, container_ref: str, force: bool) -> None:
        net = self.networks.get(net_ref)
        try:
            c = self.get(container_ref)
        except NotFound:
            if not force:
                raise
            stale = [ep for ep in self.store.endpoints(network_id=net.id)
                     if ep.container_name == container_ref or ep.container_id.startswith(container_ref)]
            if not stale:
                raise NotFound(f"endpoint {container_ref} not found") from None
            for ep in stale:
                self.networks.release_endpoint(net, ep)
            return
        att = next((a for a in c.attachments if a.network_id == net.id), None)
        if att is None:
            raise Forbidden(f"container {c.id} is not connected to network {net.name}")
        leaving = self.store.endpoints(network_id=net.id, container_id=c.id)
        running = bool(c.sandbox) and self.state(c).running
        # the last overlay leaving: docker_gwbridge's endpoint goes with it
        gateway_leaving = self.networks.unneeded_gateway(c.id, net.id) if leaving else []
        if leaving and running:
            # The default route and the published ports move to the next gateway endpoint before this
            # one goes (the forwards name its address).
            going = {net.id} | {gw_net.id for gw_net, _ in gateway_leaving}
            self._follow_gateway(c, [x for x in self._live_gateway_candidates(c) if x.network.id not in going])
        elif c.published and (c.published_network or c.attachments[0].network_id) == net.id:
            self._unpublish(c)
        for ep in leaving:
            self.networks.release_endpoint(net, ep, c.sandbox)
        for gw_net, gw_ep in gateway_leaving:
            self.networks.release_endpoint(gw_net, gw_ep, c.sandbox)
        c.attachments.remove(att)
        self._save(c)
        if running:
            self._rewrite_hosts(c)

    # -- recovery after a restart of muslind (worker) ---------------------------------------------------
    def recover(self, broken: list[tuple[Network, Endpoint]]) -> Recovery:
        """Settle what changed while muslind was away (containers that died give back their networking,
        the runtime's leftovers go) and bind the embedded DNS of those that kept running, before the API
        answers: a name asked right after the restart is answered. A running container costs a look at
        its run files and its DNS sockets, nothing more. ``broken``: endpoints the networks' reconcile
        found broken; those of running containers are wired again."""
        found = {r.id: r for r in self.runtime.recover()}  # one look at every container's run files
        containers = self.all()
        known = {c.id for c in containers}
        for cid in found.keys() - known:  # created by the runtime, but the store never heard of it (a crash)
            self.runtime.delete(cid, force=True)
        recovery = Recovery()
        for c in containers:
            rec = found.get(c.id)
            if rec is None:
                log.warning("container %s has no runtime state; removing its record", c.id[:12])
                self.release_networking(c)
                with self.store.transaction() as db:
                    self.store.delete_container(db, c.id)
                continue
            if rec.running:
                recovery.running.append((c, rec))
                continue
            if self.store.endpoints(container_id=c.id) or c.published:
                self.release_networking(c)
            if c.host_config.get("AutoRemove") and rec.exited:
                self._remove(c)
            elif rec.started_at:
                recovery.stopped.append((c, rec))
        # Sandboxes of containers the store no longer knows (a crash between steps) are ours to drop.
        if self.sandbox_root.is_dir():
            named = {cid[:12] for cid in known}  # what create names them
            for entry in self.sandbox_root.iterdir():
                if entry.name not in named and not any(cid.startswith(entry.name) for cid in known):
                    netns.remove(str(entry))
        self._rewire_broken([c for c, _ in recovery.running], broken)
        networks = {n.id: n for n in self.networks.list()}
        for c, _ in recovery.running:
            self._bind_dns(c, networks=networks)
        return recovery

    def _rewire_broken(self, running: list[Container], broken: list[tuple[Network, Endpoint]]) -> None:
        """The endpoints of running containers whose veth was deleted (or left its bridge) while muslind
        was away, wired again with their addresses and MACs, and the default route put back. (Those of
        containers that died go with the rest of their networking.)"""
        by_id = {c.id: c for c in running if c.sandbox}
        rewired: dict[str, Container] = {}
        for net, ep in broken:
            c = by_id.get(ep.container_id)
            if c is None:
                continue
            log.warning("endpoint %s of container %s on network %s was broken while muslind was away: wiring it again",
                        ep.ifname, c.name, net.name)
            try:
                assert c.sandbox is not None
                self.networks.rewire_endpoint(net, ep, c.sandbox)
                rewired[c.id] = c
            except Exception:
                log.exception("could not wire %s of container %s again", ep.ifname, c.name)
        for c in rewired.values():
            try:
                self._follow_gateway(c, self._live_gateway_candidates(c))
            except Exception:
                log.exception("could not route container %s again", c.name)

    # -- event loop: runs, exits and waits; the worker's part through engine_call -----------------------
    async def run(self, ref: str, by_user: bool = True) -> None:
        """Start a container and follow it to its exit. ``by_user``: the user's start (or a start at
        muslind's), not a restart policy's: the back-off and restart count begin afresh.

        The exit watch is opened before the start: a process as short as `echo hi` can be gone before a
        watch opened afterwards would reach the shim.
        """
        c = self.get(ref)
        # Read on a thread: its forty-odd system calls on the event loop would each wait for the
        # interpreter lock under load, and every other request with them. The start rechecks under the
        # container's lock.
        st = await asyncio.to_thread(self.runtime.state, c.id)
        if st.paused:
            raise Conflict("cannot start a paused container, try unpause instead")
        if st.running or (by_user and self.restarts.restarting(c.id)):  # before settled(), which would
            raise NotModified("container already started")  # wait for this run's end
        if by_user:
            self.restarts.user_started(c.id)
        await self.settled(c.id)  # a previous run's exit is handled before this run begins
        watch = await self.runtime.exit_waiter(c.id, next_run=True)
        try:
            await self.engine_call(self.start, c.id, by_user)
        except NotModified:
            watch.cancel()  # already running: nothing failed to start
            raise
        except Exception:
            # Docker reports the failed start (the process's, the network's, a namespace owner gone),
            # and a --rm container goes away with it: a client waiting for condition=removed must not
            # wait forever. Unless it is gone already (removed meanwhile).
            watch.cancel()
            if c.host_config.get("AutoRemove") and self.store.find_containers(c.id):
                try:
                    await self.engine_call(self.remove_after_failed_start, c.id)
                except Exception:
                    log.exception("could not remove %s after its failed start", c.name)
            raise
        except BaseException:
            watch.cancel()
            raise
        await self._serve_dns(c)
        self._follow(c.id, watch)
        self._start_health(c)

    def _start_health(self, c: Container) -> None:
        """Probe its healthcheck, if it has one, from this start on (event loop)."""
        hc = Healthcheck.of(c.config.get("Healthcheck"))
        started_at = self.state(c).started_at if hc is not None else 0  # the run files only when needed
        self.health.start(c.id, hc, started_at, lambda: self._paused(c.id))

    def _paused(self, cid: str) -> bool:
        try:
            return self.runtime.state(cid).paused
        except NoSuchContainer:
            return False

    async def _serve_dns(self, c: Container) -> None:
        """Serve what _bind_dns bound (event loop)."""
        if c.sandbox:
            await self.embedded_dns.serve(c.id, c.sandbox, self._dns_upstreams(c))

    @staticmethod
    def _dns_upstreams(c: Container) -> list[str]:
        return c.host_config.get("Dns") or list(etcfiles.HostResolvConf.read().nameservers)

    def _follow(self, cid: str, watch: ExitWaiter) -> None:
        previous = self._monitors.get(cid)
        if previous and not previous.done():
            previous.cancel()
        self._monitors[cid] = asyncio.ensure_future(self._monitor(cid, watch))

    async def _monitor(self, cid: str, watch: ExitWaiter) -> None:
        code = 255
        try:
            try:
                code = await watch.wait()
            finally:
                self.listed_states.changed(cid)  # exited, or its shim is gone: lists read it afresh
            self.health.stop(cid)
            self.embedded_dns.stop(cid)
            await self.engine_call(self._after_exit, cid, code)
            await self._apply_restart_policy(cid, code)
        except Exception:
            # Waiters (`docker stop`, `wait`) are answered all the same: a hung CLI helps nobody.
            log.exception("handling the exit of container %s failed", cid[:12])
        finally:
            for fut in self._exit_waiters.pop(cid, []):
                if not fut.done():
                    fut.set_result(code)

    async def _apply_restart_policy(self, cid: str, code: int) -> None:
        """After an exit: schedule the restart its policy asks for (counted at once, as dockerd shows it)."""
        try:
            c = self.get(cid)
            st = self.state(c)
        except (NotFound, NoSuchContainer):  # removed (--rm, rm -f)
            return
        ran_for = max(st.finished_at - st.started_at, 0) / 1e9
        if self.restarts.exited(cid, RestartPolicy.of(c.host_config), code, c.manually_stopped, ran_for):
            await self.engine_call(self._count_restart, cid)

    @_holding_container
    def _count_restart(self, cid: str) -> None:
        """(worker)"""
        c = self.get(cid)
        c.restart_count += 1
        self._save(c)

    def restarting(self, c: Container) -> bool:
        """Waiting out a restart policy's back-off (Docker shows it Running, Restarting, status "restarting")."""
        return self.restarts.restarting(c.id)

    async def settled(self, cid: str) -> None:
        """Return once an exit that already happened has been fully handled (networking released)."""
        monitor = self._monitors.get(cid)
        if monitor is not None and not monitor.done():
            await asyncio.shield(monitor)

    def exit_future(self, cid: str) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._exit_waiters.setdefault(cid, []).append(fut)
        return fut

    def _drop_exit_future(self, cid: str, fut: asyncio.Future[int]) -> None:
        """Forget a waiter once it is answered or no longer awaited (a no-op for an answered one)."""
        fut.cancel()
        waiters = self._exit_waiters.get(cid, [])
        if fut in waiters:
            waiters.remove(fut)
        if not waiters:
            self._exit_waiters.pop(cid, None)

    def removal_future(self, cid: str) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._removal_waiters.setdefault(cid, []).append(fut)
        return fut

    def _notify_removed(self, cid: str, code: int) -> None:
        for fut in self._removal_waiters.pop(cid, []):
            if not fut.done():
                fut.set_result(code)

    async def restart_after_daemon_start(self, recovery: Recovery) -> None:
        """Start again what dockerd starts when it starts, before the API answers as dockerd does:
        containers that ran before, stopped now, whose policy says so (always; unless-stopped unless the
        user stopped it; on-failure after a failure). Their health probes begin with the others'."""
        for c, rec in recovery.stopped:
            if restart_after_daemon_start(RestartPolicy.of(c.host_config), rec.exit_code, c.manually_stopped,
                                          c.restart_count):
                try:
                    await self.run(c.id)
                except Exception as exc:
                    log.warning("could not start container %s again: %s", c.name, exc)
        for c, rec in recovery.running:
            self.health.start(c.id, Healthcheck.of(c.config.get("Healthcheck")), rec.started_at,
                              functools.partial(self._paused, c.id))

    async def follow_running(self, recovery: Recovery) -> None:
        """Once the API answers: serve the DNS that recover bound and watch the exits of the containers
        that kept running while muslind was away, their shims asked all at once. A container that a
        request took over meanwhile (a stop or start follows it itself) is left to that request; one that
        exited meanwhile is found by its watch, whose shim is gone, and handled as any exit."""
        upstreams = list(etcfiles.HostResolvConf.read().nameservers)  # the host's, read once for all
        following = [c for c, _ in recovery.running if c.id not in self._monitors]
        for c in following:
            if c.sandbox:
                try:
                    await self.embedded_dns.serve(c.id, c.sandbox, c.host_config.get("Dns") or upstreams)
                except Exception:
                    log.exception("could not serve the embedded DNS of %s", c.name)
        watches = await asyncio.gather(*(self.runtime.exit_waiter(c.id) for c in following), return_exceptions=True)
        for c, watch in zip(following, watches):
            if isinstance(watch, BaseException):  # removed meanwhile (rm -f)
                if not isinstance(watch, NoSuchContainer):
                    log.error("could not watch container %s: %s", c.name, watch)
            elif c.id in self._monitors:  # taken over while the watches were being opened
                watch.cancel()
            else:
                self._follow(c.id, watch)

    # -- the process, as clients drive it (event loop): stop, restart, attach, wait, follow the logs ---
    async def stop(self, ref: str, timeout: float | None = None, sig: int | None = None) -> None:
        """Signal (the container's StopSignal, else SIGTERM), wait up to ``timeout`` seconds (its
        StopTimeout, else 10), then SIGKILL; return once the exit is handled (networking released)."""
        c = self.get(ref)
        await self.restarts.start_finished(c.id)  # a policy's start under way: then stop what it started
        if self.restarts.user_stopped(c.id):  # it was waiting to restart: now it stays stopped
            await self.engine_call(self._mark_stopped, c.id)
            return
        if not self.state(c).running:
            raise NotModified("container already stopped")
        await self._stop(c, timeout, sig)

    async def restart(self, ref: str, timeout: float | None = None, sig: int | None = None) -> None:
        c = self.get(ref)
        await self.restarts.start_finished(c.id)
        self.restarts.user_stopped(c.id)
        if self.state(c).running:
            await self._stop(c, timeout, sig)
        await self.run(c.id)

    async def _stop(self, c: Container, timeout: float | None, sig: int | None) -> None:
        self.restarts.user_stopped(c.id)
        await self.engine_call(self._mark_stopped, c.id)
        done = self.exit_future(c.id)  # before the signal: the exit may be handled before stop returns
        try:
            try:
                await self.runtime.stop(c.id, self._stop_timeout(c, timeout), sig or c.stop_signal)
            finally:
                self.listed_states.changed(c.id)  # thawed, if it was paused
            await done
        finally:
            self._drop_exit_future(c.id, done)

    @_holding_container
    def _mark_stopped(self, cid: str) -> None:
        """(worker)"""
        c = self.get(cid)
        c.manually_stopped = True
        self._save(c)

    async def kill(self, ref: str, sig: int) -> None:
        """Send a signal; for SIGKILL, return once the container is dead and its exit handled (dockerd's
        kill waits so, and a client inspecting right after must see it stopped)."""
        c = self.get(ref)
        await self.restarts.start_finished(c.id)  # only the back-off is "restarting" for a kill
        if self.restarts.restarting(c.id):
            raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
        if self._final_signal(c, sig):
            self.restarts.user_stopped(c.id)
        done = self.exit_future(c.id) if sig == int(signal.SIGKILL) else None
        try:
            await self.engine_call(self._signal, ref, sig)
            if done is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(done, KILL_WAIT_SECONDS)
        finally:
            if done is not None:  # answered, or never will be (not running, alive after the wait)
                self._drop_exit_future(c.id, done)

    @staticmethod
    def _stop_timeout(c: Container, timeout: float | None) -> float:
        if timeout is None:
            timeout = c.stop_timeout
        if timeout is None:
            return 10.0
        return float(timeout) if timeout >= 0 else float(2**31)  # -1: wait as long as it takes

    async def attach(self, ref: str, stdin: bool, stdout: bool, stderr: bool) -> tuple[Container, Stream]:
        c = self.get(ref)
        if self.state(c).paused:
            raise Conflict(f"container {ref} is paused, unpause the container before attach")
        stream = await self.runtime.attach(c.id, stdin=stdin, stdout=stdout, stderr=stderr,
                                           stdin_once=bool(c.config.get("StdinOnce")))
        return c, stream

    async def wait(self, ref: str, condition: str) -> asyncio.Future[int]:
        """A future of the exit code for Docker's wait conditions (not-running, next-exit, removed)."""
        c = self.get(ref)
        if condition == "removed":
            return self.removal_future(c.id)
        exited = self.exit_future(c.id)
        if condition == "next-exit":
            return exited
        # not-running: the state is read on a thread (its system calls on the event loop would hold up
        # every other request under load), the exit's future registered first so that no exit in
        # between is missed.
        try:
            st = await asyncio.to_thread(self.runtime.state, c.id)
        except BaseException:
            self._drop_exit_future(c.id, exited)
            raise
        if st.running:
            return exited
        self._drop_exit_future(c.id, exited)
        await self.settled(c.id)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.set_result(st.exit_code)
        return fut

    def follow_logs(self, c: Container, flt: LogFilter) -> AsyncIterator[LogEntry]:
        return self.runtime.follow_logs(c.id, flt)
