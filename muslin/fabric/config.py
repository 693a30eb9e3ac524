"""The network configuration flannel keeps at ``<prefix>/config``, parsed and validated.

flanneld decodes this JSON with Go's decoder, which matches keys case-insensitively and ignores keys it
does not know; we do the same so one config serves both. Every problem is reported as a ConfigError that
names the key and says that nothing was set up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

DEFAULT_BACKEND = "vxlan"
BACKEND_TYPES = ("vxlan", "host-gw", "udp")
VXLAN_DEFAULT_PORT = 8472
UDP_DEFAULT_PORT = 8285


class ConfigError(ValueError):
    """The stored config cannot be used; the agent sets nothing up until it is fixed."""


@dataclass(frozen=True)
class BackendConfig:
    type: str = DEFAULT_BACKEND
    vni: int = 1
    port: int | None = None  # None: the backend's well-known port
    mtu: int | None = None  # None: derived from the external interface
    direct_routing: bool = False
    explicit: bool = False  # whether the config named a backend (flanneld's default differs: see cli)


@dataclass(frozen=True)
class NetworkConfig:
    network: IPv4Network
    subnet_len: int
    subnet_min: IPv4Address
    subnet_max: IPv4Address
    backend: BackendConfig

    @property
    def subnet_size(self) -> int:
        return 1 << (32 - self.subnet_len)

    def subnet_at(self, address: IPv4Address) -> IPv4Network:
        return IPv4Network((address, self.subnet_len))

    @property
    def subnet_count(self) -> int:
        """How many subnets lie between SubnetMin and SubnetMax inclusive."""
        return (int(self.subnet_max) - int(self.subnet_min)) // self.subnet_size + 1

    def fits(self, subnet: IPv4Network) -> bool:
        """Whether a lease's subnet still belongs to this config (it may predate a config change)."""
        return (subnet.prefixlen == self.subnet_len and subnet.subnet_of(self.network)
                and self.subnet_min <= subnet.network_address <= self.subnet_max)


def _lower_keys(obj: dict[str, Any], where: str) -> dict[str, Any]:
    lowered: dict[str, Any] = {}
    for key, value in obj.items():
        low = key.lower()
        if low in lowered:
            raise ConfigError(f"{where}: key {key!r} given twice (keys match case-insensitively)")
        lowered[low] = value
    return lowered


def _typed(obj: dict[str, Any], key: str, kind: type, where: str, name: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    # bool is an int in Python; JSON true must not pass as a number (Go's decoder refuses it too).
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: {name} must be a number, got {json.dumps(value)}")
    if kind is not int and not isinstance(value, kind):
        raise ConfigError(f"{where}: {name} must be a {kind.__name__}, got {json.dumps(value)}")
    return value


def _address(text: str, name: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise ConfigError(f"network config: {name} {text!r} is not an IPv4 address") from None


def parse_backend(raw: Any) -> BackendConfig:
    if raw is None:
        return BackendConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"network config: Backend must be an object, got {json.dumps(raw)}")
    b = _lower_keys(raw, "network config Backend")
    btype = _typed(b, "type", str, "network config", "Backend.Type")
    if btype is None:
        btype, explicit = DEFAULT_BACKEND, False
    else:
        explicit = True
    if btype not in BACKEND_TYPES:
        raise ConfigError(f"network config: Backend.Type {btype!r} is not supported "
                          f"(supported: {', '.join(BACKEND_TYPES)})")
    vni = _typed(b, "vni", int, "network config", "Backend.VNI")
    port = _typed(b, "port", int, "network config", "Backend.Port")
    mtu = _typed(b, "mtu", int, "network config", "Backend.MTU")
    direct = _typed(b, "directrouting", bool, "network config", "Backend.DirectRouting")
    if vni is not None and not 0 <= vni < (1 << 24):
        raise ConfigError(f"network config: Backend.VNI {vni} is out of range 0..16777215")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"network config: Backend.Port {port} is out of range 1..65535")
    if mtu is not None and not 576 <= mtu <= 65535:
        raise ConfigError(f"network config: Backend.MTU {mtu} is out of range 576..65535")
    return BackendConfig(type=btype, vni=1 if vni is None else vni, port=port or None, mtu=mtu,
                         direct_routing=bool(direct), explicit=explicit)


def parse_config(text: str | bytes) -> NetworkConfig:
    """Parse ``<prefix>/config``; defaults follow flanneld's (SubnetLen, SubnetMin, SubnetMax)."""
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"network config is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError("network config must be a JSON object")
    c = _lower_keys(raw, "network config")
    if c.get("enableipv4") is False:
        raise ConfigError("network config: EnableIPv4 false (IPv6-only networks) is not supported")
    if c.get("enableipv6"):
        raise ConfigError("network config: EnableIPv6 is not supported yet")
    net_text = _typed(c, "network", str, "network config", "Network")
    if not net_text:
        raise ConfigError("network config: Network is missing (e.g. {\"Network\": \"10.5.0.0/16\"})")
    try:
        network = IPv4Network(net_text)
    except ValueError as exc:
        raise ConfigError(f"network config: Network {net_text!r} is not an IPv4 network: {exc}") from None

    subnet_len = _typed(c, "subnetlen", int, "network config", "SubnetLen")
    if subnet_len is None or subnet_len == 0:
        subnet_len = 24 if network.prefixlen <= 22 else network.prefixlen + 2
    if not network.prefixlen < subnet_len <= 30:
        raise ConfigError(f"network config: SubnetLen /{subnet_len} must be longer than the Network's "
                          f"/{network.prefixlen} and at most /30")
    size = 1 << (32 - subnet_len)
    first = int(network.network_address)
    default_min = IPv4Address(first + size)
    default_max = IPv4Address(first + network.num_addresses - size)

    subnet_min = default_min
    subnet_max = default_max
    if (text_min := _typed(c, "subnetmin", str, "network config", "SubnetMin")):
        subnet_min = _address(text_min, "SubnetMin")
    if (text_max := _typed(c, "subnetmax", str, "network config", "SubnetMax")):
        subnet_max = _address(text_max, "SubnetMax")
    for name, value in (("SubnetMin", subnet_min), ("SubnetMax", subnet_max)):
        if value not in network:
            raise ConfigError(f"network config: {name} {value} is not inside Network {network}")
        if int(value) % size:
            raise ConfigError(f"network config: {name} {value} is not the start of a /{subnet_len}")
    if subnet_min > subnet_max:
        raise ConfigError(f"network config: SubnetMin {subnet_min} is above SubnetMax {subnet_max}")
    return NetworkConfig(network=network, subnet_len=subnet_len, subnet_min=subnet_min,
                         subnet_max=subnet_max, backend=parse_backend(c.get("backend")))
