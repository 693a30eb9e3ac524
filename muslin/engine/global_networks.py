"""Global networks: the overlay networks every engine of a cluster shares, kept in the cluster store.

Keys under ``/<prefix>/network/v1.0/`` (``ClusterStore.root``):
  network/<id>          the network (JSON), created in one transaction with
  name/<name>           its name (so names are unique across the cluster),
  vni/<vni>             its VXLAN id (from 4096 up unless asked for), and
  subnet/<a.b.c.d_len>  its subnet (from 10.0.0.0/8 in /24s unless given);
  endpoint/<net>/<ep>   each engine's endpoints (JSON), created in one transaction with
  address/<net>/<ip>    their address: compare-and-swap, so an address is handed out once in the cluster;
  engine/<engine-id>    each engine's VTEP address;
  encryption/key        the cluster's IPsec key, made by the first ``--opt encrypted`` create (see
                        overlay_encryption: readable by whoever reads the store).
Endpoints, addresses and engines are written under the engine's lease: an engine that dies loses them
after its TTL, and the other engines drop its forwarding entries and names.

Every engine mirrors the global networks into its own store (so lists, inspects and containers treat
them as any network, with ``Scope: global``) and programs the overlay driver for them. It follows the
store by a watch from the revision of a full listing + 1, and lists again every RECONCILE_PERIOD (a
watch that broke, etcd that was away, a lease that was lost: each full listing brings the engine in
line). Changes are applied on the engine's cluster lane, in order, with the model held still; this
engine's own records (its VTEP, endpoints and addresses) are written to etcd after that, on the same lane
without the model lock (the writes touch no local state; a slow etcd must not hold up every API call).
An endpoint that leaves between the read of the local endpoints and their write has its record written
back; the next listing removes it as stale (``_sync_own``), as it removes any record a failed write left.

Ordering, as networks.py's rule with the cluster store as the authority: a create writes etcd first,
then the local record, then the kernel (a failure undoes all three); a remove takes the network out of
etcd in one transaction that also checks that no engine has an endpoint on it, then the kernel, then the
local record. An engine that died in between finds at its next listing a network etcd no longer has
(removed then), or one etcd has and it lacks (programmed then).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import TypeVar

from muslin.errors import Conflict, EngineError, Forbidden, InvalidArgument
from muslin.etcd import CALL_TIMEOUT, Absent, Delete, Present

from . import ipam
from .cluster_store import Change, ClusterStore, KeyValue, Put, StoreUnavailable, WatchCompacted
from .drivers.overlay import OverlayDriver, Peer, is_encrypted, requested_vni
from .firewall import Firewall
from .model import Endpoint, IPAMPool, Network, new_id
from .overlay_encryption import ClusterKey, OverlayEncryption
from .requests import IPAMPoolRequest
from .settings import OverlaySettings
from .store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
# Writes of this engine's records to the cluster store, run after the change that computed them, without
# the model lock; and a change of the cluster lane, which returns its writes if it has any.
StoreWrites = Callable[[], None]
ClusterJob = Callable[[], StoreWrites | None]

GLOBAL_POOL = IPv4Network("10.0.0.0/8")  # Docker's default global address pool, in /24s
GLOBAL_SUBNET_PREFIX = 24
FIRST_VNI = 4096  # libnetwork's overlay hands VNIs out from here
LAST_VNI = 0xFFFFFF
RECONCILE_PERIOD = 10.0  # seconds between full listings
CREATE_ATTEMPTS = 16  # a lost race for a VNI, subnet or address is retried with the next free one
# How long an endpoint's address may wait for the store: one member's try. It is taken on the engine's
# only worker, so with etcd away a connect fails with 503 soon rather than hold every other operation.
ALLOCATE_WAIT = CALL_TIMEOUT + 2


@dataclass(frozen=True)
class RemoteEndpoint:
    """Another engine's endpoint on a global network, as that engine published it."""

    engine: str
    vtep: IPv4Address
    endpoint_id: str
    container_id: str
    name: str
    aliases: tuple[str, ...]
    hostname: str
    address: IPv4Interface
    mac: str


