"""host-gw: every peer's subnet is routed via the peer's PublicIP, which must be on our L2 segment."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from ipaddress import IPv4Address

from pyroute2 import IPRoute

from muslin.fabric.backends.base import Backend, ExternalInterface, LocalNetwork
from muslin.fabric.config import NetworkConfig
from muslin.fabric.subnets import Lease, LeaseAttrs
from muslin.kernel import route, rtnl

log = logging.getLogger(__name__)


class HostGwBackend(Backend):
    type = "host-gw"

    def __init__(self, config: NetworkConfig, ext: ExternalInterface, ipr: IPRoute) -> None:
        super().__init__(config, ext, ipr)
        self.rtnl = rtnl.RtnlSocket.beside(ipr)

    def lease_attrs(self) -> LeaseAttrs:
        return LeaseAttrs(self.ext.public_ip, "host-gw")

    def register_network(self, lease: Lease) -> LocalNetwork:
        return LocalNetwork(self.ext.name, self.config.backend.mtu or self.ext.mtu)

    def _reachable(self, lease: Lease, source: tuple[IPv4Address | None, int | None] | None = None) -> bool:
        """source: the kernel's (gateway, oif) towards the lease's PublicIP, if already looked up."""
        if lease.attrs.backend_type != "host-gw":
            self.warn_once((lease.subnet, lease.attrs.to_json()), logging.WARNING,
                           "peer %s (%s) runs backend %s, not host-gw: not reachable from this node",
                           lease.subnet, lease.attrs.public_ip, lease.attrs.backend_type or "udp")
            return False
        if source is None:
            source = route.route_sources(self.rtnl, [lease.attrs.public_ip])[lease.attrs.public_ip]
        gateway, oif = source
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
            self.rtnl.execute([route.replace_request(lease.subnet, self.ext.index, lease.attrs.public_ip)])

    def remove_peer(self, lease: Lease) -> None:
        self.rtnl.execute([route.delete_request(lease.subnet)])

    def reconcile(self, peers: Iterable[Lease]) -> None:
        """One batch of lookups, one dump, and one batch of only the routes that are missing or wrong."""
        peers = list(peers)
        sources = route.route_sources(self.rtnl, (p.attrs.public_ip for p in peers if p.attrs.backend_type == self.type))
        wanted = {p.subnet: p for p in peers if self._reachable(p, sources.get(p.attrs.public_ip, (None, None)))}
        present = {r.dst: r for r in route.dump_routes(self.rtnl, self.config.network)}
        requests = []
        for routed in present.values():
            lease = wanted.get(routed.dst)
            if routed.oif == self.ext.index and (lease is None or routed.gateway != lease.attrs.public_ip):
                log.info("removing stale route %s via %s", routed.dst, routed.gateway)
                requests.append(route.delete_request(routed.dst))
        for lease in wanted.values():
            routed = present.get(lease.subnet)
            if routed is None or routed.gateway != lease.attrs.public_ip or routed.oif != self.ext.index:
                requests.append(route.replace_request(lease.subnet, self.ext.index, lease.attrs.public_ip))
        self.rtnl.execute(requests)

    def close(self) -> None:
        self.rtnl.close()
