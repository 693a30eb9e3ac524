"""What the kernel's main table holds inside a network, read through pyroute2: the tests' oracle for
the overlay's routes (the agent reads them with ``route.dump_routes``, one bulk dump)."""

from __future__ import annotations

from ipaddress import IPv4Network

from pyroute2 import IPRoute

from muslin.kernel import route


def routes_within(ipr: IPRoute, network: IPv4Network) -> list[route.RouteEntry]:
    """Main-table IPv4 routes whose destination lies inside network (an overlay's own routes)."""
    return [r for r in route.ipv4_routes(ipr) if r.dst.subnet_of(network)]
