"""The bgp backend's resources in etcd, next to the leases, as Calico keeps BGPPeer resources.

``<prefix>/bgp/peers/<name>`` = ``{"PeerIP": "192.168.1.1", "ASNumber": 65000, "Node": "192.168.255.154"}``
(no Node: every node peers with it); ``<prefix>/bgp/nodes/<PublicIP>`` = ``{"RouteReflector": true}`` makes
that node a route reflector. Keys match case-insensitively, as in the network config. The table is small,
so a change anywhere under ``<prefix>/bgp/`` re-reads all of it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import IPv4Address

from muslin.etcd import Entry, KeyValueStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BgpPeer:
    name: str
    peer_ip: IPv4Address
    as_number: int
    node: IPv4Address | None = None  # None: every node


@dataclass(frozen=True)
class BgpResources:
    peers: tuple[BgpPeer, ...] = ()
    reflectors: frozenset[IPv4Address] = frozenset()


def bgp_prefix(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/bgp/"


def _object(raw: bytes) -> dict[str, object]:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return {k.lower(): v for k, v in doc.items()}


def parse_peer(name: str, raw: bytes) -> BgpPeer:
    """One BGPPeer; ValueError says what is wrong."""
    doc = _object(raw)
    asn = doc.get("asnumber")
    if isinstance(asn, bool) or not isinstance(asn, int) or not 1 <= asn <= 4294967294:
        raise ValueError(f"ASNumber {json.dumps(asn)} is not an AS number (1..4294967294)")
    node = doc.get("node")
    return BgpPeer(name, IPv4Address(str(doc.get("peerip") or "")), asn, IPv4Address(str(node)) if node else None)


def parse_resources(entries: list[Entry], prefix: str) -> BgpResources:
    """Peers and reflectors from the entries under ``<prefix>/bgp/``; a bad entry is logged and skipped."""
    base = bgp_prefix(prefix)
    peers: list[BgpPeer] = []
    reflectors: set[IPv4Address] = set()
    for entry in entries:
        kind, _, name = entry.key[len(base):].partition("/")
        try:
            if kind == "peers" and name:
                peers.append(parse_peer(name, entry.value))
            elif kind == "nodes" and name:
                if _object(entry.value).get("routereflector") is True:
                    reflectors.add(IPv4Address(name))
        except ValueError as exc:
            log.warning("ignoring %s: %s", entry.key, exc)
    return BgpResources(tuple(sorted(peers, key=lambda p: p.name)), frozenset(reflectors))


async def load(store: KeyValueStore, prefix: str) -> tuple[BgpResources, int]:
    entries, revision = await store.list(bgp_prefix(prefix))
    return parse_resources(entries, prefix), revision


async def changes(store: KeyValueStore, prefix: str, start_revision: int) -> AsyncIterator[int]:
    """The revision of every change under ``<prefix>/bgp/`` from start_revision on."""
    async for event in store.watch(bgp_prefix(prefix), start_revision):
        yield event.revision
