"""Which of a container's endpoints gives it its default gateway, as libnetwork chooses it.

That endpoint holds the container's default route and its published ports (dockerd programs a
container's external connectivity on it alone, and moves both when a connect or disconnect changes
the choice). dockerd orders a sandbox's endpoints by: the endpoint's gateway priority (higher first),
then non-internal before internal, then those with a gateway first, then the network's name; the
gateway endpoint is the first in that order that has a gateway. An internal network's endpoint has no
gateway, so it never gives one: a container only on internal networks has no default route and
publishes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Endpoint, Network


@dataclass(frozen=True)
class GatewayCandidate:
    """A live endpoint of the container, with what the choice looks at."""

    network: Network
    endpoint: Endpoint
    priority: int = 0  # the endpoint's GwPriority (0 unless the client set one)


def _order(c: GatewayCandidate) -> tuple[int, bool, bool, str]:
    return (-c.priority, c.network.internal, c.endpoint.gateway is None, c.network.name)


def gateway_endpoint(candidates: list[GatewayCandidate]) -> GatewayCandidate | None:
    """The candidate that gives the default gateway; None when no endpoint has a gateway."""
    for candidate in sorted(candidates, key=_order):
        if candidate.endpoint.gateway is not None:
            return candidate
    return None
