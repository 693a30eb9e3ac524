"""vxlan, as flanneld programs it, so a flanneld vxlan node is a peer like any other.

Device ``flannel.<VNI>`` (nolearning, dstport 8472) with ``<subnet>.0/32``; for each peer: a permanent
neighbour ``<peer subnet>.0 -> VtepMAC``, an fdb entry ``VtepMAC -> PublicIP`` and the route
``<peer subnet> via <peer subnet>.0 dev flannel.<VNI> onlink``. With DirectRouting a peer on our L2
gets a plain route via its PublicIP instead.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from pyroute2 import IPRoute

from muslin.fabric.backends.base import Backend, ExternalInterface, LocalNetwork
from muslin.fabric.config import VXLAN_DEFAULT_PORT, NetworkConfig
from muslin.fabric.subnets import Lease, LeaseAttrs
from muslin.kernel import address, link, neighbour, route, rtnl, tunnel

log = logging.getLogger(__name__)
VXLAN_OVERHEAD = 50


@dataclass(frozen=True, slots=True)
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


def _vtep(lease: Lease) -> tuple[str, IPv4Address] | None:
    """(VtepMAC, PublicIP): the fdb entry the lease needs."""
    mac = _vtep_mac(lease)
    return None if mac is None else (mac, lease.attrs.public_ip)


class VxlanBackend(Backend):
    type = "vxlan"

    def __init__(self, config: NetworkConfig, ext: ExternalInterface, ipr: IPRoute) -> None:
        super().__init__(config, ext, ipr)
        # The device as lease_attrs last ensured it. The agent starts every round with lease_attrs, so the
        # rest of the round uses this instead of checking the device again; a device deleted meanwhile
        # makes a netlink call fail, and the agent's retry starts a new round that recreates it.
        self._link: link.LinkInfo | None = None
        self._peers: dict[IPv4Network, Lease] = {}  # what add_peer/reconcile programmed
        self._vtep_users: Counter[tuple[str, IPv4Address]] = Counter()  # leases per (VtepMAC, PublicIP)
        self.rtnl = rtnl.RtnlSocket.beside(ipr)

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

    def _state_for(self, lease: Lease, device_index: int, on_l2: bool | None = None) -> _PeerState | None:
        """on_l2: whether the lease's PublicIP is on our segment, if already looked up (DirectRouting)."""
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
        if self.config.backend.direct_routing:
            if on_l2 is None:
                on_l2 = self._on_our_l2(route.route_sources(self.rtnl, [lease.attrs.public_ip])[lease.attrs.public_ip])
            if on_l2:
                return _PeerState(lease.subnet, lease.attrs.public_ip, self.ext.index, False, None)
        gateway = lease.subnet.network_address
        return _PeerState(lease.subnet, gateway, device_index, True, (mac, lease.attrs.public_ip))

    def _on_our_l2(self, source: tuple[IPv4Address | None, int | None]) -> bool:
        gateway, oif = source
        return gateway is None and oif == self.ext.index

    @staticmethod
    def _program(state: _PeerState, device_index: int) -> list[rtnl.Request]:
        """The requests that put one peer's state in the kernel, route last (it is the one that draws traffic)."""
        requests = []
        if state.vtep is not None:
            mac, remote = state.vtep
            requests += [neighbour.neighbour_request(device_index, state.gateway, mac),
                         neighbour.fdb_request(device_index, mac, remote)]
        requests.append(route.replace_request(state.subnet, state.oif, state.gateway, onlink=state.onlink))
        return requests

    def _set_peers(self, peers: dict[IPv4Network, Lease]) -> None:
        self._peers = peers
        self._vtep_users = Counter(v for p in peers.values() if (v := _vtep(p)) is not None)

    def add_peer(self, lease: Lease) -> None:
        device = self._device()
        self._forget(lease.subnet)
        self._peers[lease.subnet] = lease
        if (vtep := _vtep(lease)) is not None:
            self._vtep_users[vtep] += 1
        state = self._state_for(lease, device.index)
        if state is not None:
            self.rtnl.execute(self._program(state, device.index))

    def _forget(self, subnet: IPv4Network) -> Lease | None:
        old = self._peers.pop(subnet, None)
        if old is not None and (vtep := _vtep(old)) is not None:
            self._vtep_users[vtep] -= 1
            if self._vtep_users[vtep] <= 0:
                del self._vtep_users[vtep]
        return old

    def remove_peer(self, lease: Lease) -> None:
        self._forget(lease.subnet)
        requests = [route.delete_request(lease.subnet)]
        device = self._link or link.find_link(self.ipr, self.device_name)
        if device is not None:
            requests.append(neighbour.neighbour_delete_request(device.index, lease.subnet.network_address))
            vtep = _vtep(lease)
            # One node may hold several leases (e.g. while its old one has not expired), all behind one VTEP:
            # its fdb entry stays while any of them is still a peer.
            if vtep is not None and not self._vtep_users.get(vtep):
                requests.append(neighbour.fdb_delete_request(device.index, *vtep))
        self.rtnl.execute(requests)

    def reconcile(self, peers: Iterable[Lease]) -> None:
        """Dump what the kernel holds, compare it with the peers, and send only the difference, in one batch:
        a round with nothing to fix writes nothing."""
        device = self._device()
        self._set_peers({p.subnet: p for p in peers})
        on_l2: dict[IPv4Address, bool] = {}
        if self.config.backend.direct_routing:
            sources = route.route_sources(self.rtnl, (p.attrs.public_ip for p in self._peers.values()))
            on_l2 = {ip: self._on_our_l2(source) for ip, source in sources.items()}
        states = [s for s in (self._state_for(p, device.index, on_l2.get(p.attrs.public_ip, False))
                              for p in self._peers.values()) if s is not None]
        present_routes = {r.dst: r for r in route.dump_routes(self.rtnl, self.config.network)}
        present_neigh = neighbour.dump_permanent_neighbours(self.rtnl, device.index)
        present_fdb = neighbour.dump_fdb(self.rtnl, device.index)
        requests: list[rtnl.Request] = []
        wanted_routes = {s.subnet for s in states}
        for present in present_routes.values():
            if present.oif in (device.index, self.ext.index) and present.dst not in wanted_routes:
                log.info("removing stale route %s", present.dst)
                requests.append(route.delete_request(present.dst))
        wanted_neigh = {s.gateway: s.vtep[0] for s in states if s.vtep}
        for ip, mac in present_neigh.items():
            if wanted_neigh.get(ip) != mac:
                requests.append(neighbour.neighbour_delete_request(device.index, ip))
        wanted_fdb = {s.vtep for s in states if s.vtep}
        for mac, remote in present_fdb - wanted_fdb:
            requests.append(neighbour.fdb_delete_request(device.index, mac, remote))
        for state in states:
            if state.vtep is not None:
                mac, remote = state.vtep
                if present_neigh.get(state.gateway) != mac:
                    requests.append(neighbour.neighbour_request(device.index, state.gateway, mac))
                if state.vtep not in present_fdb:
                    requests.append(neighbour.fdb_request(device.index, mac, remote))
            routed = present_routes.get(state.subnet)
            if routed is None or routed.gateway != state.gateway or routed.oif != state.oif:
                requests.append(route.replace_request(state.subnet, state.oif, state.gateway, onlink=state.onlink))
        self.rtnl.execute(requests)

    def close(self) -> None:
        self.rtnl.close()
