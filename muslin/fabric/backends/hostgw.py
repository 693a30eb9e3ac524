"""host-gw: every peer's subnet is routed via the peer's PublicIP, which must be on our L2 segment."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from muslin.fabric.backends.base import Backend, LocalNetwork
from muslin.fabric.subnets import Lease, LeaseAttrs
from muslin.kernel import route

log = logging.getLogger(__name__)


class HostGwBackend(Backend):
    type = "host-gw"

    def lease_attrs(self) -> LeaseAttrs:
        return LeaseAttrs(self.ext.public_ip, "host-gw")

    def register_network(self, lease: Lease) -> LocalNetwork:
        return LocalNetwork(self.ext.name, self.config.backend.mtu or self.ext.mtu)

    def _reachable(self, lease: Lease) -> bool:
        if lease.attrs.backend_type != "host-gw":
            self.warn_once((lease.subnet, lease.attrs.to_json()), logging.WARNING,
                           "peer %s (%s) runs backend %s, not host-gw: not reachable from this node",
                           lease.subnet, lease.attrs.public_ip, lease.attrs.backend_type or "udp")
            return False
        gateway, oif = route.route_source(self.ipr, lease.attrs.public_ip)
        if gateway is not None or oif != self.ext.index:
            self.warn_once((lease.subnet, lease.attrs.to_json(), gateway, oif), logging.ERROR,
                           "refusing host-gw peer %s: its PublicIP %s is not on %s's L2 segment (reached %s); "
                           "host-gw needs every host on one L2 network, use vxlan or bgp across routers",
                           lease.subnet, lease.attrs.public_ip, self.ext.name,
                           f"via {gateway}" if gateway else f"through link #{oif}" if oif else "by no route")
            return False
        return True

    def add_peer(self, lease: Lease) -> None:
        if self._reachable(lease):
            route.ensure_route(self.ipr, lease.subnet, self.ext.index, lease.attrs.public_ip)

    def remove_peer(self, lease: Lease) -> None:
        route.remove_route(self.ipr, lease.subnet)

    def reconcile(self, peers: Iterable[Lease]) -> None:
        wanted = {p.subnet: p for p in peers if self._reachable(p)}
        for present in route.routes_within(self.ipr, self.config.network):
            lease = wanted.get(present.dst)
            if present.oif == self.ext.index and (lease is None or present.gateway != lease.attrs.public_ip):
                log.info("removing stale route %s via %s", present.dst, present.gateway)
                route.remove_route(self.ipr, present.dst)
        for lease in wanted.values():
            route.ensure_route(self.ipr, lease.subnet, self.ext.index, lease.attrs.public_ip)
