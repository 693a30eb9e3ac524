"""The engine's embedded store: SQLite under --data-root.

One table per kind of record, each row a JSON document plus the columns that must be unique (names,
addresses). Uniqueness is enforced by SQLite, so two racing creates cannot both win, and every change
the engine makes is one transaction: a muslind killed halfway leaves either the old or the new record.

Threads: transactions go one at a time through the one writing connection, under the store's lock; a
read inside a transaction uses it too (it sees the transaction's writes). Other reads use a connection
of their thread's own: in WAL mode readers never wait for the writer, so the event loop answering a
`docker ps` never waits for a worker's transaction; they see the last committed state.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from .model import Endpoint, IPAMPool, Network

# Reading every network or endpoint back was mostly parsing their addresses (ipaddress parses an octet
# at a time: a network's three took 40 of its 60 us, 200 networks 12 ms per scan). The objects are
# immutable, so the same text can give the same object: one parse per distinct address, not per read.
_address = functools.lru_cache(maxsize=16384)(IPv4Address)
_subnet = functools.lru_cache(maxsize=4096)(IPv4Network)
_interface = functools.lru_cache(maxsize=16384)(IPv4Interface)
DECODED_NETWORKS = 4096
from .settings import BridgeSettings, DriverSettings, MacvlanMode, MacvlanSettings, OverlaySettings, ParentOrigin, Vlan

SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, network_id TEXT NOT NULL, container_id TEXT NOT NULL, doc TEXT NOT NULL,
    UNIQUE (network_id, container_id));
-- A container's endpoints (each start, exit and removal asks) without reading every endpoint.
CREATE INDEX IF NOT EXISTS endpoints_by_container ON endpoints (container_id);
CREATE TABLE IF NOT EXISTS addresses (
    network_id TEXT NOT NULL, address TEXT NOT NULL, owner TEXT NOT NULL, PRIMARY KEY (network_id, address));
CREATE TABLE IF NOT EXISTS containers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
-- The few containers with legacy links: a start finds the parents to update without reading every row.
CREATE INDEX IF NOT EXISTS containers_with_links ON containers (id) WHERE json_array_length(doc, '$.links') > 0;
CREATE TABLE IF NOT EXISTS ports (
    proto TEXT NOT NULL, host_ip TEXT NOT NULL, host_port INTEGER NOT NULL, container_id TEXT NOT NULL,
    PRIMARY KEY (proto, host_ip, host_port));
CREATE INDEX IF NOT EXISTS ports_by_container ON ports (container_id);
CREATE TABLE IF NOT EXISTS volumes (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dns_ports (
    container_id TEXT PRIMARY KEY, udp_port INTEGER NOT NULL, tcp_port INTEGER NOT NULL);
"""


def _settings_to_doc(settings: DriverSettings | None) -> dict[str, Any] | None:
    if isinstance(settings, BridgeSettings):
        return {"bridge_name": settings.bridge_name, "mtu": settings.mtu, "icc": settings.icc,
                "masquerade": settings.masquerade, "host_binding": str(settings.host_binding)}
    if isinstance(settings, MacvlanSettings):
        return {"parent": settings.parent, "mode": settings.mode.value, "origin": settings.origin.value,
                "vlan": {"base": settings.vlan.base, "vid": settings.vlan.vid} if settings.vlan else None}
    if isinstance(settings, OverlaySettings):
        return {"vni": settings.vni}
    return None


def _settings_from_doc(driver: str, doc: dict[str, Any] | None) -> DriverSettings | None:
    if doc is None:
        return None
    if driver == "bridge":
        return BridgeSettings(bridge_name=doc["bridge_name"], mtu=doc["mtu"], icc=doc["icc"],
                              masquerade=doc["masquerade"], host_binding=_address(doc["host_binding"]))
    if driver == "macvlan":
        vlan = doc["vlan"]
        return MacvlanSettings(parent=doc["parent"], mode=MacvlanMode(doc["mode"]), origin=ParentOrigin(doc["origin"]),
                               vlan=Vlan(base=vlan["base"], vid=vlan["vid"]) if vlan else None)
    if driver == "overlay":
        return OverlaySettings(vni=doc["vni"])
    raise ValueError(f"a network of driver {driver} has no settings")


