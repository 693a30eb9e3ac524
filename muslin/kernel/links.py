"""Links, addresses and routes through netlink, each call named for the state it ensures.

Every function takes an open IPRoute (see ``netns.iproute``) so one caller can batch several steps on one
socket, and every ``ensure_*`` is idempotent: re-running it after a crash converges instead of failing.
"""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv4Interface

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError


def index_of(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def link_kind(ipr: IPRoute, index: int) -> str | None:
    (link,) = ipr.get_links(index)
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def is_loopback(ipr: IPRoute, index: int) -> bool:
    (link,) = ipr.get_links(index)
    return bool(link["flags"] & 0x8)  # IFF_LOOPBACK


def random_mac() -> str:
    """A locally administered unicast MAC in Docker's 02:42 range."""
    return "02:42:" + ":".join(f"{b:02x}" for b in os.urandom(4))


def _ensure_link(ipr: IPRoute, name: str, kind: str, up_with: dict[str, object] | None = None,
                 **attrs: object) -> int:
    """A link of this kind and name, created (with ``attrs``) if missing, and set up (with ``up_with``).
    EOPNOTSUPP when the kernel lacks the kind."""
    index = index_of(ipr, name)
    if index is None:
        try:
            ipr.link("add", ifname=name, kind=kind, **attrs)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        index = index_of(ipr, name)
        if index is None:  # EEXIST for something else than the name (a VLAN id taken on its base)
            raise FileExistsError(f"a {kind} link like {name} exists already under another name")
    elif link_kind(ipr, index) != kind:
        raise FileExistsError(f"{name} exists and is not a {kind} link")
    ipr.link("set", index=index, state="up", **(up_with or {}))
    return index


def ensure_bridge(ipr: IPRoute, name: str, mtu: int) -> int:
    # An existing bridge takes the wanted MTU too, in the same call that sets it up.
    return _ensure_link(ipr, name, "bridge", up_with={"mtu": mtu}, address=random_mac(), mtu=mtu)


def ensure_address(ipr: IPRoute, index: int, address: IPv4Interface) -> None:
    present = {
        (a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=2)
    }
    if (str(address.ip), address.network.prefixlen) in present:
        return
    ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen,
             broadcast=str(address.network.broadcast_address))


def delete_link(ipr: IPRoute, name: str) -> bool:
    index = index_of(ipr, name)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
    return True


RETIRED_PREFIX = "mz-"
_reaper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="link-reaper")


def retire_link(ipr: IPRoute, name: str) -> bool:
    """Take a link out of service now and delete it in the background.

    Deleting a netdev waits for RCU grace periods (20-40 ms here), which would dominate `network rm`
    and container stop. Setting it down stops its traffic at once; flushing its addresses and renaming
    it frees the subnet and the name for immediate reuse; the slow delete follows on a worker. Leftovers of a crash in between carry RETIRED_PREFIX and are removed by ``reap_retired``.
    """
    index = index_of(ipr, name)
    if index is None:
        return False
    try:
        ipr.link("set", index=index, state="down")
        ipr.flush_addr(index=index)
        ipr.link("set", index=index, ifname=RETIRED_PREFIX + os.urandom(4).hex())
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:  # gone meanwhile (a veth whose peer was just deleted)
            return False
        raise
    _reaper.submit(_delete_index, index)
    return True


def retire_veth(ipr: IPRoute, host_name: str, peer_ipr: IPRoute, peer_name: str) -> bool:
    """``retire_link`` for a veth pair whose peer lives in another namespace (a container's).

    The peer is renamed inside its namespace, so the name (eth0) is free for the next join at once;
    deleting the host end later takes the peer with it.
    """
    peer = index_of(peer_ipr, peer_name)
    if peer is not None:
        peer_ipr.link("set", index=peer, state="down")
        peer_ipr.link("set", index=peer, ifname=RETIRED_PREFIX + os.urandom(4).hex())
    index = index_of(ipr, host_name)
    if index is None:
        return False
    ipr.link("set", index=index, state="down")
    # Renamed too, so a crash before the reaper runs leaves a link reap_retired knows to remove.
    ipr.link("set", index=index, ifname=RETIRED_PREFIX + os.urandom(4).hex())
    _reaper.submit(_delete_index, index)
    return True


def _delete_index(index: int) -> None:
    with IPRoute() as ipr:
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise


