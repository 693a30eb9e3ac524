"""Driver settings: what a driver resolved from the user's options and the daemon's flags when the
network was created (bridge name, MTU, macvlan parent, ...), stored with the network and read back
whenever the driver programs the kernel for it.

They are kept apart from ``Network.options``, what the user asked for, because inspect shows only that.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address


@dataclass(frozen=True)
class BridgeSettings:
    bridge_name: str
    mtu: int
    icc: bool  # containers of the network may talk to each other
    masquerade: bool  # traffic leaving the subnet is NATed to the host's address
    host_binding: IPv4Address  # where a published port without a host IP listens (0.0.0.0: everywhere)


class MacvlanMode(StrEnum):
    BRIDGE = "bridge"
    PRIVATE = "private"
    VEPA = "vepa"
    PASSTHRU = "passthru"


class ParentOrigin(StrEnum):
    USER = "user"  # an interface of the host's, used as it is and never removed
    VLAN = "vlan"  # a VLAN of a host interface, created with the network and removed with it
    DUMMY = "dummy"  # a lower link of muslind's own: the network is a segment of its own


@dataclass(frozen=True)
class Vlan:
    base: str  # the interface the VLAN is tagged on
    vid: int


@dataclass(frozen=True)
class MacvlanSettings:
    parent: str
    mode: MacvlanMode
    origin: ParentOrigin
    vlan: Vlan | None = None  # set when origin is VLAN: ``parent`` is ``<base>.<vid>``


@dataclass(frozen=True)
class OverlaySettings:
    vni: int  # the network's VXLAN id, the same on every engine (allocated in the cluster store)


DriverSettings = BridgeSettings | MacvlanSettings | OverlaySettings
