"""The contract every datapath keeps (flannel's Backend seam).

The agent calls these from one worker thread (its kernel thread), in this order: ``lease_attrs`` (what to
publish; may create the device whose MAC goes into the lease), ``register_network`` with the lease it got,
then ``add_peer``/``remove_peer`` as leases come and go, and ``reconcile`` with the whole peer table
periodically and after any error. All of them are idempotent. At the stop: ``interrupt`` (from another
thread), then ``close``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from pyroute2 import IPRoute

from muslin.fabric.config import NetworkConfig
from muslin.fabric.subnets import Lease, LeaseAttrs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalInterface:
    """The underlay interface (``--iface``) and the address peers reach us at (``--public-ip``)."""

    name: str
    index: int
    address: IPv4Address  # our address on that interface: vxlan's local end, udp's bind address
    public_ip: IPv4Address  # what the lease advertises (differs only behind NAT)
    mtu: int


@dataclass(frozen=True)
class LocalNetwork:
    device: str
    mtu: int


class Backend(ABC):
    type: str

    def __init__(self, config: NetworkConfig, ext: ExternalInterface, ipr: IPRoute) -> None:
        self.config = config
        self.ext = ext
        self.ipr = ipr
        self._warned: set[tuple[object, ...]] = set()

    def warn_once(self, key: tuple[object, ...], level: int, message: str, *args: object) -> None:
        """Log a peer problem once, not on every reconcile round."""
        if key not in self._warned:
            self._warned.add(key)
            log.log(level, message, *args)

    @abstractmethod
    def lease_attrs(self) -> LeaseAttrs: ...

    @abstractmethod
    def register_network(self, lease: Lease) -> LocalNetwork: ...

    @abstractmethod
    def add_peer(self, lease: Lease) -> None: ...

    @abstractmethod
    def remove_peer(self, lease: Lease) -> None: ...

    @abstractmethod
    def reconcile(self, peers: Iterable[Lease]) -> None:
        """Make the kernel hold exactly the state for these peers (add missing, remove stale)."""

    def interrupt(self) -> None:
        """The agent is stopping. Called from a thread of its own while a call above may still run on the kernel
        thread: make that call stop waiting on anything outside the agent, and start nothing new. Only this runs
        outside the kernel thread. Nothing to do by default (the other backends wait on the kernel alone)."""

    def close(self) -> None:
        """Release what dies with the agent (sockets, forwarders); devices and routes stay for a restart."""
