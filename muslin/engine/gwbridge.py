"""The gateway bridge, ``docker_gwbridge``: how containers on overlay networks reach the outside.

An overlay gives its containers no way out (its bridge has no address on the host), so libnetwork gives
a container whose networks are all overlays a second interface on a local bridge network of its own,
``docker_gwbridge`` (ICC off, masqueraded), with the default route; published ports of such a container
go through it too. That bridge is an ordinary bridge network (listed, inspectable), made at the first
need. Its endpoints are the container's but not one of its networks (inspect does not list them), and
the embedded DNS does not answer names on it. The endpoint has a gateway where the overlay's has none,
so it is the container's gateway endpoint (``gateway``): the default route and published ports are its.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from muslin.errors import Conflict, NotFound

from .drivers.bridge_options import OPT_ICC, OPT_MASQ, OPT_NAME
from .model import Endpoint, Network
from .requests import NetworkCreate

if TYPE_CHECKING:
    from .networks import NetworkService

GATEWAY_BRIDGE = "docker_gwbridge"


def is_gateway_bridge(net: Network) -> bool:
    return net.name == GATEWAY_BRIDGE and net.driver == "bridge"


def needs_gateway(wired: list[tuple[Network, Endpoint]]) -> bool:
    """An overlay with a way out, and no other network giving the default route."""
    return (any(net.driver == "overlay" and not net.internal for net, _ in wired)
            and not any(ep.gateway is not None for _, ep in wired))


class GatewayBridge:
    """Attaches containers to docker_gwbridge."""

    def __init__(self, networks: NetworkService) -> None:
        self.networks = networks

    def network(self) -> Network:
        try:
            return self.networks.get(GATEWAY_BRIDGE)
        except NotFound:
            pass
        try:
            return self.networks.create(NetworkCreate(
                name=GATEWAY_BRIDGE, driver="bridge",
                options={OPT_NAME: GATEWAY_BRIDGE, OPT_ICC: "false", OPT_MASQ: "true"}))
        except Conflict:  # made meanwhile, for another container's start
            return self.networks.get(GATEWAY_BRIDGE)

    def attach(self, container_id: str, container_name: str, sandbox: str,
               wired: list[tuple[Network, Endpoint]]) -> list[tuple[Network, Endpoint]]:
        """The gateway endpoint (the next ethN, with the default route) when the container's endpoints,
        ``wired`` (all of them: the caller has them at hand), need one."""
        if not needs_gateway(wired):
            return []
        used = {ep.ifname for _, ep in wired}
        ifname = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
        with self.networks.joining(self.network().id) as net:
            ep = self.networks.allocate_endpoint(net, container_id, container_name, ifname)
            self.networks.wire_endpoint(net, ep, sandbox)
        return [(net, ep)]

    def unneeded(self, container_id: str, leaving_network_id: str = "") -> list[tuple[Network, Endpoint]]:
        """The container's docker_gwbridge endpoint, when its other endpoints (those on
        ``leaving_network_id`` counted as gone already) no longer need it: it is released then, as
        libnetwork clears a sandbox's default gateway when its last overlay leaves."""
        wired = [(self.networks.get(ep.network_id), ep)
                 for ep in self.networks.store.endpoints(container_id=container_id)
                 if ep.network_id != leaving_network_id]
        gateway = [(net, ep) for net, ep in wired if is_gateway_bridge(net)]
        if not gateway or needs_gateway([(net, ep) for net, ep in wired if not is_gateway_bridge(net)]):
            return []
        return gateway