def _settings_from_resolved(driver: str, resolved: dict[str, str]) -> DriverSettings | None:
    """The settings of a data root written before they were typed: a dict of strings named ``resolved``."""
    if not resolved:
        return None
    if driver == "bridge":
        return BridgeSettings(bridge_name=resolved["bridge"], mtu=int(resolved["mtu"]),
                              icc=resolved["icc"] == "true", masquerade=resolved["masquerade"] == "true",
                              host_binding=IPv4Address(resolved["host_binding_ipv4"]))
    if driver == "macvlan":
        parent, created = resolved["parent"], resolved["created_parent"]
        vlan = None
        if created == "vlan":
            base, _, vid = parent.rpartition(".")
            vlan = Vlan(base=base, vid=int(vid))
        return MacvlanSettings(parent=parent, mode=MacvlanMode(resolved["mode"]),
                               origin=ParentOrigin(created) if created else ParentOrigin.USER, vlan=vlan)
    raise ValueError(f"a network of driver {driver} has no settings")


def _network_to_doc(net: Network) -> str:
    doc = asdict(net)
    doc["pools"] = [
        {
            "subnet": str(p.subnet),
            "gateway": str(p.gateway) if p.gateway else None,
            "ip_range": str(p.ip_range) if p.ip_range else None,
            "aux_addresses": {k: str(v) for k, v in p.aux_addresses.items()},
        }
        for p in net.pools
    ]
    doc["settings"] = _settings_to_doc(net.settings)
    return json.dumps(doc)


def _network_from_doc(text: str) -> Network:
    doc = json.loads(text)
    doc["pools"] = [
        IPAMPool(
            subnet=_subnet(p["subnet"]),
            gateway=_address(p["gateway"]) if p["gateway"] else None,
            ip_range=_subnet(p["ip_range"]) if p["ip_range"] else None,
            aux_addresses={k: _address(v) for k, v in p["aux_addresses"].items()},
        )
        for p in doc["pools"]
    ]
    if "resolved" in doc:
        doc["settings"] = _settings_from_resolved(doc["driver"], doc.pop("resolved"))
    else:
        doc["settings"] = _settings_from_doc(doc["driver"], doc["settings"])
    return Network(**doc)


def _copy_network(net: Network) -> Network:
    """A copy that shares nothing mutable with ``net`` (its settings and addresses are immutable)."""
    return replace(net, pools=[replace(p, aux_addresses=dict(p.aux_addresses)) for p in net.pools],
                   ipam_options=dict(net.ipam_options), options=dict(net.options), labels=dict(net.labels))


def _endpoint_to_doc(ep: Endpoint) -> str:
    doc = asdict(ep)
    doc["address"] = str(ep.address) if ep.address else None
    doc["gateway"] = str(ep.gateway) if ep.gateway else None
    doc["link_local"] = [str(a) for a in ep.link_local]
    return json.dumps(doc)


def _endpoint_from_doc(text: str) -> Endpoint:
    doc = json.loads(text)
    doc["address"] = _interface(doc["address"]) if doc["address"] else None
    doc["gateway"] = _address(doc["gateway"]) if doc["gateway"] else None
    doc["link_local"] = [_interface(a) for a in doc.get("link_local", [])]
    return Endpoint(**doc)


