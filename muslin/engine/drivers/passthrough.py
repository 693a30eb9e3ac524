"""The host and null drivers: networks that exist once and program nothing.

``host`` shares the daemon's namespace (the runtime gets no netns of its own); ``null`` leaves the
container with loopback only. Neither has endpoints to wire.
"""

from __future__ import annotations

from muslin.errors import Forbidden
from muslin.kernel import link

from ..model import Endpoint, Network


class PassthroughDriver:
    def __init__(self, name: str) -> None:
        self.name = name

    def prepare(self, net: Network, others: list[Network]) -> None:
        raise Forbidden(f"only one instance of \"{self.name}\" network is allowed")

    def create_network(self, net: Network) -> None:
        pass

    def delete_network(self, net: Network) -> None:
        pass

    def restore(self, net: Network) -> None:
        pass

    def orphans(self, nets: list[Network], links: list[link.LinkInfo]) -> list[str]:
        return []

    def remove_orphan(self, name: str) -> None:
        pass

    def join(self, net: Network, ep: Endpoint, sandbox: str) -> None:
        pass

    def leave(self, net: Network, ep: Endpoint, sandbox: str | None = None) -> None:
        pass