def reap_retired(ipr: IPRoute) -> None:
    for link in ipr.get_links():
        if link.get_attr("IFLA_IFNAME", "").startswith(RETIRED_PREFIX):
            _delete_index(link["index"])


def wait_for_reaper() -> None:
    _reaper.submit(lambda: None).result()


def ipv4_routes(ipr: IPRoute) -> list[tuple[str, int]]:
    """(destination, prefix) of every IPv4 route in the main table, for IPAM's overlap check."""
    out = []
    for r in ipr.get_routes(family=2, table=254):
        dst = r.get_attr("RTA_DST")
        if dst:
            out.append((dst, r["dst_len"]))
    return out


def link_names(ipr: IPRoute) -> list[str]:
    return [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]


def bridge_names(ipr: IPRoute) -> list[str]:
    out = []
    for link in ipr.get_links():
        info = link.get_attr("IFLA_LINKINFO")
        if info and info.get_attr("IFLA_INFO_KIND") == "bridge":
            out.append(link.get_attr("IFLA_IFNAME"))
    return out


def interface_addresses(ipr: IPRoute) -> list[IPv4Interface]:
    return [
        IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}") for a in ipr.get_addr(family=2)
    ]


def add_veth_into(ipr: IPRoute, host_ifname: str, peer_ifname: str, netns_fd: int, mtu: int,
                  peer_mac: str, master_index: int) -> tuple[int, int | None]:
    """Create a veth pair whose peer is born inside the target namespace (no link move), host end on
    the bridge and up. Returns the host end's index and, when the handle echoes, the peer's index in
    its namespace (the host end's IFLA_LINK), which spares a lookup there."""
    reply = ipr.link("add", ifname=host_ifname, kind="veth", mtu=mtu, master=master_index, state="up",
                     peer={"ifname": peer_ifname, "net_ns_fd": netns_fd, "address": peer_mac, "mtu": mtu})
    echoed = [m for m in reply or [] if m.get("event") == "RTM_NEWLINK" and m.get("index")]
    if echoed:
        return echoed[0]["index"], echoed[0].get_attr("IFLA_LINK")
    index = index_of(ipr, host_ifname)
    assert index is not None
    return index, None


def ensure_vlan(ipr: IPRoute, name: str, base_index: int, vlan_id: int) -> int:
    return _ensure_link(ipr, name, "vlan", link=base_index, vlan_id=vlan_id)


def ensure_dummy(ipr: IPRoute, name: str) -> int:
    return _ensure_link(ipr, name, "dummy")


def ensure_veth_pair(ipr: IPRoute, name: str, peer: str) -> int:
    """Both ends in this namespace and up; returns ``name``'s index."""
    index = _ensure_link(ipr, name, "veth", peer=peer)
    peer_index = index_of(ipr, peer)
    if peer_index is not None:
        ipr.link("set", index=peer_index, state="up")
    return index


def add_macvlan_into(ipr: IPRoute, ifname: str, parent_index: int, netns_fd: int, mode: str, mac: str) -> None:
    """A macvlan of the parent, born inside the target namespace under its final name."""
    ipr.link("add", ifname=ifname, kind="macvlan", link=parent_index, macvlan_mode=mode, address=mac,
             net_ns_fd=netns_fd)


def configure_container_link(ipr: IPRoute, ifname: str, address: IPv4Interface,
                             gateway: IPv4Address | None, index: int | None = None) -> None:
    """Inside the container's namespace: address, up, and the default route via the gateway.
    ``index``: the link's, when the caller knows it already."""
    index = index or index_of(ipr, ifname)
    if index is None:
        raise FileNotFoundError(f"{ifname} is missing in the container namespace")
    ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen,
             broadcast=str(address.network.broadcast_address))
    ipr.link("set", index=index, state="up")
    if gateway is not None:
        # A second network does not replace the first one's default route, as in Docker.
        _add_default_route(ipr, index, gateway)


def ensure_default_route(ipr: IPRoute, ifname: str, gateway: IPv4Address) -> None:
    """A default route via ``gateway`` on ``ifname`` unless one exists already."""
    index = index_of(ipr, ifname)
    if index is not None:
        _add_default_route(ipr, index, gateway)


def _add_default_route(ipr: IPRoute, index: int, gateway: IPv4Address) -> None:
    try:
        ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway), oif=index)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def set_sysctl(path: str, value: str) -> None:
    """Write /proc/sys/<path>; /proc/sys/net resolves against the calling thread's namespace."""
    with open(f"/proc/sys/{path}", "w") as f:
        f.write(value)

