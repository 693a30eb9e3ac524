"""The bridge driver: a Linux bridge per network, veth endpoints, NAT and isolation in iptables."""

from __future__ import annotations

import contextlib
import os
from ipaddress import IPv4Address, IPv4Interface

from muslin.errors import Conflict, EngineError, InvalidArgument
from muslin.kernel import address, link, netns

from ..config import DaemonConfig, parse_bool
from ..firewall import BridgeSpec, Firewall, PortSpec
from ..model import Endpoint, Network
from ..ports import HostPort, PortBinding, assign
from .base import HostNetlink, OnHostLinks, configure_endpoint_link

OPT_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_BIND = "com.docker.network.bridge.host_binding_ipv4"
OPT_DEFAULT = "com.docker.network.bridge.default_bridge"
OPT_MTU = "com.docker.network.driver.mtu"
KNOWN_OPTIONS = {OPT_NAME, OPT_ICC, OPT_MASQ, OPT_BIND, OPT_DEFAULT, OPT_MTU}


def _parse_bool(key: str, value: str) -> bool:
    try:
        return parse_bool(value)
    except ValueError:
        raise InvalidArgument(f"invalid value {value!r} for option {key}: expected true or false") from None


def _check_ifname(name: str) -> None:
    if not name or len(name) > 15 or any(c in name for c in "/ \t\n:") or name in (".", ".."):
        raise InvalidArgument(f"invalid bridge name {name!r}: an interface name has 1 to 15 characters, no '/', ':' or spaces")


def host_ifname(ep: Endpoint) -> str:
    """The host end of an endpoint's veth, derived from its id so nothing more needs storing."""
    return "veth" + ep.id[:7]


