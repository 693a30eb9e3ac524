"""vxlan, as flanneld programs it, so a flanneld vxlan node is a peer like any other.

Device ``flannel.<VNI>`` (nolearning, dstport 8472) with ``<subnet>.0/32``; for each peer: a permanent
neighbour ``<peer subnet>.0 -> VtepMAC``, an fdb entry ``VtepMAC -> PublicIP`` and the route
``<peer subnet> via <peer subnet>.0 dev flannel.<VNI> onlink``. With DirectRouting a peer on our L2
gets a plain route via its PublicIP instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from pyroute2 import IPRoute

from muslin.fabric.backends.base import Backend, ExternalInterface, LocalNetwork
from muslin.fabric.config import VXLAN_DEFAULT_PORT, NetworkConfig
from muslin.fabric.subnets import Lease, LeaseAttrs
from muslin.kernel import address, link, neighbour, route, tunnel

log = logging.getLogger(__name__)
VXLAN_OVERHEAD = 50


@dataclass(frozen=True)
class _PeerState:
    """What one peer lease asks of the kernel."""

    subnet: IPv4Network
    gateway: IPv4Address
    oif: int
    onlink: bool
    vtep: tuple[str, IPv4Address] | None  # (VtepMAC, PublicIP) unless routed directly


def _vtep_mac(lease: Lease) -> str | None:
    """The lease's VtepMAC, lower-case; flanneld writes "VtepMAC", Go's decoder accepts any case."""
    data = lease.attrs.backend_data or {}
    mac = next((v for k, v in data.items() if k.lower() == "vtepmac"), None)
    return mac.lower() if isinstance(mac, str) else None


class VxlanBackend(Backend):
    type = "vxlan"

    def __init__(self, config: NetworkConfig, ext: ExternalInterface, ipr: IPRoute) -> None:
        super().__init__(config, ext, ipr)
        # The device as lease_attrs last ensured it. The agent starts every round with lease_attrs, so the
        # rest of the round uses this instead of checking the device again; a device deleted meanwhile
        # makes a netlink call fail, and the agent's retry starts a new round that recreates it.
        self._link: link.LinkInfo | None = None
        self._peers: dict[IPv4Network, Lease] = {}  # what add_peer/reconcile programmed

    @property
    def device_name(self) -> str:
        return f"flannel.{self.config.backend.vni}"

    @property
    def mtu(self) -> int:
        return self.config.backend.mtu or self.ext.mtu - VXLAN_OVERHEAD

    def _ensure_device(self) -> link.LinkInfo:
        self._link = tunnel.ensure_vxlan(self.ipr, self.device_name, self.config.backend.vni, self.ext.address,
                                          self.ext.index, self.config.backend.port or VXLAN_DEFAULT_PORT, self.mtu)
        return self._link

    def _device(self) -> link.LinkInfo:
        return self._link or self._ensure_device()

    def lease_attrs(self) -> LeaseAttrs:
        device = self._ensure_device()
        return LeaseAttrs(self.ext.public_ip, "vxlan", {"VNI": self.config.backend.vni, "VtepMAC": device.mac})

    def register_network(self, lease: Lease) -> LocalNetwork:
        device = self._device()
        address.ensure_only_address(self.ipr, device.index, IPv4Interface(f"{lease.subnet.network_address}/32"))
        return LocalNetwork(self.device_name, self.mtu)

    def _state_for(self, lease: Lease, device_index: int) -> _PeerState | None:
        if lease.attrs.backend_type != "vxlan":
            self.warn_once((lease.subnet, lease.attrs.to_json()), logging.WARNING,
                           "peer %s (%s) runs backend %s, not vxlan: not reachable from this node",
                           lease.subnet, lease.attrs.public_ip, lease.attrs.backend_type or "udp")
            return None
        mac = _vtep_mac(lease)
        if mac is None:
            self.warn_once((lease.subnet, lease.attrs.to_json()), logging.WARNING,
                           "peer %s has no VtepMAC in its lease; skipped", lease.subnet)
            return None
        if self.config.backend.direct_routing and self._on_our_l2(lease.attrs.public_ip):
            return _PeerState(lease.subnet, lease.attrs.public_ip, self.ext.index, False, None)
        gateway = lease.subnet.network_address
        return _PeerState(lease.subnet, gateway, device_index, True, (mac, lease.attrs.public_ip))

    def _on_our_l2(self, address: IPv4Address) -> bool:
        gateway, oif = route.route_source(self.ipr, address)
        return gateway is None and oif == self.ext.index

    def _program(self, state: _PeerState, device_index: int) -> None:
        if state.vtep is not None:
            mac, remote = state.vtep
            neighbour.ensure_neighbour(self.ipr, device_index, state.gateway, mac)
            neighbour.ensure_fdb(self.ipr, device_index, mac, remote)
        route.ensure_route(self.ipr, state.subnet, state.oif, state.gateway, onlink=state.onlink)

    def add_peer(self, lease: Lease) -> None:
        device = self._device()
        self._peers[lease.subnet] = lease
        state = self._state_for(lease, device.index)
        if state is not None:
            self._program(state, device.index)

    def remove_peer(self, lease: Lease) -> None:
        self._peers.pop(lease.subnet, None)
        route.remove_route(self.ipr, lease.subnet)
        device = self._link or link.find_link(self.ipr, self.device_name)
        if device is None:
            return
        neighbour.remove_neighbour(self.ipr, device.index, lease.subnet.network_address)
        mac = _vtep_mac(lease)
        # One node may hold several leases (e.g. while its old one has not expired), all behind one VTEP:
        # its fdb entry stays while any of them is still a peer.
        shared = any(_vtep_mac(p) == mac and p.attrs.public_ip == lease.attrs.public_ip
                     for p in self._peers.values())
        if mac is not None and not shared:
            neighbour.remove_fdb(self.ipr, device.index, mac, lease.attrs.public_ip)

    def reconcile(self, peers: Iterable[Lease]) -> None:
        device = self._device()
        self._peers = {p.subnet: p for p in peers}
        states = [s for s in (self._state_for(p, device.index) for p in self._peers.values()) if s is not None]
        wanted_routes = {s.subnet for s in states}
        for present in route.routes_within(self.ipr, self.config.network):
            if present.oif in (device.index, self.ext.index) and present.dst not in wanted_routes:
                log.info("removing stale route %s", present.dst)
                route.remove_route(self.ipr, present.dst)
        wanted_neigh = {s.gateway: s.vtep[0] for s in states if s.vtep}
        for ip, mac in neighbour.permanent_neighbours(self.ipr, device.index).items():
            if wanted_neigh.get(ip) != mac:
                neighbour.remove_neighbour(self.ipr, device.index, ip)
        wanted_fdb = {s.vtep for s in states if s.vtep}
        for mac, remote in neighbour.fdb_entries(self.ipr, device.index) - wanted_fdb:
            neighbour.remove_fdb(self.ipr, device.index, mac, remote)
        for state in states:
            self._program(state, device.index)