def engine_id(data_root: Path) -> str:
    """This engine's identity in the cluster, kept across restarts (dockerd's engine-id file)."""
    path = data_root / "engine-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        ident = new_id()[:32]
        path.write_text(ident + "\n")
        return ident


def _network_doc(net: Network) -> bytes:
    pool = net.pool
    assert pool is not None and isinstance(net.settings, OverlaySettings)
    return json.dumps({
        "id": net.id, "name": net.name, "created": net.created, "vni": net.settings.vni,
        "subnet": str(pool.subnet), "gateway": str(pool.gateway) if pool.gateway else None,
        "ip_range": str(pool.ip_range) if pool.ip_range else None,
        "aux_addresses": {k: str(v) for k, v in pool.aux_addresses.items()},
        "subnet_from_user": net.subnet_from_user, "internal": net.internal, "attachable": net.attachable,
        "options": net.options, "labels": net.labels, "ipam_options": net.ipam_options,
    }).encode()


class ForeignRecord(ValueError):
    """A record under the cluster store's prefix that muslind did not write: dockerd's libnetwork keeps
    its own ``network/`` and ``endpoint/`` records, in formats of its own, under the same default prefix."""


def _foreign_as_error(parse: Callable[[bytes], T]) -> Callable[[bytes], T]:
    @functools.wraps(parse)
    def checked(value: bytes) -> T:
        try:
            return parse(value)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ForeignRecord(f"{type(exc).__name__}: {exc}") from None
    return checked


@_foreign_as_error
def _network_from_doc(value: bytes) -> Network:
    doc = json.loads(value)
    pool = IPAMPool(subnet=IPv4Network(doc["subnet"]),
                    gateway=IPv4Address(doc["gateway"]) if doc["gateway"] else None,
                    ip_range=IPv4Network(doc["ip_range"]) if doc["ip_range"] else None,
                    aux_addresses={k: IPv4Address(v) for k, v in doc["aux_addresses"].items()})
    return Network(id=doc["id"], name=doc["name"], driver="overlay", created=doc["created"], pools=[pool],
                   internal=doc["internal"], attachable=doc["attachable"], options=doc["options"],
                   labels=doc["labels"], ipam_options=doc["ipam_options"], settings=OverlaySettings(vni=doc["vni"]),
                   scope="global", subnet_from_user=doc["subnet_from_user"])


def _subnet_key(subnet: IPv4Network) -> str:
    return str(subnet).replace("/", "_")


