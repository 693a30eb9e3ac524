"""Tunnel devices: vxlan (as flannel makes it) and TUN.

The vxlan device acts through the IPRoute handle given (and so in that handle's network namespace); the
TUN device, which must be opened, is created in the namespace of the calling thread.
"""

from __future__ import annotations

import fcntl
import os
import struct
from ipaddress import IPv4Address

from pyroute2 import IPRoute

from .link import LinkInfo, ensure_mtu, ensure_up, find_link, link_by_index

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


class DeviceVanished(RuntimeError):
    """A device this process just made is gone again (deleted by someone else meanwhile)."""


def ensure_vxlan(ipr: IPRoute, name: str, vni: int, local: IPv4Address, underlay_index: int, port: int,
                 mtu: int) -> LinkInfo:
    """A vxlan device as flannel makes it (nolearning: the agent programs every peer), up with this MTU.

    A device of that name with other parameters is replaced; one that matches is kept with its MAC, so
    peers holding our VtepMAC stay right across restarts.
    """
    link = find_link(ipr, name)
    if link is not None:
        msg = ipr.get_links(link.index)[0]
        data = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA") if link.kind == "vxlan" else None
        same = data is not None and (
            data.get_attr("IFLA_VXLAN_ID") == vni and data.get_attr("IFLA_VXLAN_LOCAL") == str(local)
            and data.get_attr("IFLA_VXLAN_LINK") == underlay_index
            and data.get_attr("IFLA_VXLAN_PORT") == port and not data.get_attr("IFLA_VXLAN_LEARNING"))
        if not same:
            ipr.link("del", index=link.index)
            link = None
    if link is None:
        ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=str(local),
                 vxlan_link=underlay_index, vxlan_port=port, vxlan_learning=0)
        link = find_link(ipr, name)
        if link is None:
            raise DeviceVanished(f"vxlan device {name} vanished right after it was created")
    ensure_mtu(ipr, link.index, mtu)
    ensure_up(ipr, link.index)
    return link_by_index(ipr, link.index)


def add_vxlan_into(ipr: IPRoute, name: str, vni: int, local: IPv4Address, underlay_index: int, port: int,
                   mtu: int, netns_fd: int, *, proxy: bool = False) -> None:
    """A vxlan device born inside another namespace (libnetwork's overlay sandbox), nolearning: the
    device lives there, but its UDP socket and underlay stay in ``ipr``'s namespace, where the packets
    go out. ``proxy``: it answers ARP requests itself from its neighbour table (ARP suppression), so no
    broadcast crosses the underlay."""
    ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=str(local), vxlan_link=underlay_index,
             vxlan_port=port, vxlan_learning=0, vxlan_proxy=int(proxy), mtu=mtu, net_ns_fd=netns_fd)


def open_tun(name: str) -> int:
    """Create (or attach to) TUN device ``name`` without packet info, in the calling thread's namespace.

    Returns the fd; the device lives as long as it, so a crashed agent leaves no flannel0 behind.
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd
