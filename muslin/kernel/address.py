"""IPv4 addresses on links: list them, ensure one is there, ensure it is the only one."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from ipaddress import IPv4Interface

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

AF_INET = 2


@dataclass(frozen=True, order=True)
class AddressInfo:
    index: int  # the link's
    address: IPv4Interface


def ipv4_addresses(ipr: IPRoute, index: int | None = None) -> list[AddressInfo]:
    """Every IPv4 address, of one link or of all."""
    kwargs = {"index": index} if index is not None else {}
    return [AddressInfo(a["index"], IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"))
            for a in ipr.get_addr(family=AF_INET, **kwargs)]


def ensure_address(ipr: IPRoute, index: int, address: IPv4Interface) -> None:
    """This address on the link (besides any others), in one round trip: the kernel refuses the same
    address and prefix twice with EEXIST, which means it is there already."""
    kwargs: dict[str, object] = {}
    if address.network.prefixlen <= 30:  # a /31 or /32 has no broadcast address (RFC 3021)
        kwargs["broadcast"] = str(address.network.broadcast_address)
    try:
        ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen, **kwargs)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def ensure_only_address(ipr: IPRoute, index: int, address: IPv4Interface) -> None:
    """This IPv4 address on the link and no other (a lease that changed leaves no stale one)."""
    present = [a.address for a in ipv4_addresses(ipr, index)]
    for old in present:
        if old != address:
            ipr.addr("del", index=index, address=str(old.ip), prefixlen=old.network.prefixlen)
    if address not in present:
        ensure_address(ipr, index, address)
