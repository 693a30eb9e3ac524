"""The bridge driver: a Linux bridge per network, veth endpoints, NAT and isolation in iptables."""

from __future__ import annotations

import contextlib
import os
import re
from ipaddress import IPv4Interface

from muslin.errors import Conflict, EngineError
from muslin.kernel import address, link, netns

from ..config import DaemonConfig
from ..firewall import BridgeSpec, Firewall, PortSpec
from ..model import Endpoint, Network
from ..ports import HostPort, PortBinding, assign
from ..settings import BridgeSettings
from .base import HostNetlink, OnHostLinks, configure_endpoint_link
from .bridge_options import bridge_settings

AUTO_BRIDGE = re.compile(r"br-[0-9a-f]{12}")  # the bridge names muslind makes up (reconcile removes orphans)


def settings_of(net: Network) -> BridgeSettings:
    if not isinstance(net.settings, BridgeSettings):
        raise TypeError(f"network {net.name} has no bridge settings")
    return net.settings


def host_ifname(ep: Endpoint) -> str:
    """The host end of an endpoint's veth, derived from its id so nothing more needs storing."""
    return host_ifname_of(ep.id)


def host_ifname_of(endpoint_id: str) -> str:
    return "veth" + endpoint_id[:7]


class BridgeDriver(OnHostLinks):
    name = "bridge"

    def __init__(self, config: DaemonConfig, firewall: Firewall | None, host: HostNetlink) -> None:
        super().__init__(host)
        self.config = config
        self.firewall = firewall

    # -- network lifecycle -------------------------------------------------------------------
    def prepare(self, net: Network, others: list[Network]) -> None:
        settings = bridge_settings(net, self.config)
        bridge = settings.bridge_name
        used_by = {o.settings.bridge_name: o.name for o in others
                   if o.id != net.id and isinstance(o.settings, BridgeSettings)}
        if bridge in used_by:
            raise Conflict(f"bridge name {bridge} is already used by network {used_by[bridge]}")
        if not net.predefined and link.index_of(self.host, bridge) is not None:
            raise Conflict(f"bridge name {bridge} is already taken by an interface on this host")
        net.settings = settings

    def firewall_spec(self, net: Network) -> BridgeSpec:
        assert net.pool is not None
        settings = settings_of(net)
        return BridgeSpec(bridge=settings.bridge_name, subnet=net.pool.subnet, masquerade=settings.masquerade,
                          icc=settings.icc, internal=net.internal)

    def create_network(self, net: Network) -> None:
        try:
            self._program_bridge(net)
            if self.firewall:
                self.firewall.setup_network(self.firewall_spec(net))
        except Exception:
            with contextlib.suppress(Exception):
                self.delete_network(net)
            raise

    def _program_bridge(self, net: Network) -> None:
        pool = net.pool
        assert pool is not None and pool.gateway is not None
        settings = settings_of(net)
        bridge = settings.bridge_name
        index = link.ensure_bridge(self.host, bridge, settings.mtu)
        address.ensure_address(self.host, index, IPv4Interface(f"{pool.gateway}/{pool.subnet.prefixlen}"))
        if self.config.ip_forward:
            netns.set_sysctl("net/ipv4/ip_forward", "1")
        # Published ports answer on 127.0.0.1 without a userland proxy: the kernel may route
        # loopback-sourced (DNATed) packets out of this bridge.
        netns.set_sysctl(f"net/ipv4/conf/{bridge}/route_localnet", "1")

    def delete_network(self, net: Network) -> None:
        if self.firewall:
            self.firewall.teardown_network(self.firewall_spec(net))
        pool = net.pool
        gateway = [IPv4Interface(f"{pool.gateway}/{pool.subnet.prefixlen}")] if pool and pool.gateway else None
        link.retire_link(self.host, settings_of(net).bridge_name, gateway)

    def restore(self, net: Network) -> None:
        """The bridge, its address and sysctls; the rules of every network come back together, in one
        transaction, once the store is reconciled (``Engine``: ``IptablesFirewall.ensure``)."""
        self._program_bridge(net)

    def restore_all(self, nets: list[Network], links: dict[str, link.LinkInfo]) -> None:
        """``restore`` of these networks, each only if one dump of the links (``links``, by name, updated
        here for what is restored) and one of the addresses show something of it missing: a start then
        costs what changed, not a round of netlink calls for each of hundreds of networks."""
        addresses = {(a.index, a.address) for a in address.ipv4_addresses(self.host)}
        for net in nets:
            if not self._in_place(net, links, addresses):
                self.restore(net)
                restored = link.find_link(self.host, settings_of(net).bridge_name)
                if restored is not None:
                    links[restored.name] = restored

    def _in_place(self, net: Network, links: dict[str, link.LinkInfo],
                  addresses: set[tuple[int, IPv4Interface]]) -> bool:
        pool, settings = net.pool, settings_of(net)
        found = links.get(settings.bridge_name)
        if pool is None or found is None or found.kind != "bridge" or not found.up or found.mtu != settings.mtu:
            return False
        if (found.index, IPv4Interface(f"{pool.gateway}/{pool.subnet.prefixlen}")) not in addresses:
            return False
        if self.config.ip_forward and netns.get_sysctl("net/ipv4/ip_forward") != "1":
            return False
        return netns.get_sysctl(f"net/ipv4/conf/{settings.bridge_name}/route_localnet") == "1"

    def orphans(self, nets: list[Network], links: list[link.LinkInfo]) -> list[str]:
        owned = {settings_of(n).bridge_name for n in nets if n.settings is not None}
        return [found.name for found in links
                if found.kind == "bridge" and AUTO_BRIDGE.fullmatch(found.name) and found.name not in owned]

    def remove_orphan(self, bridge: str) -> None:
        """A bridge of ours that no network owns: its rules (whatever subnet they name) and the link."""
        if self.firewall:
            self.firewall.remove_rules_naming(bridge)
        link.retire_link(self.host, bridge)

    # -- endpoints -------------------------------------------------------------------------------
    def join(self, net: Network, ep: Endpoint, sandbox: str) -> None:
        assert ep.address is not None
        settings = settings_of(net)
        fd = os.open(sandbox, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr = self.host
            master = link.index_of(ipr, settings.bridge_name)
            if master is None:
                raise RuntimeError(f"bridge {settings.bridge_name} of network {net.name} is missing")
            _, peer = link.add_veth_into(ipr, host_ifname(ep), ep.ifname, fd, settings.mtu, ep.mac, master,
                                         hairpin=True)
        finally:
            os.close(fd)
        # On failure the caller (NetworkService.wire_endpoint) unwires through leave().
        configure_endpoint_link(sandbox, ep, peer)

    def endpoint_in_place(self, net: Network, endpoint_id: str, links: dict[str, link.LinkInfo]) -> bool:
        """Whether a dump of the host's links (by name) shows the endpoint's veth up on its network's
        bridge: not when someone deleted it (either end takes the pair along), set it down, or deleted
        the bridge, whose restore comes back without ports."""
        veth, bridge = links.get(host_ifname_of(endpoint_id)), links.get(settings_of(net).bridge_name)
        return veth is not None and bridge is not None and veth.up and veth.master == bridge.index

    def leave(self, net: Network, ep: Endpoint, sandbox: str | None = None) -> None:
        if sandbox and netns.exists(sandbox):
            link.retire_veth(self.host, host_ifname(ep), sandbox, ep.ifname)
        else:
            link.delete_link(self.host, host_ifname(ep))

    # -- published ports (NAT to the endpoint, as libnetwork's bridge driver maps them) -------------
    def assign_ports(self, net: Network, ep: Endpoint, requested: list[PortBinding],
                     taken: list[HostPort]) -> list[PortBinding]:
        """Host ports for ``requested`` on this endpoint, none of them in ``taken`` (other endpoints'):
        a binding without a host IP takes the network's host_binding_ipv4 (0.0.0.0 unless set)."""
        host_binding = settings_of(net).host_binding
        default_ip = "" if host_binding.is_unspecified else str(host_binding)
        try:
            return assign([PortBinding(b.container_port, b.proto, b.host_ip or default_ip, b.host_port)
                           for b in requested], taken)
        except Conflict as exc:
            raise EngineError(f"driver failed programming external connectivity on endpoint "
                              f"{ep.container_name} ({ep.id}): {exc.message}") from None

    def port_forwards(self, net: Network, ep: Endpoint, published: list[PortBinding]) -> list[PortSpec]:
        """The firewall's forwards for these ports of the endpoint."""
        assert ep.address is not None
        bridge = settings_of(net).bridge_name
        return [PortSpec(bridge=bridge, proto=b.proto, host_ip=b.host_ip, host_port=b.host_port,
                         container_ip=ep.address.ip, container_port=b.container_port) for b in published]

    def publish_ports(self, net: Network, ep: Endpoint, published: list[PortBinding]) -> None:
        """Program the forwards (idempotent: a recovery puts back what a firewall reload wiped)."""
        if self.firewall and published:
            self.firewall.add_port_forwards(self.port_forwards(net, ep, published))

    def unpublish_ports(self, net: Network, ep: Endpoint, published: list[PortBinding]) -> None:
        if self.firewall and published:
            self.firewall.remove_port_forwards(self.port_forwards(net, ep, published))
