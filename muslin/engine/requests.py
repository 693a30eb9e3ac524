"""What clients ask of the engine, typed.

The API layer builds these from Docker's JSON once it has checked every field's type and form, so the
engine never parses a request body: it receives names, addresses and numbers, and decides what they
mean (whether a network exists, an address is free, a mode allows an option).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from .link_text import LinkRef
from .mounts import MountRequest
from .ports import PortBinding
from .restarts import RestartPolicy


@dataclass(frozen=True)
class EndpointRequest:
    """One network's settings for a container: an EndpointsConfig entry at create, or the
    EndpointConfig of a network connect."""

    ipv4_address: IPv4Address | None = None
    mac_address: str = ""  # lower-case, colon-separated, or "" for the address-derived one
    aliases: tuple[str, ...] = ()
    links: tuple[str, ...] = ()  # "name:alias" as given (inspect shows them back), each a valid link
    link_local_ips: tuple[IPv4Address, ...] = ()
    driver_opts: dict[str, str] = field(default_factory=dict)
    gw_priority: int = 0  # the highest among a container's endpoints gives its gateway (``gateway``)


@dataclass(frozen=True)
class ContainerCreate:
    """POST /containers/create. ``config`` and ``host_config`` are Docker's Config and HostConfig as the
    client gave them (normalised where Docker normalises, e.g. port keys), which inspect shows back."""

    image: str
    name: str = ""  # "" = the engine makes one up
    entrypoint: tuple[str, ...] | None = None  # None = the image's
    cmd: tuple[str, ...] | None = None  # None = the image's, unless an entrypoint is given
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    domainname: str = ""
    tty: bool = False
    open_stdin: bool = False
    mac_address: str = ""  # the container-wide (pre-1.44) MacAddress
    exposed_ports: tuple[str, ...] = ()  # "80/tcp"
    network_mode: str = "default"
    endpoints: dict[str, EndpointRequest] = field(default_factory=dict)
    port_bindings: tuple[PortBinding, ...] = ()
    publish_all_ports: bool = False
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()  # "name:address" (address may be "host-gateway")
    links: tuple[LinkRef, ...] = ()  # HostConfig.Links: legacy links on the default bridge
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    sysctls: dict[str, str] = field(default_factory=dict)
    console_size: tuple[int, int] | None = None
    stop_signal: int | None = None  # None: SIGTERM
    stop_timeout: int | None = None  # None: 10 s; -1: no limit
    mounts: tuple[MountRequest, ...] = ()  # HostConfig.Binds, Mounts, Tmpfs
    volumes: tuple[str, ...] = ()  # Config.Volumes: paths that get an anonymous volume unless mounted
    group_add: tuple[str, ...] = ()  # HostConfig.GroupAdd: group names or gids
    volumes_from: tuple[tuple[str, str], ...] = ()  # HostConfig.VolumesFrom: (container, mode "" | "ro" | "rw")
    config: dict[str, Any] = field(default_factory=dict)
    host_config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerUpdate:
    """POST /containers/{id}/update: Docker's resource fields given (by their HostConfig names) and the
    new RestartPolicy (None: unchanged)."""

    resources: dict[str, Any] = field(default_factory=dict)
    restart_policy: RestartPolicy | None = None


@dataclass(frozen=True)
class VolumeCreate:
    """POST /volumes/create ("" name: an anonymous volume with a generated one)."""

    name: str = ""
    driver: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IPAMPoolRequest:
    """One entry of a network's IPAM.Config, each address still as the client wrote it (the engine's
    IPAM checks that they form a usable pool)."""

    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    aux_addresses: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkCreate:
    """POST /networks/create."""

    name: str
    driver: str = "bridge"
    ipam_driver: str = "default"
    ipam_pools: tuple[IPAMPoolRequest, ...] = ()
    ipam_options: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    enable_ipv6: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    scope: str = ""  # "" = the driver's own: local, the only one outside a swarm


@dataclass(frozen=True)
class ExecCreate:
    """POST /containers/{id}/exec."""

    cmd: tuple[str, ...]
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    tty: bool = False
    attach_stdin: bool = False
    console_size: tuple[int, int] | None = None
    privileged: bool = False
    detach_keys: str = ""  # Docker's spelling, checked by the API (``ctrl-p,ctrl-q``; empty: the default)