class GlobalNetworks:
    """The cluster's overlay networks, their addresses and endpoints, seen from this engine."""

    def __init__(self, cluster: ClusterStore, store: Store, driver: OverlayDriver, me: str,
                 submit: Callable[[ClusterJob], object], firewall: Firewall | None = None) -> None:
        self.cluster = cluster
        self.store = store
        self.driver = driver
        self.me = me
        self._submit_raw = submit
        self._remote: dict[str, dict[str, RemoteEndpoint]] = {}  # network id → endpoint id → (worker only writes)
        self._unreachable = False
        self._closed = False
        # endpoint records leaving the store (future → network id), on the store's thread
        self._releasing: dict[concurrent.futures.Future[object], str] = {}
        root = cluster.root
        self.k_network, self.k_name, self.k_vni = root + "network/", root + "name/", root + "vni/"
        self.k_subnet, self.k_endpoint, self.k_address = root + "subnet/", root + "endpoint/", root + "address/"
        self.k_engine = root + "engine/"
        self._foreign: set[str] = set()  # keys of records not muslind's, warned about once (worker only)
        self.k_key = root + "encryption/key"
        self._key: ClusterKey | None = None
        self.encryption = OverlayEncryption(firewall.commit_beside if firewall is not None else None)
        # One encryption sync at a time, from its reading of the model to its last kernel change: joins of
        # different networks run at once, and a sync that read the model before another's join would undo
        # that join's SAs and marks. Taken inside the network locks, outside the firewall's.
        self._encryption_lock = threading.Lock()
        # Encrypted networks with a join under way (from before its sync until its local endpoint record),
        # counted as joined by every sync meanwhile (under _encryption_lock).
        self._joining: collections.Counter[str] = collections.Counter()

    # -- start and follow --------------------------------------------------------------------------
    def start(self) -> None:
        """On the worker, at engine start: the lease, a first listing (so containers of global networks
        recover with their networks there), then the watch. etcd away: all of it comes when it does."""
        self.cluster.on_new_lease = lambda: self._submit(self.republish)
        self.cluster.start_lease()
        try:
            entries, _ = self.cluster.list(self.cluster.root)
        except StoreUnavailable as exc:
            log.warning("%s: global networks follow when it answers", exc.message)
        else:
            self._apply_listing(entries)()
            if self.cluster.lease_id:
                self.republish()()
        self.cluster.spawn(self._follow())

    def close(self) -> None:
        """Stop following (changes already queued for the worker are dropped) and close the store."""
        self._closed = True
        self.cluster.close()

    def _submit(self, fn: ClusterJob) -> None:
        def logged() -> StoreWrites | None:
            if self._closed:
                return None
            try:
                writes = fn()
            except Exception:  # noqa: BLE001 - one bad record must not stop the following
                log.exception("applying the cluster store's state failed")
                return None
            return None if writes is None else functools.partial(self._write_logged, writes)
        try:
            self._submit_raw(logged)
        except RuntimeError:  # the worker is shut down: the engine is closing
            pass

    def _write_logged(self, writes: StoreWrites) -> None:
        if self._closed:
            return
        try:
            writes()
        except Exception:  # noqa: BLE001 - the next listing writes them again
            log.exception("writing this engine's records to the cluster store failed (the next listing tries again)")

    async def _follow(self) -> None:
        """Runs on the cluster store's loop until the engine closes."""
        while True:
            try:
                entries, revision = await self.cluster.list_async(self.cluster.root)
                if self._unreachable:
                    log.info("cluster store %s answers again: catching up", self.cluster.config.url)
                    self._unreachable = False
                self._submit(functools.partial(self._apply_listing, entries))
                async for change in self.cluster.watch(self.cluster.root, revision + 1, RECONCILE_PERIOD):
                    self._submit(functools.partial(self._apply_change, change))
            except StoreUnavailable as exc:
                if not self._unreachable:
                    log.warning("%s: existing overlays keep working; retrying", exc.message)
                    self._unreachable = True
                await asyncio.sleep(1)
            except WatchCompacted:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the follower must outlive any one failure
                log.exception("following the cluster store failed; listing again")
                await asyncio.sleep(1)

    # -- applying the store's state (worker thread) ----------------------------------------------------
    def _apply_listing(self, entries: list[KeyValue]) -> StoreWrites:
        networks: dict[str, Network] = {}
        endpoints: dict[str, dict[str, RemoteEndpoint]] = {}
        for kv in entries:
            if kv.key.startswith(self.k_network):
                if (net := self._read(_network_from_doc, kv.key, kv.value)) is not None:
                    networks[net.id] = net
            elif kv.key.startswith(self.k_endpoint):
                net_id, _, ep_id = kv.key[len(self.k_endpoint):].partition("/")
                if (remote := self._read(self._remote_from_doc, kv.key, kv.value)) is not None:
                    endpoints.setdefault(net_id, {})[ep_id] = remote
        self._key = next((self._key_from(kv.value) for kv in entries if kv.key == self.k_key), None)
        local = {n.id: n for n in self.store.networks() if n.scope == "global"}
        for net in networks.values():
            if net.id not in local:
                self._mirror(net)
            else:
                self.driver.restore(local[net.id])
        for net in local.values():
            if net.id not in networks:
                self._forget(net)
        self._remote = {net_id: {ep_id: r for ep_id, r in eps.items() if r.engine != self.me}
                        for net_id, eps in endpoints.items()}
        self._sync_encryption()  # before the forwarding entries it protects
        for net in self.store.networks():
            if net.scope == "global":
                self._sync_peers(net)
        return self._sync_own(endpoints)

    def _apply_change(self, change: Change) -> None:
        if change.key == self.k_key:
            self._key = self._key_from(change.value) if change.kind == "put" else None
            self._sync_encryption()
        elif change.key.startswith(self.k_network):
            net_id = change.key[len(self.k_network):]
            known = self.store.find_networks(net_id)
            if change.kind == "put" and not known:
                if (net := self._read(_network_from_doc, change.key, change.value)) is not None:
                    self._mirror(net)
            elif change.kind == "delete" and known and known[0].id == net_id:
                self._forget(known[0])
        elif change.key.startswith(self.k_endpoint):
            net_id, _, ep_id = change.key[len(self.k_endpoint):].partition("/")
            eps = dict(self._remote.get(net_id, {}))
            if change.kind == "put":
                remote = self._read(self._remote_from_doc, change.key, change.value)
                if remote is None or remote.engine == self.me:
                    return
                eps[ep_id] = remote
            elif eps.pop(ep_id, None) is None:
                return
            self._remote[net_id] = eps
            for net in self.store.find_networks(net_id):
                if net.id != net_id:
                    continue
                # as libnetwork: IPsec towards a peer before its forwarding entry, and after it when it goes
                if is_encrypted(net) and change.kind == "put":
                    self._sync_encryption()
                self._sync_peers(net)
                if is_encrypted(net) and change.kind == "delete":
                    self._sync_encryption()

    def _mirror(self, net: Network) -> None:
        """A global network this engine did not know: recorded, then programmed (networks.py's order)."""
        if any(n.name == net.name for n in self.store.networks()):
            log.error("global network %s (%s) has the name of a local network: not usable on this engine",
                      net.name, net.id[:12])
            return
        with self.store.transaction() as db:
            self.store.put_network(db, net)
        self.driver.create_network(net)
        log.info("global network %s (%s, VNI %d) appeared", net.name, net.id[:12], self._vni(net))

    def _forget(self, net: Network) -> None:
        """A global network gone from the cluster store: unprogrammed, then its record dropped."""
        if self.store.endpoints(network_id=net.id):
            log.error("global network %s (%s) is gone from the cluster store but has endpoints here: kept "
                      "until they leave", net.name, net.id[:12])
            return
        self.driver.delete_network(net)
        with self.store.transaction() as db:
            self.store.delete_network(db, net.id)
        self._remote.pop(net.id, None)
        log.info("global network %s (%s) removed", net.name, net.id[:12])
        self._resync_encryption_after(net)

    def _sync_encryption(self, leaving: str = "") -> None:
        """IPsec towards every engine that shares an encrypted network with this one, where this one has
        an endpoint or a join under way (``leaving``: an endpoint about to go), as libnetwork programs it;
        see overlay_encryption."""
        with self._encryption_lock:
            encrypted = [n for n in self.store.networks() if n.scope == "global" and is_encrypted(n)]
            key = self._key
            if key is None or (not encrypted and not self.encryption.active):
                return  # without a key what the kernel holds stays: taking it away would let VXLAN out in plain
            remotes: set[IPv4Address] = set()
            vnis: set[int] = set()
            for net in encrypted:
                local = [ep for ep in self.store.endpoints(network_id=net.id) if ep.id != leaving]
                if local or self._joining[net.id]:
                    vnis.add(self._vni(net))
                    remotes.update(r.vtep for r in self._remote.get(net.id, {}).values())
            self.encryption.sync(self.driver.underlay.ip, remotes, vnis, key)

    @contextlib.contextmanager
    def joining(self, net: Network) -> Iterator[None]:
        """Around a join of a global network, from before ``allocate_endpoint`` until the endpoint's local
        record is committed: every encryption sync meanwhile counts the network as joined (a sync for
        another network must not take away the SAs and marks this join has just added). A join that
        fails leaves the encryption as the remaining endpoints want it."""
        if not is_encrypted(net):
            yield
            return
        with self._encryption_lock:
            self._joining[net.id] += 1
        try:
            yield
        except BaseException:
            self._joined(net.id)
            self._resync_encryption_after(net)
            raise
        self._joined(net.id)

    def _joined(self, network_id: str) -> None:
        with self._encryption_lock:
            self._joining[network_id] -= 1
            if not self._joining[network_id]:
                del self._joining[network_id]

    def _resync_encryption_after(self, net: Network) -> None:
        """The encryption without what a network that is gone (or a join that failed) needed; an error is
        logged, not raised (what it follows is done; the next listing tries again)."""
        if not is_encrypted(net):
            return
        try:
            self._sync_encryption()
        except EngineError as exc:
            log.error("%s (the next listing of the store tries again)", exc.message)
        except Exception:  # noqa: BLE001 - a join's own error must not be hidden by this one
            log.exception("syncing the network encryption failed (the next listing of the store tries again)")

    def _sync_peers(self, net: Network) -> None:
        peers = [Peer(ip=r.address.ip, mac=r.mac, vtep=r.vtep) for r in self._remote.get(net.id, {}).values()]
        self.driver.sync_peers(net, peers)

    def _sync_own(self, listed: dict[str, dict[str, RemoteEndpoint]]) -> StoreWrites:
        """The writes that make this engine's records in the store exactly its endpoints on global
        networks (read now, under the model lock; written by what is returned, without it)."""
        mine = {(ep.network_id, ep.id): ep for net in self.store.networks() if net.scope == "global"
                for ep in self.store.endpoints(network_id=net.id)}
        published = {(net_id, ep_id): r for net_id, eps in listed.items() for ep_id, r in eps.items()
                     if r.engine == self.me}
        # endpoint ids are never reused: a record stale now stays stale once the lock is released
        stale = [(net_id, ep_id, r.address.ip) for (net_id, ep_id), r in published.items()
                 if (net_id, ep_id) not in mine]
        missing = [ep for key, ep in mine.items() if key not in published]

        def write() -> None:
            for net_id, ep_id, address in stale:
                log.info("removing a stale endpoint record %s of this engine", ep_id[:12])
                self.cluster.transaction([], [Delete(self._endpoint_key(net_id, ep_id)),
                                              Delete(self._address_key(net_id, address))])
            if missing and self.cluster.lease_id:
                self._publish(missing)
        return write

    def republish(self) -> StoreWrites:
        """Under a new lease (a first one, or one that replaced an expired one): this engine's VTEP,
        endpoints and addresses, read now and written again by what is returned."""
        mine = [ep for net in self.store.networks() if net.scope == "global"
                for ep in self.store.endpoints(network_id=net.id)]
        return functools.partial(self._publish, mine)

    def _publish(self, endpoints: list[Endpoint]) -> None:
        self.cluster.put(self.k_engine + self.me, str(self.driver.underlay.ip).encode(), leased=True)
        for ep in endpoints:
            assert ep.address is not None
            done = self.cluster.transaction(
                [Present(self.k_network + ep.network_id)],
                [Put(self._address_key(ep.network_id, ep.address.ip), ep.id.encode(), leased=True),
                 Put(self._endpoint_key(ep.network_id, ep.id), self._endpoint_doc(ep), leased=True)])
            if not done:
                log.error("endpoint %s of container %s is on a global network the cluster store no longer has",
                          ep.id[:12], ep.container_name)

    # -- networks --------------------------------------------------------------------------------------
    def create(self, net: Network, config: IPAMPoolRequest | None, network_table: threading.Lock) -> Network:
        """Store a new global network in the cluster (atomically: name, VNI and subnet are the cluster's
        to give out once), then record and program it here. ``network_table``: the engine's lock of the
        local networks' names and subnets, held from the local check to the local record (a local create
        meanwhile either sees the record or is seen by the check)."""
        self.driver.prepare(net, [])
        if any(n.name == net.name for n in self.store.networks()):
            raise Conflict(f"network with name {net.name} already exists")
        user_pool = ipam.pool_from_config(config) if config else None
        wanted_vni = requested_vni(net)
        if is_encrypted(net):
            self._ensure_key()
        for _ in range(CREATE_ATTEMPTS):
            entries, _ = self.cluster.list(self.cluster.root)
            others = [other for kv in entries if kv.key.startswith(self.k_network)
                      if (other := self._read(_network_from_doc, kv.key, kv.value)) is not None]
            if any(o.name == net.name for o in others):
                raise Conflict(f"network with name {net.name} already exists")
            taken = [(o.name, o.pool.subnet) for o in others if o.pool]
            if user_pool is not None:
                ipam.check_no_overlap(user_pool.subnet, taken)
                pool = user_pool
            else:
                pool = IPAMPool(subnet=self._free_subnet([s for _, s in taken]))
            if pool.gateway is None:
                pool.gateway = ipam.first_host(pool.subnet)
            used_vnis = {o.settings.vni for o in others if isinstance(o.settings, OverlaySettings)}
            if wanted_vni is not None and wanted_vni in used_vnis:
                raise Conflict(f"VXLAN id {wanted_vni} is already used by another overlay network")
            vni = wanted_vni or next((v for v in range(FIRST_VNI, LAST_VNI) if v not in used_vnis), None)
            if vni is None:
                raise Conflict("no free VXLAN id left for an overlay network")
            net.pools, net.subnet_from_user = [pool], user_pool is not None
            net.settings, net.scope = OverlaySettings(vni=vni), "global"
            created = self.cluster.transaction(
                [Absent(self.k_name + net.name), Absent(self.k_vni + str(vni)),
                 Absent(self.k_subnet + _subnet_key(pool.subnet))],
                [Put(self.k_network + net.id, _network_doc(net)), Put(self.k_name + net.name, net.id.encode()),
                 Put(self.k_vni + str(vni), net.id.encode()),
                 Put(self.k_subnet + _subnet_key(pool.subnet), net.id.encode())])
            if created:
                break
        else:
            raise Conflict(f"could not create network {net.name}: other engines kept taking the same name, "
                           "VXLAN id or subnet")
        try:
            with network_table:
                self._check_local(net)
                with self.store.transaction() as db:
                    self.store.put_network(db, net)
            self.driver.create_network(net)
        except Exception:
            self._undo_create(net)
            raise
        log.info("created global network %s (%s, VNI %d, %s)", net.name, net.id[:12], vni, pool.subnet)
        return net

    def _check_local(self, net: Network) -> None:
        """What the checks before the cluster's transaction found free here still is (a local network may
        have been created since): the name, and a subnet chosen for the network (one given by the user
        may overlap a local network's, as before)."""
        assert net.pool is not None
        local = self.store.networks()
        if any(n.name == net.name for n in local):
            raise Conflict(f"network with name {net.name} already exists")
        if not net.subnet_from_user:
            ipam.check_no_overlap(net.pool.subnet, [(n.name, n.pool.subnet) for n in local if n.pool])

    def _ensure_key(self) -> None:
        """The cluster's IPsec key: the one in the store, or a new one put there if there is none yet
        (the first engine to put it wins; the others read it)."""
        if self._key is not None:
            return
        fresh = ClusterKey.generate()
        self.cluster.transaction([Absent(self.k_key)], [Put(self.k_key, fresh.to_doc())])
        stored = self.cluster.get(self.k_key)
        if stored is None:
            raise EngineError("the cluster's encryption key vanished from the cluster store right after it was made")
        self._key = self._key_from(stored.value)
        if self._key is None:
            raise EngineError("the cluster's encryption key in the cluster store is unreadable: see the log")

    @staticmethod
    def _key_from(value: bytes) -> ClusterKey | None:
        """The key record, or None (logged) if it is not one: no encrypted traffic rather than no listing."""
        try:
            return ClusterKey.from_doc(value)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("the cluster's encryption key in the cluster store is unreadable (%s): encrypted overlay "
                      "networks carry nothing until it is put right", exc)
            return None

    def _undo_create(self, net: Network) -> None:
        try:
            with self.store.transaction() as db:
                self.store.delete_network(db, net.id)
            self.cluster.transaction([], self._network_deletes(net))
        except Exception:  # noqa: BLE001 - the next listing removes what is left
            log.exception("undoing the create of %s failed", net.name)

    def _free_subnet(self, taken: list[IPv4Network]) -> IPv4Network:
        local = [n.pool.subnet for n in self.store.networks() if n.pool]
        for candidate in GLOBAL_POOL.subnets(new_prefix=GLOBAL_SUBNET_PREFIX):
            if not any(candidate.overlaps(t) for t in taken + local):
                return candidate
        raise Conflict("could not find an available, non-overlapping IPv4 address pool among the defaults to "
                       "assign to the network")

    def _network_deletes(self, net: Network) -> list[Put | Delete]:
        assert net.pool is not None
        return [Delete(self.k_network + net.id), Delete(self.k_name + net.name),
                Delete(self.k_vni + str(self._vni(net))), Delete(self.k_subnet + _subnet_key(net.pool.subnet))]

    def delete(self, net: Network) -> None:
        """Out of the cluster store only if no engine has an endpoint on it (checked in the same
        transaction), then out of this engine; the others follow by their watch."""
        if self.store.endpoints(network_id=net.id):
            raise Forbidden(f"error while removing network: network {net.name} id {net.id} has active endpoints")
        removed = self.cluster.transaction([Absent(self._endpoint_key(net.id, ""), prefix=True)],
                                           self._network_deletes(net))
        if not removed:
            raise Forbidden(f"error while removing network: network {net.name} id {net.id} has active endpoints")
        self._remote.pop(net.id, None)
        self.driver.delete_network(net)
        with self.store.transaction() as db:
            self.store.delete_network(db, net.id)
        log.info("removed global network %s (%s)", net.name, net.id[:12])
        self._resync_encryption_after(net)  # its VNI's marks, and SAs towards engines only it shared, go

    # -- endpoints -------------------------------------------------------------------------------------
    def allocate_endpoint(self, net: Network, container_id: str, container_name: str, ifname: str, ip: str,
                          mac: str, aliases: list[str], hostname: str, link_aliases: dict[str, str],
                          link_local: list[IPv4Interface]) -> Endpoint:
        """An address of the network that no engine holds, taken with the endpoint's record in one
        compare-and-swap transaction (a race lost is retried with the next free address); all of it
        within ALLOCATE_WAIT, else StoreUnavailable. Called inside ``joining(net)``."""
        pool = net.pool
        assert pool is not None
        self.driver.check_encryption(net, "join")  # an encrypted network that an engine with ESP created
        if is_encrypted(net) and self._key is None:
            raise Forbidden("cannot join secure network: encryption keys not present")
        if not self.cluster.lease_id:
            raise StoreUnavailable(f"the cluster store {self.cluster.config.url} is unreachable: no lease yet")
        requested = ipam.parse_address(ip, "IPv4") if ip else None
        if requested is not None and not net.subnet_from_user:
            raise InvalidArgument("user specified IP address is supported only when connecting to networks with "
                                  "user configured subnets")

        def endpoint(address: IPv4Address) -> Endpoint:
            return Endpoint(id=new_id(), network_id=net.id, container_id=container_id, container_name=container_name,
                            address=IPv4Interface(f"{address}/{pool.subnet.prefixlen}"),
                            mac=mac or ipam.bridge_mac(address), ifname=ifname, aliases=list(aliases),
                            hostname=hostname, gateway=None,  # the way out is the gateway bridge's
                            link_aliases=dict(link_aliases), link_local=list(link_local))

        deadline = time.monotonic() + ALLOCATE_WAIT
        # an address this engine released a moment ago is free again before the next is chosen
        concurrent.futures.wait([f for f, net_id in list(self._releasing.items()) if net_id == net.id],
                                timeout=ALLOCATE_WAIT)
        left = deadline - time.monotonic()
        if left <= 0:
            raise StoreUnavailable(f"the cluster store {self.cluster.config.url} did not answer within "
                                   f"{ALLOCATE_WAIT:g}s")
        ep = self.cluster.run(self._take_address(net, pool, requested, endpoint), timeout=left)
        if is_encrypted(net):
            try:
                self._sync_encryption()  # joining(net) counts it in
            except Exception:
                self.release_endpoint(net, ep)
                raise
        return ep

    async def _take_address(self, net: Network, pool: IPAMPool, requested: IPv4Address | None,
                            endpoint: Callable[[IPv4Address], Endpoint]) -> Endpoint:
        for _ in range(CREATE_ATTEMPTS):
            entries, _ = await self.cluster.list_async(self.k_address + net.id + "/")
            allocated = {IPv4Address(kv.key.rpartition("/")[2]) for kv in entries}
            if requested is not None:
                ipam.check_requested(pool, requested, allocated)
                address = requested
            else:
                address = ipam.next_free(pool, allocated)
            ep = endpoint(address)
            if await self.cluster.transaction_async(
                    [Present(self.k_network + net.id), Absent(self._address_key(net.id, address))],
                    [Put(self._address_key(net.id, address), ep.id.encode(), leased=True),
                     Put(self._endpoint_key(net.id, ep.id), self._endpoint_doc(ep), leased=True)]):
                return ep
            if await self.cluster.get_async(self.k_network + net.id) is None:
                raise EngineError(f"network {net.name} is gone from the cluster store")
            if requested is not None:
                raise Conflict(f"Address already in use: {requested}")
        raise Conflict(f"could not allocate an address on {net.name}: other engines kept taking the same one")

    def release_endpoint(self, net: Network, ep: Endpoint) -> None:
        """The endpoint's record and address out of the store, on the store's thread without waiting
        (etcd away must not hold the engine's worker); if that fails, the next listing removes them
        (``_sync_own``)."""
        assert ep.address is not None
        future = self.cluster.run_detached(
            self.cluster.transaction_async([], [Delete(self._endpoint_key(net.id, ep.id)),
                                                Delete(self._address_key(net.id, ep.address.ip))]),
            what=f"releasing endpoint {ep.id[:12]} of {ep.container_name} on {net.name}")
        self._releasing[future] = net.id
        future.add_done_callback(lambda done: self._releasing.pop(done, None))
        if is_encrypted(net):
            try:
                self._sync_encryption(leaving=ep.id)
            except EngineError as exc:
                log.error("%s (the next listing of the store tries again)", exc.message)

    def remote_endpoints(self, network_id: str) -> list[RemoteEndpoint]:
        """Other engines' endpoints on the network (read by the embedded DNS, from the event loop)."""
        return list(self._remote.get(network_id, {}).values())

    # -- records ---------------------------------------------------------------------------------------
    def _read(self, parse: Callable[[bytes], T], key: str, value: bytes) -> T | None:
        """A record parsed, or None for one that is not muslind's (warned about once)."""
        try:
            return parse(value)
        except ForeignRecord as exc:
            if key not in self._foreign:
                self._foreign.add(key)
                log.warning("%s is not a muslind record (%s): ignored. Another kind of engine (dockerd?) uses the "
                            "prefix %s: give muslind a --cluster-store prefix of its own, like etcd://HOST:PORT/muslin (the default)",
                            key, exc, self.cluster.root)
            return None

    def _endpoint_key(self, net_id: str, ep_id: str) -> str:
        return f"{self.k_endpoint}{net_id}/{ep_id}"

    def _address_key(self, net_id: str, address: IPv4Address) -> str:
        return f"{self.k_address}{net_id}/{address}"

    def _endpoint_doc(self, ep: Endpoint) -> bytes:
        return json.dumps({"engine": self.me, "vtep": str(self.driver.underlay.ip), "id": ep.id,
                           "container_id": ep.container_id, "name": ep.container_name, "aliases": ep.aliases,
                           "hostname": ep.hostname, "address": str(ep.address), "mac": ep.mac}).encode()

    @staticmethod
    @_foreign_as_error
    def _remote_from_doc(value: bytes) -> RemoteEndpoint:
        doc = json.loads(value)
        return RemoteEndpoint(engine=doc["engine"], vtep=IPv4Address(doc["vtep"]), endpoint_id=doc["id"],
                              container_id=doc["container_id"], name=doc["name"], aliases=tuple(doc["aliases"]),
                              hostname=doc["hostname"], address=IPv4Interface(doc["address"]), mac=doc["mac"])

    @staticmethod
    def _vni(net: Network) -> int:
        assert isinstance(net.settings, OverlaySettings)
        return net.settings.vni

