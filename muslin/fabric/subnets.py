"""Subnet leases kept exactly as flannel keeps them, so flanneld and muslin nodes share one table.

``<prefix>/subnets/10.5.55.0-24`` holds the lease's attributes as JSON (LeaseAttrs in flannel). A key
with a TTL is a lease; one without is a reservation, held for the node whose PublicIP it names. This
module knows etcd and addresses, nothing of devices.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Literal

from muslin.fabric.config import NetworkConfig
from muslin.etcd import KeyValueStore

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = 24 * 3600
CANDIDATE_WINDOW = 100  # flannel picks at random among the first 100 free subnets
CREATE_ATTEMPTS = 10


class NetworkExhausted(RuntimeError):
    """No subnet is free; no lease was taken."""


@dataclass(frozen=True, slots=True)
class LeaseAttrs:
    public_ip: IPv4Address
    backend_type: str | None = None  # flannel's udp backend leaves it out
    backend_data: dict[str, Any] | None = None

    def to_json(self) -> str:
        doc: dict[str, Any] = {"PublicIP": str(self.public_ip), "PublicIPv6": None}
        if self.backend_type:
            doc["BackendType"] = self.backend_type
        if self.backend_data is not None:
            doc["BackendData"] = self.backend_data
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> LeaseAttrs:
        """Parse a lease value; ValueError says what is wrong (keys match case-insensitively)."""
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"lease value is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("lease value is not a JSON object")
        low = {k.lower(): v for k, v in doc.items()}
        try:
            public_ip = parse_ipv4(low.get("publicip") or "")
        except ValueError:
            raise ValueError(f"lease PublicIP {low.get('publicip')!r} is not an IPv4 address") from None
        data = low.get("backenddata")
        return cls(public_ip, low.get("backendtype") or None, data if isinstance(data, dict) else None)


@dataclass(frozen=True, slots=True)
class Lease:
    subnet: IPv4Network
    attrs: LeaseAttrs
    expires: bool = True  # False: a reservation (no TTL)
    revision: int = field(default=0, compare=False)


def subnet_key(prefix: str, subnet: IPv4Network) -> str:
    return f"{prefix.rstrip('/')}/subnets/{subnet.network_address}-{subnet.prefixlen}"


def parse_ipv4(text: str) -> IPv4Address:
    """IPv4Address(text), strict dotted quad, a few times faster (inet_pton): a listing parses thousands."""
    try:
        return IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, TypeError):
        raise ValueError(f"{text!r} is not an IPv4 address") from None


def subnet_from_key(key: str) -> IPv4Network | None:
    """``.../subnets/10.5.55.0-24`` -> 10.5.55.0/24; None for keys that are not lease keys."""
    name = key.rsplit("/", 1)[-1]
    address, sep, length = name.partition("-")
    if not sep or not length.isdigit() or int(length) > 32:
        return None
    try:
        return IPv4Network((int(parse_ipv4(address)), int(length)))
    except ValueError:
        return None


def choose_subnet(config: NetworkConfig, taken: set[IPv4Network], rng: random.Random | None = None,
                  ) -> IPv4Network:
    """A free subnet, at random among the first CANDIDATE_WINDOW free ones (spreads concurrent starts)."""
    # Candidates stay integers (a /8 network with SubnetLen 24 has 65536): only the chosen one becomes an
    # IPv4Network. A taken subnet of another length (an old config's) blocks every candidate it overlaps.
    size = config.subnet_size
    same_length = {int(t.network_address) for t in taken if t.prefixlen == config.subnet_len}
    spans = [(int(t.network_address), int(t.broadcast_address)) for t in taken if t.prefixlen != config.subnet_len]
    first, last = int(config.subnet_min), int(config.subnet_max)
    free = list(itertools.islice(
        (start for start in range(first, last + 1, size)
         if start not in same_length and not any(lo < start + size and start <= hi for lo, hi in spans)),
        CANDIDATE_WINDOW))
    if not free:
        raise NetworkExhausted(
            f"network {config.network} is exhausted: all {config.subnet_count} /{config.subnet_len}"
            f" subnets between SubnetMin {config.subnet_min} and SubnetMax {config.subnet_max} are leased;"
            " no lease was taken and nothing was set up")
    return config.subnet_at(IPv4Address((rng or random).choice(free)))


LeaseEventKind = Literal["added", "removed"]


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    kind: LeaseEventKind
    subnet: IPv4Network
    lease: Lease | None  # None for removals
    revision: int


class SubnetManager:
    def __init__(self, store: KeyValueStore, prefix: str, lease_ttl: int = DEFAULT_LEASE_TTL) -> None:
        self.store = store
        self.prefix = prefix.rstrip("/")
        self.lease_ttl = lease_ttl

    @property
    def config_key(self) -> str:
        return f"{self.prefix}/config"

    @property
    def subnets_prefix(self) -> str:
        return f"{self.prefix}/subnets/"

    def key_for(self, subnet: IPv4Network) -> str:
        return subnet_key(self.prefix, subnet)

    async def list_leases(self) -> tuple[list[Lease], int]:
        entries, revision = await self.store.list(self.subnets_prefix)
        leases = []
        for entry in entries:
            subnet = subnet_from_key(entry.key)
            if subnet is None:
                continue
            try:
                attrs = LeaseAttrs.from_json(entry.value)
            except ValueError as exc:
                log.warning("ignoring lease %s: %s", entry.key, exc)
                continue
            leases.append(Lease(subnet, attrs, entry.expires, entry.revision))
        return leases, revision

    async def acquire(self, config: NetworkConfig, attrs: LeaseAttrs,
                      previous: IPv4Network | None = None, rng: random.Random | None = None) -> Lease:
        """Our lease: the one already held by our PublicIP, else the subnet we had before, else a new one."""
        for _ in range(CREATE_ATTEMPTS):
            leases, _ = await self.list_leases()
            mine = [lease for lease in leases if lease.attrs.public_ip == attrs.public_ip]
            kept = [lease for lease in mine if config.fits(lease.subnet)]
            for lease in mine:
                if lease.expires and not config.fits(lease.subnet):
                    log.info("dropping our lease %s: it no longer fits network %s", lease.subnet, config.network)
                    await self.store.delete(self.key_for(lease.subnet))
            if kept:
                # Conditional on the revision listed: a node that claimed the key since keeps it.
                reused = await self._write(kept[0].subnet, attrs, not kept[0].expires, kept[0].revision)
                if reused is not None:
                    log.info("reusing the lease on %s held by %s", reused.subnet, attrs.public_ip)
                    return reused
                log.info("lease %s changed while we reused it; listing again", kept[0].subnet)
                continue
            taken = {lease.subnet for lease in leases}
            if previous is not None and config.fits(previous) and previous not in taken:
                if await self._create(previous, attrs):
                    log.info("took back subnet %s (from the subnet file)", previous)
                    return Lease(previous, attrs)
                continue
            subnet = choose_subnet(config, taken, rng)
            if await self._create(subnet, attrs):
                log.info("leased new subnet %s", subnet)
                return Lease(subnet, attrs)
            log.info("subnet %s was taken concurrently; choosing again", subnet)
        raise NetworkExhausted(f"could not lease a subnet of {config.network} after {CREATE_ATTEMPTS} conflicting"
                               " attempts; nothing was set up")

    async def _create(self, subnet: IPv4Network, attrs: LeaseAttrs) -> bool:
        return await self.store.create(self.key_for(subnet), attrs.to_json().encode(), self.lease_ttl)

    async def _write(self, subnet: IPv4Network, attrs: LeaseAttrs, keep_reservation: bool,
                     revision: int) -> Lease | None:
        """Rewrite the key if it is still at revision; None if it changed meanwhile."""
        ttl = None if keep_reservation else self.lease_ttl
        if not await self.store.put(self.key_for(subnet), attrs.to_json().encode(), ttl, prev_revision=revision):
            return None
        return Lease(subnet, attrs, expires=not keep_reservation)

    async def renew(self, lease: Lease, attrs: LeaseAttrs | None = None) -> Lease | None:
        """Extend our lease by a full TTL (a reservation is rewritten as is, without TTL), publishing attrs
        if given; None, and nothing written, if the key is gone or no longer names our PublicIP."""
        entry = await self.store.get(self.key_for(lease.subnet))
        if entry is None:
            return None
        try:
            if LeaseAttrs.from_json(entry.value).public_ip != lease.attrs.public_ip:
                return None
        except ValueError:
            return None
        # The key's expiry, not our memory of it, says whether it is a reservation.
        return await self._write(lease.subnet, attrs or lease.attrs, not entry.expires, entry.revision)

    async def watch(self, start_revision: int) -> AsyncIterator[LeaseEvent]:
        async for event in self.store.watch(self.subnets_prefix, start_revision):
            subnet = subnet_from_key(event.key)
            if subnet is None:
                continue
            if event.kind == "delete":
                yield LeaseEvent("removed", subnet, None, event.revision)
                continue
            try:
                attrs = LeaseAttrs.from_json(event.value or b"")
            except ValueError as exc:
                log.warning("ignoring lease %s: %s", event.key, exc)
                continue
            yield LeaseEvent("added", subnet, Lease(subnet, attrs, event.expires, event.revision), event.revision)
