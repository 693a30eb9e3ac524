"""Networks: the model's lifecycle, IPAM and endpoints, with each driver doing the kernel work.

Ordering is what keeps the store and the kernel consistent when muslind dies halfway:
- create commits the record first, then programs the kernel (a crash leaves a record that reconcile
  programs at the next start; a driver failure deletes the record again);
- delete unprograms the kernel first, then drops the record (a crash leaves a record that reconcile
  re-programs, and the user's next `network rm` finishes the job).
So the kernel never holds something the store does not know, and start-up reconcile is the same code
as the first create.

Concurrency (``locks``): a create holds ``network_table`` from its checks (name, subnet, bridge name)
until its record is committed, and the new network's lock exclusive until the kernel has it (a global
network's create: the cluster store's transaction first, without the lock; then, under it, the local
name and chosen subnet checked again with the local record committed); a removal
holds the network's lock exclusive; an endpoint joins under its network's lock held shared
(``joining``), so a network never goes while an endpoint is being wired into it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from muslin.errors import Conflict, Forbidden, InvalidArgument, NotFound
from muslin.kernel import address, link, netns, route

from . import ipam
from .cluster_store import ClusterStore
from .config import DaemonConfig
from .drivers.base import HostNetlink, NetworkDriver, PortPublisher
from .drivers.bridge import BridgeDriver
from .drivers.bridge_options import OPT_BIND, OPT_DEFAULT, OPT_ICC, OPT_MASQ, OPT_MTU, OPT_NAME
from .drivers.macvlan import MacvlanDriver
from .drivers.overlay import OverlayDriver
from .drivers.passthrough import PassthroughDriver
from .firewall import BridgeSpec, Firewall
from .gwbridge import GatewayBridge
from .global_networks import ClusterJob, GlobalNetworks, engine_id
from .locks import EngineLocks
from .model import Endpoint, IPAMPool, Network, new_id, now_rfc3339
from .requests import IPAMPoolRequest, NetworkCreate
from .store import Store

log = logging.getLogger(__name__)

PREDEFINED = {"bridge": "bridge", "host": "host", "none": "null"}
# Drivers Docker knows that muslind does not implement yet (overlay: without --cluster-store): refused
# with a clear message, not "not found".
PLANNED_DRIVERS = {"ipvlan", "overlay"}
NOT_A_SWARM_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to '
                       'connect this node to swarm and try again.')
# IPAMConfig.LinkLocalIPs go on the interface with libnetwork's link-local mask, whatever the address.
LINK_LOCAL_PREFIX = 16
# Drivers whose networks give containers endpoints of their own (host and null give none).
ENDPOINT_DRIVERS = {"bridge", "macvlan", "overlay"}


class NetworkService:
    """Networks, endpoints and published ports. State changes and kernel work run on the engine's
    worker threads (each with netlink handles of its own), under ``locks``; the queries (list, get,
    endpoints) only read the store, from any thread."""

    def __init__(self, store: Store, config: DaemonConfig, firewall: Firewall | None,
                 submit: Callable[[ClusterJob], Future[None]], locks: EngineLocks | None = None) -> None:
        self.store = store
        self.config = config
        self.locks = locks or EngineLocks()
        self._host = HostNetlink()
        self.bridge = BridgeDriver(config, firewall, self._host)
        self.drivers: dict[str, NetworkDriver] = {
            "bridge": self.bridge,
            "macvlan": MacvlanDriver(self._host),
            "host": PassthroughDriver("host"),
            "null": PassthroughDriver("null"),
        }
        # With a cluster store: the overlay driver, and the global networks it serves (``submit`` runs
        # the store's changes on an engine worker, in order).
        self.global_networks: GlobalNetworks | None = None
        self.gateway_bridge = GatewayBridge(self)
        if config.cluster is not None:
            overlay = OverlayDriver(self._host, config.cluster.advertise_host, config.exec_root / "overlay")
            self.drivers["overlay"] = overlay
            self.global_networks = GlobalNetworks(ClusterStore(config.cluster), store, overlay,
                                                  engine_id(config.data_root), submit, firewall)

    def close_thread_handles(self) -> None:
        """Close the calling worker thread's netlink handle."""
        self._host.close()

    def driver_names(self) -> list[str]:
        return sorted(self.drivers)

    def cluster_advertise(self) -> str:
        """``--cluster-advertise`` resolved to ADDRESS:PORT, as docker info shows it; empty without."""
        if self.global_networks is None or self.config.cluster is None:
            return ""
        port = self.config.cluster.advertise.rpartition(":")[2]
        return f"{self.global_networks.driver.underlay.ip}:{port}"

    # -- queries -----------------------------------------------------------------------------------
    def list(self) -> list[Network]:
        return self.store.networks()

    def get(self, ref: str) -> Network:
        matches = self.store.find_networks(ref)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise NotFound(f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def endpoints(self, net: Network) -> list[Endpoint]:
        return self.store.endpoints(network_id=net.id)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> list[tuple[Network, Endpoint]]:
        """Make the predefined networks exist as configured, then bring the kernel in line; the
        endpoints found broken (see reconcile)."""
        self._ensure_predefined()
        broken = self.reconcile()
        if self.global_networks is not None:
            # Resolved now: an advertise address this host does not have stops the start.
            log.info("cluster store %s, advertising %s", self.global_networks.cluster.config.url,
                     self.global_networks.driver.underlay.ip)
            self.global_networks.start()
        return broken

    def _default_bridge(self) -> Network:
        bip = self.config.default_bip
        options = {
            OPT_DEFAULT: "true",
            OPT_ICC: str(self.config.icc).lower(),
            OPT_MASQ: str(self.config.ip_masq).lower(),
            OPT_BIND: self.config.default_bind_ip,
            OPT_NAME: self.config.bridge_name,
            OPT_MTU: str(self.config.mtu),
        }
        return Network(id=new_id(), name="bridge", driver="bridge", created=now_rfc3339(),
                       pools=[IPAMPool(subnet=bip.network, gateway=bip.ip)], options=options, predefined=True)

    def _ensure_predefined(self) -> None:
        existing = {n.name: n for n in self.store.networks()}
        for name, driver in PREDEFINED.items():
            if name in existing or name == "bridge":  # the default bridge follows the flags, below
                continue
            net = Network(id=new_id(), name=name, driver=driver, created=now_rfc3339(), predefined=True)
            with self.store.transaction() as db:
                self.store.put_network(db, net)
        wanted = self._default_bridge()
        current = existing.get("bridge")
        if current is None or current.pools != wanted.pools or current.options != wanted.options:
            # The daemon's flags (--bip, --mtu, --ip-masq, ...) changed: the default bridge follows them,
            # keeping its Id, as dockerd does at restart. Not under running containers, whose veths,
            # addresses and port rules name the old bridge.
            if current is not None and self.store.endpoints(network_id=current.id):
                raise Conflict("the default bridge's settings (--bip, --mtu, --ip-masq, --icc, ...) changed, but "
                               "containers are still attached to it: stop them, or start muslind with the "
                               "previous settings")
            if current is not None and current.settings is not None:
                self.bridge.delete_network(current)
            wanted.id = current.id if current else wanted.id
            wanted.created = current.created if current else wanted.created
            self.bridge.prepare(wanted, [n for n in existing.values() if n.name != "bridge"])
            with self.store.transaction() as db:
                self.store.put_network(db, wanted)

    def reconcile(self) -> list[tuple[Network, Endpoint]]:
        """Program every network of the store, and remove the links each driver calls its own that the
        store does not know (a create whose rollback failed, or state from an older data root). Returns
        the bridge endpoints whose veth the same link dump shows missing or off their bridge, for the
        containers to wire again those that still run (see BridgeDriver.endpoint_in_place)."""
        nets = self.store.networks()
        links = link.all_links(self._host.get())  # one dump for every driver's check
        link.reap_retired(self._host.get(), links)
        for driver in self.drivers.values():
            for name in driver.orphans([n for n in nets if n.driver == driver.name], links):
                log.warning("removing orphan %s link %s (no network of ours owns it)", driver.name, name)
                driver.remove_orphan(name)
        if self.bridge.firewall:
            self.bridge.firewall.remove_legacy_rules(self.firewall_specs())
        bridges = {n.id: n for n in nets if n.driver == "bridge" and n.settings is not None}
        by_name = {found.name: found for found in links}
        self.bridge.restore_all(list(bridges.values()), by_name)
        for net in nets:
            if net.scope == "global" and self.global_networks is None:
                log.warning("global network %s (%s) is left alone: muslind runs without --cluster-store",
                            net.name, net.id[:12])
            elif net.settings is not None and net.driver != "bridge":  # bridges: restore_all above
                self.drivers[net.driver].restore(net)
        broken = [(bridges[network_id], container_id, endpoint_id)
                  for endpoint_id, network_id, container_id in self.store.endpoint_keys()
                  if network_id in bridges and not self.bridge.endpoint_in_place(bridges[network_id], endpoint_id, by_name)]
        return [(net, ep) for net, container_id, endpoint_id in broken
                for ep in self.store.endpoints(network_id=net.id, container_id=container_id) if ep.id == endpoint_id]

    def create(self, req: NetworkCreate) -> Network:
        name, driver = req.name, req.driver or "bridge"
        if not name:
            raise InvalidArgument("network name cannot be empty")
        if name in PREDEFINED:
            raise Forbidden(f"{name} is a pre-defined network and cannot be created")
        if driver in PLANNED_DRIVERS and driver not in self.drivers:
            raise InvalidArgument(f"the {driver} driver is not available in muslind yet; available: {', '.join(self.driver_names())}")
        if driver not in self.drivers:
            raise NotFound(f"plugin \"{driver}\" not found")
        if req.scope == "swarm":
            raise Forbidden("cannot create a swarm scoped network when swarm is not active")
        global_overlay = driver == "overlay" and self.global_networks is not None
        if req.scope not in ("", "local") and not (req.scope == "global" and global_overlay):
            # dockerd: a 500 with this message, outside a swarm
            raise Forbidden(NOT_A_SWARM_MANAGER)
        if req.ingress:  # only an overlay of a swarm can be one
            raise Forbidden("Ingress network can only be global scope network")
        if req.enable_ipv6:
            raise InvalidArgument("IPv6 networks are not supported by muslind yet")
        if req.ipam_driver not in ("", "default"):
            raise NotFound(f"plugin \"{req.ipam_driver}\" not found")
        configs = list(req.ipam_pools)
        if len(configs) > 1:
            raise InvalidArgument("muslind supports one IPv4 pool per network")
        net = Network(id=new_id(), name=name, driver=driver, created=now_rfc3339(), internal=req.internal,
                      attachable=req.attachable, ingress=req.ingress, options=dict(req.options),
                      labels=dict(req.labels), ipam_options=dict(req.ipam_options))
        if global_overlay and self.global_networks is not None:
            # Its own lock as a local create's (joins by name wait for the kernel); network_table is
            # taken inside, around the local check and record only (not around the cluster's calls).
            with self.locks.network(net.id, exclusive=True):
                return self.global_networks.create(net, configs[0] if configs else None, self.locks.network_table)
        # The new network's lock before network_table (see ``locks``): nobody can wait for an id that is
        # not recorded yet, and once it is, joins wait until the kernel has the network.
        with self.locks.network(net.id, exclusive=True):
            with self.locks.network_table:
                self._record(net, configs)
            try:
                self.drivers[driver].create_network(net)
            except Exception:
                with self.store.transaction() as db:
                    self.store.delete_network(db, net.id)
                raise
        log.info("created network %s (%s, %s, %s)", name, net.id[:12], driver, net.pools[0].subnet)
        return net

    def _record(self, net: Network, configs: list[IPAMPoolRequest]) -> None:
        """Choose the new network's pool and settings against the others, and commit its record."""
        name, driver = net.name, net.driver
        others = self.store.network_views()  # read only
        if any(n.name == name for n in others):
            raise Conflict(f"network with name {name} already exists")
        taken = [(n.name, n.pool.subnet) for n in others if n.pool]
        if configs:
            pool = ipam.pool_from_config(configs[0])
            ipam.check_no_overlap(pool.subnet, taken)
        else:
            pool = IPAMPool(subnet=ipam.choose_subnet([s for _, s in taken] + self._namespace_subnets()))
        if pool.gateway is None:
            pool.gateway = ipam.first_host(pool.subnet)
            taken_by = next((n for n, a in pool.aux_addresses.items() if a == pool.gateway), None)
            if taken_by is not None:  # the gateway is handed out first, as dockerd's IPAM does
                raise Conflict(f"failed to allocate secondary ip address ({taken_by}:{pool.gateway}): "
                               "Address already in use")
        net.pools = [pool]
        net.subnet_from_user = bool(configs)
        self.drivers[driver].prepare(net, others)
        with self.store.transaction() as db:
            self.store.put_network(db, net)

    def firewall_specs(self) -> list[BridgeSpec]:
        """What the firewall must hold for every bridge network of the store."""
        return [self.bridge.firewall_spec(n) for n in self.store.networks() if n.driver == "bridge" and n.settings is not None]

    def _namespace_subnets(self) -> list[IPv4Network]:
        ipr = self._host.get()
        routes = [r.dst for r in route.ipv4_routes(ipr)]
        addrs = [a.address.network for a in address.ipv4_addresses(ipr) if not a.address.ip.is_loopback]
        return routes + addrs

    def delete(self, ref: str) -> None:
        with self.locks.network(self.get(ref).id, exclusive=True):
            self._delete(ref)

    def _delete(self, ref: str) -> None:
        net = self.get(ref)  # again, under its lock: removed meanwhile, it is not found
        if net.predefined:
            raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
        if self.store.endpoints(network_id=net.id):
            raise Forbidden(f"error while removing network: network {net.name} id {net.id} has active endpoints")
        if net.scope == "global":
            if self.global_networks is None:
                raise Forbidden(f"network {net.name} is a global network: start muslind with --cluster-store to "
                                "remove it")
            self.global_networks.delete(net)
            return
        self.drivers[net.driver].delete_network(net)
        with self.store.transaction() as db:
            self.store.delete_network(db, net.id)
        log.info("removed network %s (%s)", net.name, net.id[:12])

    def prune(self, keep: Callable[[Network], bool]) -> list[str]:
        removed = []
        for net in self.store.networks():
            if net.predefined or keep(net) or self.store.endpoints(network_id=net.id):
                continue
            try:
                self.delete(net.id)
            except (NotFound, Forbidden):  # removed, or joined, since the listing
                continue
            removed.append(net.name)
        return removed

    # -- endpoints ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def joining(self, network_id: str) -> Iterator[Network]:
        """The network, held so that it stays while an endpoint is allocated and wired into it (not
        found: it was removed meanwhile). Overlays' joins go one at a time (their driver's shared
        namespace per network)."""
        exclusive = self.get(network_id).driver == "overlay"
        with self.locks.network(network_id, exclusive=exclusive):
            yield self.get(network_id)

    @staticmethod
    def check_endpoint_aliases(net: Network, aliases: list[str]) -> None:
        """dockerd answers names on the predefined networks through /etc/hosts only: no aliases there
        (refused at connect and at start)."""
        if net.predefined and aliases:
            raise InvalidArgument("network-scoped alias is supported only for containers in user defined networks")

    def allocate_endpoint(self, net: Network, container_id: str, container_name: str, ifname: str,
                          ip: str = "", mac: str = "", aliases: list[str] | None = None,
                          hostname: str = "", link_aliases: dict[str, str] | None = None,
                          link_local: list[IPv4Address] | None = None) -> Endpoint:
        """Reserve an address and record the endpoint (not yet wired)."""
        if net.driver not in ENDPOINT_DRIVERS:
            raise InvalidArgument(f"network {net.name} ({net.driver}) takes no endpoints")
        if self.store.endpoints(network_id=net.id, container_id=container_id):
            raise Forbidden(f"endpoint with name {container_name} already exists in network {net.name}")
        self.check_endpoint_aliases(net, list(aliases or []))
        pool = net.pool
        assert pool is not None
        if net.scope == "global":
            return self._allocate_global(net, container_id, container_name, ifname, ip, mac, aliases or [], hostname,
                                         dict(link_aliases or {}),
                                         [IPv4Interface(f"{a}/{LINK_LOCAL_PREFIX}") for a in link_local or []])
        with self.store.transaction() as db:
            allocated = self.store.allocated(net.id)
            if ip:
                address = ipam.parse_address(ip, "IPv4")
                if net.predefined:
                    raise InvalidArgument("user specified IP address is supported on user defined networks only")
                if not net.subnet_from_user:
                    raise InvalidArgument("user specified IP address is supported only when connecting to "
                                          "networks with user configured subnets")
                ipam.check_requested(pool, address, allocated)
            else:
                address = ipam.next_free(pool, allocated)
            self.store.allocate(db, net.id, address, container_id)
            ep = Endpoint(id=new_id(), network_id=net.id, container_id=container_id,
                          container_name=container_name,
                          address=IPv4Interface(f"{address}/{pool.subnet.prefixlen}"),
                          mac=mac or ipam.bridge_mac(address), ifname=ifname,
                          aliases=list(aliases or []), hostname=hostname,
                          gateway=None if net.internal else pool.gateway,  # internal: no way out, no default route
                          link_aliases=dict(link_aliases or {}),
                          link_local=[IPv4Interface(f"{a}/{LINK_LOCAL_PREFIX}") for a in link_local or []])
            self.store.put_endpoint(db, ep)
        return ep

    def _allocate_global(self, net: Network, container_id: str, container_name: str, ifname: str, ip: str,
                         mac: str, aliases: list[str], hostname: str, link_aliases: dict[str, str],
                         link_local: list[IPv4Interface]) -> Endpoint:
        """The address comes from the cluster store (the endpoint is published there with it), then
        the local record, as for a local network."""
        if self.global_networks is None:
            raise Forbidden(f"network {net.name} is a global network: start muslind with --cluster-store to use it")
        with self.global_networks.joining(net):  # until the local record, every encryption sync counts it
            ep = self.global_networks.allocate_endpoint(net, container_id, container_name, ifname, ip, mac, aliases,
                                                        hostname, link_aliases, link_local)
            assert ep.address is not None
            with self.store.transaction() as db:
                self.store.allocate(db, net.id, ep.address.ip, container_id)
                self.store.put_endpoint(db, ep)
        return ep

    def route_default_via(self, ep: Endpoint, sandbox: str) -> None:
        """The container's default route through this endpoint's gateway, replacing the one it had
        (dockerd moves it when the container's gateway endpoint changes)."""
        assert ep.gateway is not None
        with netns.iproute(sandbox) as ipr:
            index = link.index_of(ipr, ep.ifname)
            if index is not None:
                route.replace_default_route(ipr, index, ep.gateway)

    def wire_endpoint(self, net: Network, ep: Endpoint, sandbox: str) -> None:
        try:
            self.drivers[net.driver].join(net, ep, sandbox)
        except Exception:
            self.release_endpoint(net, ep, sandbox)
            raise

    def rewire_endpoint(self, net: Network, ep: Endpoint, sandbox: str) -> None:
        """Wire a recorded endpoint afresh (what is left of it goes first); the record stays as it is."""
        self.drivers[net.driver].leave(net, ep, sandbox)
        self.drivers[net.driver].join(net, ep, sandbox)

    def release_endpoint(self, net: Network, ep: Endpoint, sandbox: str | None = None) -> None:
        self.drivers[net.driver].leave(net, ep, sandbox)
        if net.scope == "global" and self.global_networks is not None:
            self.global_networks.release_endpoint(net, ep)
        with self.store.transaction() as db:
            self.store.delete_endpoint(db, ep.id)
            self.store.release(db, net.id, ep.container_id)

    # -- published ports -----------------------------------------------------------------------------
    def port_publisher(self, net: Network) -> PortPublisher | None:
        """The driver that publishes ports of this network's endpoints; None: it has no NAT (macvlan,
        host, none), and ports asked for on it are not published, as in Docker."""
        driver = self.drivers[net.driver]
        return driver if isinstance(driver, PortPublisher) else None

    def attach_gateway(self, container_id: str, container_name: str, sandbox: str,
                       wired: list[tuple[Network, Endpoint]]) -> list[tuple[Network, Endpoint]]:
        """docker_gwbridge's endpoint for a container whose networks (``wired``: every endpoint it has)
        are overlays only (see gwbridge)."""
        return self.gateway_bridge.attach(container_id, container_name, sandbox, wired)

    def unneeded_gateway(self, container_id: str, leaving_network_id: str = "") -> list[tuple[Network, Endpoint]]:
        """docker_gwbridge's endpoint of a container that no longer needs it (see gwbridge)."""
        return self.gateway_bridge.unneeded(container_id, leaving_network_id)

    def remote_endpoints(self, network_id: str) -> list[Endpoint]:
        """Other engines' endpoints on a global network (for the embedded DNS; any thread)."""
        if self.global_networks is None:
            return []
        return [Endpoint(id=r.endpoint_id, network_id=network_id, container_id=r.container_id,
                         container_name=r.name, address=r.address, mac=r.mac, ifname="", aliases=list(r.aliases),
                         hostname=r.hostname)
                for r in self.global_networks.remote_endpoints(network_id)]
