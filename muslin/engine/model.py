"""The engine's model: plain typed records, persisted by the store and read by drivers and the API."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from .settings import DriverSettings


def new_id() -> str:
    return os.urandom(32).hex()


def now_rfc3339() -> str:
    # Docker prints nanoseconds; Python has microseconds, padded so the shape matches.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


@dataclass
class IPAMPool:
    subnet: IPv4Network
    gateway: IPv4Address | None = None
    ip_range: IPv4Network | None = None
    aux_addresses: dict[str, IPv4Address] = field(default_factory=dict)


@dataclass
class Network:
    id: str
    name: str
    driver: str
    created: str
    pools: list[IPAMPool] = field(default_factory=list)
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    enable_ipv6: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # What the driver resolved from the options and the daemon's flags (None: a driver with nothing
    # to program, host and null).
    settings: DriverSettings | None = None
    predefined: bool = False
    scope: str = "local"  # "global": kept in the cluster store, the same network on every engine
    subnet_from_user: bool = True  # False: IPAM chose it; then --ip is refused, as dockerd does

    @property
    def pool(self) -> IPAMPool | None:
        return self.pools[0] if self.pools else None


@dataclass
class Endpoint:
    id: str
    network_id: str
    container_id: str
    container_name: str
    address: IPv4Interface | None
    mac: str
    ifname: str
    aliases: list[str] = field(default_factory=list)
    gateway: IPv4Address | None = None
    hostname: str = ""  # the container's --hostname, a name the embedded DNS answers too
    # Endpoint Links as the embedded DNS answers them for this container only: alias -> name.
    link_aliases: dict[str, str] = field(default_factory=dict)
    link_local: list[IPv4Interface] = field(default_factory=list)  # IPAMConfig.LinkLocalIPs, each a /16
