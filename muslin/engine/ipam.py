"""IPAM: validating pool configs, choosing free subnets, handing out addresses. Pure logic, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network

from muslin.errors import Conflict, Forbidden, InvalidArgument

from .model import IPAMPool
from .requests import IPAMPoolRequest


def default_pools() -> Iterator[IPv4Network]:
    """Docker's default local pools, in the order it hands them out."""
    for second in range(17, 32):
        yield IPv4Network(f"172.{second}.0.0/16")
    yield from IPv4Network("192.168.0.0/16").subnets(new_prefix=20)


def parse_network(text: str, what: str = "subnet") -> IPv4Network:
    try:
        net = ip_network(text, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text!r}: not a CIDR") from None
    if net.version != 4:
        raise InvalidArgument(f"invalid {what} {text!r}: only IPv4 is supported")
    if "/" not in text:
        raise InvalidArgument(f"invalid {what} {text!r}: expected CIDR notation (A.B.C.D/N)")
    return net  # type: ignore[return-value]


def parse_address(text: str, what: str) -> IPv4Address:
    try:
        addr = ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid {what} address {text!r}") from None
    if addr.version != 4:
        raise InvalidArgument(f"invalid {what} address {text!r}: only IPv4 is supported")
    return addr  # type: ignore[return-value]


def pool_from_config(cfg: IPAMPoolRequest) -> IPAMPool:
    """One entry of Docker's IPAM.Config, checked: gateway, range and aux addresses inside the subnet."""
    subnet_text = cfg.subnet
    if not subnet_text:
        raise InvalidArgument("IPAM config without a Subnet is not supported")
    subnet = parse_network(subnet_text)
    if subnet.prefixlen > 30:
        raise InvalidArgument(f"invalid subnet {subnet}: a /{subnet.prefixlen} leaves no room for hosts")
    if str(subnet) != subnet_text:
        # dockerd refuses host bits in the subnet the same way.
        raise InvalidArgument(f"invalid subnet {subnet_text}: it has host bits set, did you mean {subnet}?")
    pool = IPAMPool(subnet=subnet)
    if cfg.gateway:
        pool.gateway = parse_address(cfg.gateway, "gateway")
        if pool.gateway not in subnet:
            raise InvalidArgument(f"no matching subnet for gateway {pool.gateway}")
        if pool.gateway in (subnet.network_address, subnet.broadcast_address):
            raise InvalidArgument(f"invalid gateway {pool.gateway}: it is the subnet's network or broadcast address")
    if cfg.ip_range:
        pool.ip_range = parse_network(cfg.ip_range, "ip-range")
        if not pool.ip_range.subnet_of(subnet):
            raise InvalidArgument(f"no matching subnet for range {pool.ip_range}")
    for name, text in cfg.aux_addresses.items():
        addr = parse_address(text, f"auxiliary ({name})")
        if addr not in subnet:
            raise InvalidArgument(f"no matching subnet for aux-address {addr}")
        if addr == pool.gateway or addr in pool.aux_addresses.values():
            raise Conflict(f"failed to allocate secondary ip address ({name}:{addr}): Address already in use")
        pool.aux_addresses[name] = addr
    return pool


def first_host(subnet: IPv4Network) -> IPv4Address:
    return subnet.network_address + 1


def check_no_overlap(subnet: IPv4Network, taken: Iterable[tuple[str, IPv4Network]]) -> None:
    for owner, other in taken:
        if subnet.overlaps(other):
            raise Forbidden(f"invalid pool request: Pool overlaps with other one on this address space ({owner} uses {other})")


def choose_subnet(in_use: Iterable[IPv4Network]) -> IPv4Network:
    """The first default pool that overlaps nothing in use (networks and the namespace's routes)."""
    used = list(in_use)
    for candidate in default_pools():
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise Conflict("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")


def reserved(pool: IPAMPool) -> set[IPv4Address]:
    """Addresses never handed to an endpoint."""
    out = {pool.subnet.network_address, pool.subnet.broadcast_address, *pool.aux_addresses.values()}
    if pool.gateway:
        out.add(pool.gateway)
    return out


def next_free(pool: IPAMPool, allocated: set[IPv4Address]) -> IPv4Address:
    """Lowest free address of the pool's range (or subnet). As dockerd, a range's own first address is
    not handed out (it hands 10.40.0.9 first from --ip-range 10.40.0.8/30)."""
    space = pool.ip_range or pool.subnet
    skip = reserved(pool) | allocated | {space.network_address}
    for addr in space:
        if addr not in skip:
            return addr
    raise Conflict(f"no available IPv4 addresses on this network's address pools: {pool.subnet}")


def check_requested(pool: IPAMPool, addr: IPv4Address, allocated: set[IPv4Address]) -> None:
    if addr not in pool.subnet:
        raise InvalidArgument(f"requested address {addr} is outside the network's subnet {pool.subnet}")
    if addr in reserved(pool):
        raise InvalidArgument(f"requested address {addr} is reserved on this network")
    if addr in allocated:
        raise Conflict(f"Address already in use: {addr}")


def bridge_mac(addr: IPv4Address) -> str:
    """02:42 followed by the IPv4 bytes, as Docker (and the article) show it."""
    return "02:42:" + ":".join(f"{b:02x}" for b in addr.packed)
