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

# flanneld v0.20.2 (subnet/config.go parseBackendType): a config without Backend gets udp. Its docs say
# vxlan; the code is what the article ran, hence the article's FLANNEL_MTU=1472 (1500 - 28).
DEFAULT_BACKEND = "udp"
BACKEND_TYPES = ("vxlan", "host-gw", "udp", "bgp")
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
    explicit: bool = False  # whether the config named a backend (else flanneld's default, udp)
    bgp: BgpSettings | None = None  # Type bgp only


@dataclass(frozen=True)
class BgpSettings:
    """Backend bgp's keys (Calico's names where it has them)."""

    as_number: int = 64512  # Calico's default AS
    node_to_node_mesh: bool = True
    graceful_restart: bool = True
    restart_time: int = 120  # seconds peers keep our routes while our BIRD restarts
    hold_time: int = 90  # BGP's default hold time; keepalives every third of it
    bfd: bool = False


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
    if not btype:  # flanneld looks up backend "" and fails: only a config without Backend defaults
        raise ConfigError("network config: Backend has no Type (give one, or leave Backend out for udp)")
    if btype == "ipip":
        raise ConfigError("network config: Backend.Type 'ipip' is not supported: this kernel has no ipip module; "
                          "use bgp (plain routes, no encapsulation) or vxlan across routers")
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
                         direct_routing=bool(direct), explicit=True,
                         bgp=_parse_bgp(b) if btype == "bgp" else None)


def _parse_bgp(b: dict[str, Any]) -> BgpSettings:
    where = "network config"
    asn = _typed(b, "asnumber", int, where, "Backend.ASNumber")
    mesh = _typed(b, "nodetonodemesh", bool, where, "Backend.NodeToNodeMesh")
    graceful = _typed(b, "gracefulrestart", bool, where, "Backend.GracefulRestart")
    restart_time = _typed(b, "restarttime", int, where, "Backend.RestartTime")
    hold_time = _typed(b, "holdtime", int, where, "Backend.HoldTime")
    bfd = _typed(b, "bfd", bool, where, "Backend.BFD")
    if asn is not None and not 1 <= asn <= 4294967294:
        raise ConfigError(f"network config: Backend.ASNumber {asn} is out of range 1..4294967294")
    # RFC 4271's minimum is 3 seconds (its 0, no keepalives at all, would hide a dead peer for good).
    if hold_time is not None and not 3 <= hold_time <= 65535:
        raise ConfigError(f"network config: Backend.HoldTime {hold_time} must be 3..65535 seconds")
    if restart_time is not None and not 1 <= restart_time <= 4095:
        raise ConfigError(f"network config: Backend.RestartTime {restart_time} is out of range 1..4095 seconds")
    ipip = b.get("ipipmode", b.get("ipip"))
    if ipip not in (None, False, "Never", "never", "Off", "off"):
        raise ConfigError(f"network config: Backend.IPIPMode {json.dumps(ipip)} is not supported: this kernel has "
                          "no ipip module, so bgp routes without encapsulation (IPIPMode Never)")
    d = BgpSettings()
    return BgpSettings(as_number=d.as_number if asn is None else asn,
                       node_to_node_mesh=d.node_to_node_mesh if mesh is None else mesh,
                       graceful_restart=d.graceful_restart if graceful is None else graceful,
                       restart_time=restart_time or d.restart_time,
                       hold_time=d.hold_time if hold_time is None else hold_time, bfd=bool(bfd))


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
    if c.get("networks"):
        raise ConfigError("network config: Networks (several networks) is not supported: give one Network")
    net_text = _typed(c, "network", str, "network config", "Network")
    if not net_text:
        raise ConfigError("network config: Network is missing (e.g. {\"Network\": \"10.5.0.0/16\"})")
    try:
        network = IPv4Network(net_text)
    except ValueError as exc:
        raise ConfigError(f"network config: Network {net_text!r} is not an IPv4 network: {exc}") from None

    # flanneld's CheckNetworkConfig: room for at least four subnets, none longer than /30; without
    # SubnetLen, /24 for networks of /22 or wider, else two bits longer than the network (/28 at most).
    subnet_len = _typed(c, "subnetlen", int, "network config", "SubnetLen")
    if not subnet_len:
        if network.prefixlen > 28:
            raise ConfigError(f"network config: Network {network} is too small (the smallest useful one is a /28)")
        subnet_len = 24 if network.prefixlen <= 22 else network.prefixlen + 2
    if subnet_len > 30:
        raise ConfigError(f"network config: SubnetLen /{subnet_len} is too long: at most /30")
    if subnet_len < network.prefixlen + 2:
        raise ConfigError(f"network config: SubnetLen /{subnet_len} leaves the Network's /{network.prefixlen} "
                          "room for fewer than four subnets")
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
                         subnet_max=subnet_max, backend=parse_backend(_backend_key(c)))


def _backend_key(c: dict[str, Any]) -> Any:
    """The Backend value; a JSON null is not "no Backend" to flanneld (it then finds no Type)."""
    if "backend" in c and c["backend"] is None:
        raise ConfigError("network config: Backend is null (give one with a Type, or leave Backend out for udp)")
    return c.get("backend")