class BridgeDriver(OnHostLinks):
    name = "bridge"

    def __init__(self, config: DaemonConfig, firewall: Firewall | None, host: HostNetlink) -> None:
        super().__init__(host)
        self.config = config
        self.firewall = firewall

    # -- network lifecycle -------------------------------------------------------------------
    def prepare(self, net: Network, others: list[Network]) -> None:
        opts = net.options
        for key in opts:
            if key.startswith("com.docker.network.") and key not in KNOWN_OPTIONS:
                raise InvalidArgument(f"unknown option {key!r} for the bridge driver")
        if not net.predefined and OPT_DEFAULT in opts:
            raise InvalidArgument(f"option {OPT_DEFAULT} is reserved for the default bridge network")
        bridge = opts.get(OPT_NAME) or (self.config.bridge_name if net.predefined else f"br-{net.id[:12]}")
        _check_ifname(bridge)
        for other in others:
            if other.resolved.get("bridge") == bridge and other.id != net.id:
                raise Conflict(f"bridge name {bridge} is already used by network {other.name}")
        if not net.predefined:
            if link.index_of(self.host, bridge) is not None:
                raise Conflict(f"bridge name {bridge} is already taken by an interface on this host")
        mtu_text = opts.get(OPT_MTU, str(self.config.mtu))
        try:
            mtu = int(mtu_text)
        except ValueError:
            raise InvalidArgument(f"invalid value {mtu_text!r} for option {OPT_MTU}: not a number") from None
        if not 68 <= mtu <= 65535:
            raise InvalidArgument(f"invalid MTU {mtu}: it must be between 68 and 65535")
        # --icc is dockerd's switch for the default bridge; user networks default to true.
        icc_default = self.config.icc if net.predefined else True
        icc = _parse_bool(OPT_ICC, opts[OPT_ICC]) if OPT_ICC in opts else icc_default
        masq = _parse_bool(OPT_MASQ, opts[OPT_MASQ]) if OPT_MASQ in opts else self.config.ip_masq
        bind = opts.get(OPT_BIND, self.config.default_bind_ip)
        try:
            IPv4Address(bind)
        except ValueError:
            raise InvalidArgument(f"invalid value {bind!r} for option {OPT_BIND}: not an IPv4 address") from None
        if net.pool is None or net.pool.gateway is None:
            raise InvalidArgument("a bridge network needs a subnet and a gateway")
        net.resolved = {"bridge": bridge, "mtu": str(mtu), "icc": str(icc).lower(),
                        "masquerade": str(masq).lower(), "host_binding_ipv4": bind}

    def firewall_spec(self, net: Network) -> BridgeSpec:
        assert net.pool is not None
        return BridgeSpec(bridge=net.resolved["bridge"], subnet=net.pool.subnet,
                          masquerade=net.resolved["masquerade"] == "true",
                          icc=net.resolved["icc"] == "true", internal=net.internal)

    def create_network(self, net: Network) -> None:
        pool = net.pool
        assert pool is not None and pool.gateway is not None
        bridge = net.resolved["bridge"]
        try:
            index = link.ensure_bridge(self.host, bridge, int(net.resolved["mtu"]))
            address.ensure_address(self.host, index, IPv4Interface(f"{pool.gateway}/{pool.subnet.prefixlen}"))
            if self.config.ip_forward:
                netns.set_sysctl("net/ipv4/ip_forward", "1")
            # Published ports answer on 127.0.0.1 without a userland proxy: the kernel may route
            # loopback-sourced (DNATed) packets out of this bridge.
            netns.set_sysctl(f"net/ipv4/conf/{bridge}/route_localnet", "1")
            if self.firewall:
                self.firewall.setup_network(self.firewall_spec(net))
        except Exception:
            with contextlib.suppress(Exception):
                self.delete_network(net)
            raise

    def delete_network(self, net: Network) -> None:
        if self.firewall:
            self.firewall.teardown_network(self.firewall_spec(net))
        link.retire_link(self.host, net.resolved["bridge"])

    def remove_orphan(self, bridge: str) -> None:
        """A bridge of ours that no network owns: its rules (whatever subnet they name) and the link."""
        if self.firewall:
            self.firewall.remove_rules_naming(bridge)
        link.retire_link(self.host, bridge)

    # -- endpoints -------------------------------------------------------------------------------
    def join(self, net: Network, ep: Endpoint, sandbox: str) -> None:
        assert ep.address is not None
        fd = os.open(sandbox, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr = self.host
            master = link.index_of(ipr, net.resolved["bridge"])
            if master is None:
                raise RuntimeError(f"bridge {net.resolved['bridge']} of network {net.name} is missing")
            index, peer = link.add_veth_into(ipr, host_ifname(ep), ep.ifname, fd, int(net.resolved["mtu"]),
                                             ep.mac, master)
            link.ensure_hairpin(ipr, index)
        finally:
            os.close(fd)
        # On failure the caller (NetworkService.wire_endpoint) unwires through leave().
        with netns.iproute(sandbox) as ipr:
            configure_endpoint_link(ipr, ep, peer)

    def leave(self, net: Network, ep: Endpoint, sandbox: str | None = None) -> None:
        if sandbox and netns.exists(sandbox):
            with netns.iproute(sandbox) as peer_ipr:
                link.retire_veth(self.host, host_ifname(ep), peer_ipr, ep.ifname)
        else:
            link.delete_link(self.host, host_ifname(ep))

    # -- published ports (NAT to the endpoint, as libnetwork's bridge driver maps them) -------------
    def assign_ports(self, net: Network, ep: Endpoint, requested: list[PortBinding],
                     taken: list[HostPort]) -> list[PortBinding]:
        """Host ports for ``requested`` on this endpoint, none of them in ``taken`` (other endpoints'):
        a binding without a host IP takes the network's host_binding_ipv4 (0.0.0.0 unless set)."""
        default_ip = net.resolved.get("host_binding_ipv4", "0.0.0.0")
        default_ip = "" if default_ip == "0.0.0.0" else default_ip
        try:
            return assign([PortBinding(b.container_port, b.proto, b.host_ip or default_ip, b.host_port)
                           for b in requested], taken)
        except Conflict as exc:
            raise EngineError(f"driver failed programming external connectivity on endpoint "
                              f"{ep.container_name} ({ep.id}): {exc.message}") from None

    def port_forwards(self, net: Network, ep: Endpoint, published: list[PortBinding]) -> list[PortSpec]:
        """The firewall's forwards for these ports of the endpoint."""
        assert ep.address is not None
        return [PortSpec(bridge=net.resolved["bridge"], proto=b.proto, host_ip=b.host_ip, host_port=b.host_port,
                         container_ip=ep.address.ip, container_port=b.container_port) for b in published]

    def publish_ports(self, net: Network, ep: Endpoint, published: list[PortBinding]) -> None:
        """Program the forwards (idempotent: a recovery puts back what a firewall reload wiped)."""
        if self.firewall and published:
            self.firewall.add_port_forwards(self.port_forwards(net, ep, published))

    def unpublish_ports(self, net: Network, ep: Endpoint, published: list[PortBinding]) -> None:
        if self.firewall and published:
            self.firewall.remove_port_forwards(self.port_forwards(net, ep, published))