class Store:
    def __init__(self, data_root: Path) -> None:
        data_root.mkdir(parents=True, exist_ok=True)
        path = data_root / "muslin.db"
        path.touch(mode=0o600)  # root's alone (its WAL and shm files take the same mode from SQLite)
        path.chmod(0o600)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # WAL + synchronous=NORMAL: a crash loses at most the last commits, never consistency.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()
        self._path = path
        self._thread = threading.local()  # per thread: its reading connection, whether it is in a transaction
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # Networks decoded, by their stored text: a network create reads every network, and decoding
        # 200 of them was most of its time. Keyed by the text, an entry can never be stale; callers get
        # copies, so none of them can change what another reads.
        self._decoded_networks: dict[str, Network] = {}

    def close(self) -> None:
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._thread.writing = True
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._thread.writing = False
            self._db.execute("COMMIT")

    def _rows(self, sql: str, *args: Any) -> list[tuple]:
        if getattr(self._thread, "writing", False):
            return self._db.execute(sql, args).fetchall()
        return self._reader().execute(sql, args).fetchall()

    def _reader(self) -> sqlite3.Connection:
        reader: sqlite3.Connection | None = getattr(self._thread, "reader", None)
        if reader is None:
            # Used by this thread only; closed by close() from whichever thread closes the store.
            reader = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            reader.execute("PRAGMA query_only=1")
            with self._readers_lock:
                self._readers.append(reader)
            self._thread.reader = reader
        return reader

    def _find(self, table: str, ref: str) -> list[str]:
        """Docs of the rows ``ref`` names, as Docker resolves a reference: the full id, else the name,
        else an id prefix (more than one row back: the prefix is ambiguous). Indexed lookups only."""
        if not ref:
            return []
        for sql, args in ((f"SELECT doc FROM {table} WHERE id = ?", (ref,)),
                          (f"SELECT doc FROM {table} WHERE name = ?", (ref,)),
                          # Ids are lower-case hex, all below "g": a range the primary key's index serves.
                          (f"SELECT doc FROM {table} WHERE id >= ? AND id < ?", (ref, ref + "g"))):
            rows = self._rows(sql, *args)
            if rows:
                return [d for (d,) in rows]
        return []

    # networks
    def find_networks(self, ref: str) -> list[Network]:
        return [self._network(d) for d in self._find("networks", ref)]

    def networks(self) -> list[Network]:
        return [_copy_network(n) for n in self.network_views()]

    def network_views(self) -> list[Network]:
        """Every network as the store's cache holds it, not copied: to be read, never changed (a change
        would show in later reads). For the checks a create makes against all networks: copying two
        hundred of them costs more than the checks."""
        return [self._decoded(d) for (d,) in self._rows("SELECT doc FROM networks ORDER BY name")]

    def _network(self, doc: str) -> Network:
        return _copy_network(self._decoded(doc))

    def _decoded(self, doc: str) -> Network:
        decoded = self._decoded_networks.get(doc)
        if decoded is None:
            if len(self._decoded_networks) >= DECODED_NETWORKS:
                self._decoded_networks.clear()  # old versions of networks: start afresh
            decoded = self._decoded_networks[doc] = _network_from_doc(doc)
        return decoded

    def put_network(self, db: sqlite3.Connection, net: Network) -> None:
        db.execute(
            "INSERT INTO networks (id, name, doc) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name = excluded.name, doc = excluded.doc",
            (net.id, net.name, _network_to_doc(net)),
        )

    def delete_network(self, db: sqlite3.Connection, network_id: str) -> None:
        db.execute("DELETE FROM networks WHERE id = ?", (network_id,))
        db.execute("DELETE FROM addresses WHERE network_id = ?", (network_id,))

    # endpoints
    def endpoints(self, network_id: str | None = None, container_id: str | None = None) -> list[Endpoint]:
        sql, args = "SELECT doc FROM endpoints WHERE 1=1", []
        if network_id:
            sql, args = sql + " AND network_id = ?", [*args, network_id]
        if container_id:
            sql, args = sql + " AND container_id = ?", [*args, container_id]
        return [_endpoint_from_doc(d) for (d,) in self._rows(sql + " ORDER BY rowid", *args)]

    def endpoint_keys(self) -> list[tuple[str, str, str]]:
        """(id, network id, container id) of every endpoint, no record decoded (a start's look at a
        thousand endpoints' veths needs no more)."""
        return self._rows("SELECT id, network_id, container_id FROM endpoints ORDER BY rowid")

    def put_endpoint(self, db: sqlite3.Connection, ep: Endpoint) -> None:
        db.execute(
            "INSERT OR REPLACE INTO endpoints (id, network_id, container_id, doc) VALUES (?, ?, ?, ?)",
            (ep.id, ep.network_id, ep.container_id, _endpoint_to_doc(ep)),
        )

    def delete_endpoint(self, db: sqlite3.Connection, endpoint_id: str) -> None:
        db.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))

    # IPAM allocations
    def allocated(self, network_id: str) -> set[IPv4Address]:
        rows = self._rows("SELECT address FROM addresses WHERE network_id = ?", network_id)
        return {IPv4Address(a) for (a,) in rows}

    def allocate(self, db: sqlite3.Connection, network_id: str, address: IPv4Address, owner: str) -> None:
        db.execute("INSERT INTO addresses (network_id, address, owner) VALUES (?, ?, ?)",
                   (network_id, str(address), owner))

    def release(self, db: sqlite3.Connection, network_id: str, owner: str) -> None:
        db.execute("DELETE FROM addresses WHERE network_id = ? AND owner = ?", (network_id, owner))

    # containers (documents owned by the container service)
    def find_containers(self, ref: str) -> list[dict]:
        return [json.loads(d) for d in self._find("containers", ref)]

    def container_named(self, name: str) -> str | None:
        """The id of the container with this name (the name column's unique index answers)."""
        rows = self._rows("SELECT id FROM containers WHERE name = ?", name)
        return rows[0][0] if rows else None

    def containers(self) -> list[dict]:
        return [json.loads(d) for (d,) in self._rows("SELECT doc FROM containers ORDER BY rowid")]

    def containers_with_links(self) -> list[dict]:
        """Containers whose ``links`` (legacy links) are not empty, through the partial index: the cost
        is the number of such containers, not of all."""
        return [json.loads(d) for (d,) in self._rows(
            "SELECT doc FROM containers WHERE json_array_length(doc, '$.links') > 0")]

    def put_container(self, db: sqlite3.Connection, cid: str, name: str, doc: dict) -> None:
        db.execute(
            "INSERT INTO containers (id, name, doc) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name = excluded.name, doc = excluded.doc",
            (cid, name, json.dumps(doc)),
        )

    def delete_container(self, db: sqlite3.Connection, cid: str) -> None:
        db.execute("DELETE FROM containers WHERE id = ?", (cid,))
        db.execute("DELETE FROM ports WHERE container_id = ?", (cid,))
        db.execute("DELETE FROM dns_ports WHERE container_id = ?", (cid,))

    # the embedded DNS's ports inside a container's namespace, where its redirect sends queries
    def dns_ports(self, cid: str) -> tuple[int, int] | None:
        rows = self._rows("SELECT udp_port, tcp_port FROM dns_ports WHERE container_id = ?", cid)
        return (rows[0][0], rows[0][1]) if rows else None

    def put_dns_ports(self, db: sqlite3.Connection, cid: str, udp_port: int, tcp_port: int) -> None:
        db.execute("INSERT OR REPLACE INTO dns_ports (container_id, udp_port, tcp_port) VALUES (?, ?, ?)",
                   (cid, udp_port, tcp_port))

    # published host ports
    def ports(self) -> list[tuple[str, str, int, str]]:
        return self._rows("SELECT proto, host_ip, host_port, container_id FROM ports")

    def bind_port(self, db: sqlite3.Connection, proto: str, host_ip: str, port: int, cid: str) -> None:
        db.execute("INSERT INTO ports (proto, host_ip, host_port, container_id) VALUES (?, ?, ?, ?)",
                   (proto, host_ip, port, cid))

    def unbind_ports(self, db: sqlite3.Connection, cid: str) -> None:
        db.execute("DELETE FROM ports WHERE container_id = ?", (cid,))

    # volumes (documents owned by the volume service)
    def volume(self, name: str) -> dict | None:
        rows = self._rows("SELECT doc FROM volumes WHERE name = ?", name)
        return json.loads(rows[0][0]) if rows else None

    def volumes(self) -> list[dict]:
        return [json.loads(d) for (d,) in self._rows("SELECT doc FROM volumes ORDER BY name")]

    def put_volume(self, db: sqlite3.Connection, name: str, doc: dict) -> None:
        db.execute("INSERT OR REPLACE INTO volumes (name, doc) VALUES (?, ?)", (name, json.dumps(doc)))

    def delete_volume(self, db: sqlite3.Connection, name: str) -> None:
        db.execute("DELETE FROM volumes WHERE name = ?", (name,))
