"""The driver contract: create/delete a network, join/leave an endpoint into a sandbox."""

from __future__ import annotations

from typing import Protocol

from pyroute2 import IPRoute

from muslin.kernel import netns

from ..model import Endpoint, Network


class HostNetlink:
    """One netlink handle into the daemon's namespace, shared by the drivers and kept open: opening
    one costs ~0.6 ms, a tenth of a container's whole attach. Used from the engine's worker thread only."""

    def __init__(self) -> None:
        self._ipr: IPRoute | None = None

    def get(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = netns.iproute(echo=True)
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None


class OnHostLinks:
    """For drivers that program links in the daemon's namespace: ``host`` is the shared handle."""

    def __init__(self, host: HostNetlink) -> None:
        self._host = host

    @property
    def host(self) -> IPRoute:
        return self._host.get()


class NetworkDriver(Protocol):
    name: str

    def prepare(self, net: Network, others: list[Network]) -> None:
        """Validate the user's options and fill ``net.resolved``; raise EngineError on bad input."""

    def create_network(self, net: Network) -> None:
        """Program the kernel for the network; idempotent, undoes its own partial work on failure."""

    def delete_network(self, net: Network) -> None:
        """Remove everything create_network programmed; idempotent."""

    def join(self, net: Network, ep: Endpoint, sandbox: str) -> None:
        """Wire the endpoint into the sandbox (a netns path)."""

    def leave(self, net: Network, ep: Endpoint, sandbox: str | None = None) -> None:
        """Unwire the endpoint (from the sandbox, when it still exists); idempotent."""
