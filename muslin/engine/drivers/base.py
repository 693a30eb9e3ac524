"""The driver contract: create/delete a network, join/leave an endpoint into a sandbox, at start restore
what the kernel lacks and find the links of its own that no stored network explains; and for drivers
with NAT (bridge), publishing an endpoint's ports."""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from pyroute2 import IPRoute

from muslin.kernel import address, link, netns, route, rtnl

from ..firewall import PortSpec
from ..model import Endpoint, Network
from ..ports import HostPort, PortBinding


class HostNetlink:
    """Netlink handles into the daemon's namespace, shared by the drivers and kept open: opening one
    costs ~0.6 ms, a tenth of a container's whole attach. One per thread (the engine's workers): a
    pyroute2 handle is not to be shared between threads, and closes on the thread that opened it."""

    def __init__(self) -> None:
        self._own = threading.local()

    def get(self) -> IPRoute:
        ipr: IPRoute | None = getattr(self._own, "ipr", None)
        if ipr is None:
            ipr = self._own.ipr = netns.iproute()
        return ipr

    def close(self) -> None:
        """Close the calling thread's handle (each thread closes its own)."""
        ipr: IPRoute | None = getattr(self._own, "ipr", None)
        if ipr is not None:
            ipr.close()
            self._own.ipr = None


class OnHostLinks:
    """For drivers that program links in the daemon's namespace: ``host`` is the shared handle."""

    def __init__(self, host: HostNetlink) -> None:
        self._host = host

    @property
    def host(self) -> IPRoute:
        return self._host.get()


def configure_endpoint_link(sandbox: str, ep: Endpoint, index: int | None = None) -> None:
    """Inside the container's namespace (by path): the endpoint's addresses, up, and the default route
    via its gateway, in one batch on one raw socket (a pyroute2 handle into the namespace would cost more
    than the whole batch). ``index``: the link's, when the caller knows it already (a lookup less on the
    attach path)."""
    assert ep.address is not None
    with rtnl.RtnlSocket(sandbox) as sock:
        index = index or link.index_in(sock, ep.ifname)
        if index is None:
            raise FileNotFoundError(f"{ep.ifname} is missing in the container namespace")
        # IPAMConfig.LinkLocalIPs are more addresses of the same interface.
        requests = [address.add_request(index, a) for a in (ep.address, *ep.link_local)]
        requests.append(link.set_request(index, up=True))
        if ep.gateway is not None:
            requests.append(route.default_route_request(index, ep.gateway))
        sock.execute(requests)


class NetworkDriver(Protocol):
    name: str

    def prepare(self, net: Network, others: list[Network]) -> None:
        """Validate the user's options and set ``net.settings``; raise EngineError on bad input.
        ``others``: every other network as the store's cache holds it, to be read only."""

    def create_network(self, net: Network) -> None:
        """Program the kernel for the network; idempotent, undoes its own partial work on failure."""

    def delete_network(self, net: Network) -> None:
        """Remove everything create_network programmed; idempotent."""

    def restore(self, net: Network) -> None:
        """At start: program what the kernel lacks for a stored network (create_network again), logging
        rather than raising when what is missing is the user's to bring back."""

    def orphans(self, nets: list[Network], links: list[link.LinkInfo]) -> list[str]:
        """Links in the daemon's namespace named as this driver names its own that none of ``nets``
        (this driver's stored networks) explains: left by a create whose rollback failed, or by an
        older data root. A link with a name the user chose is never one: it may not be ours.
        ``links``: one dump of the namespace's links, shared by every driver at start."""

    def remove_orphan(self, name: str) -> None:
        """Remove an orphan link and whatever else of the driver's names it (firewall rules)."""

    def join(self, net: Network, ep: Endpoint, sandbox: str) -> None:
        """Wire the endpoint into the sandbox (a netns path)."""

    def leave(self, net: Network, ep: Endpoint, sandbox: str | None = None) -> None:
        """Unwire the endpoint (from the sandbox, when it still exists); idempotent."""


@runtime_checkable
class PortPublisher(Protocol):
    """A driver that publishes container ports on the host (bridge: DNAT to the endpoint). Used from
    the engine's worker threads."""

    def assign_ports(self, net: Network, ep: Endpoint, requested: list[PortBinding],
                     taken: list[HostPort]) -> list[PortBinding]:
        """Host ports for every requested binding; EngineError when one is taken."""

    def port_forwards(self, net: Network, ep: Endpoint, published: list[PortBinding]) -> list[PortSpec]:
        """What the firewall holds for these published ports."""

    def publish_ports(self, net: Network, ep: Endpoint, published: list[PortBinding]) -> None:
        """Program the ports assign_ports chose; idempotent."""

    def unpublish_ports(self, net: Network, ep: Endpoint, published: list[PortBinding]) -> None:
        """Remove what publish_ports programmed; idempotent."""
