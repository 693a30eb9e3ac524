"""An overlay's kernel state (muslin.kernel tunnel, address, neighbour, route) in a scratch namespace: every ensure_* is idempotent, every remove_* tolerant."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from muslin.kernel import address, link, neighbour, netns, route, tunnel
from muslin.lab.rig import in_ns
from tests.fabric.kernel_routes import routes_within

pytestmark = pytest.mark.root

PEER = IPv4Network("10.5.74.0/24")
MAC = "aa:bb:cc:dd:ee:01"


def test_vxlan_device_is_kept_when_it_matches_and_replaced_when_not(underlay) -> None:
    ns, ipr, eth0 = underlay
    first = tunnel.ensure_vxlan(ipr, "flannel.1", 1, IPv4Address("192.0.2.1"), eth0, 8472, 1450)
    again = tunnel.ensure_vxlan(ipr, "flannel.1", 1, IPv4Address("192.0.2.1"), eth0, 8472, 1450)
    assert (first.index, first.mac, first.mtu) == (again.index, again.mac, 1450)
    other = tunnel.ensure_vxlan(ipr, "flannel.1", 1, IPv4Address("192.0.2.1"), eth0, 4789, 1400)
    assert other.index != first.index and other.mtu == 1400
    assert "dstport 4789 nolearning" in in_ns(ns, "ip", "-d", "link", "show", "flannel.1").stdout
    assert link.delete_link(ipr, "flannel.1")
    assert not link.delete_link(ipr, "flannel.1")
    assert link.find_link(ipr, "flannel.1") is None


def test_peer_state_is_idempotent_and_removal_tolerant(underlay) -> None:
    ns, ipr, eth0 = underlay
    dev = tunnel.ensure_vxlan(ipr, "flannel.1", 1, IPv4Address("192.0.2.1"), eth0, 8472, 1450).index
    for _ in range(2):
        address.ensure_only_address(ipr, dev, IPv4Interface("10.5.1.0/32"))
        neighbour.ensure_neighbour(ipr, dev, PEER.network_address, MAC)
        neighbour.ensure_fdb(ipr, dev, MAC, IPv4Address("192.0.2.2"))
        route.ensure_route(ipr, PEER, dev, PEER.network_address, onlink=True)
    assert [a.address for a in address.ipv4_addresses(ipr, dev)] == [IPv4Interface("10.5.1.0/32")]
    assert neighbour.permanent_neighbours(ipr, dev) == {PEER.network_address: MAC}
    assert neighbour.fdb_entries(ipr, dev) == {(MAC, IPv4Address("192.0.2.2"))}
    assert routes_within(ipr, IPv4Network("10.5.0.0/16")) == [
        route.RouteEntry(PEER, PEER.network_address, dev)]
    assert f"{PEER} via {PEER.network_address} dev flannel.1 onlink" in in_ns(ns, "ip", "route").stdout
    # A new lease moves the device's address; the old one goes.
    address.ensure_only_address(ipr, dev, IPv4Interface("10.5.9.0/32"))
    assert [a.address for a in address.ipv4_addresses(ipr, dev)] == [IPv4Interface("10.5.9.0/32")]
    for _ in range(2):
        route.remove_route(ipr, PEER)
        neighbour.remove_neighbour(ipr, dev, PEER.network_address)
        neighbour.remove_fdb(ipr, dev, MAC, IPv4Address("192.0.2.2"))
    assert routes_within(ipr, IPv4Network("10.5.0.0/16")) == []
    assert neighbour.permanent_neighbours(ipr, dev) == {} and neighbour.fdb_entries(ipr, dev) == set()


def test_route_source_tells_on_link_from_routed(underlay) -> None:
    _, ipr, eth0 = underlay
    assert route.route_source(ipr, IPv4Address("192.0.2.7")) == (None, eth0)
    assert route.route_source(ipr, IPv4Address("198.51.100.1")) == (None, None)  # unreachable
    route.ensure_route(ipr, IPv4Network("198.51.100.0/24"), eth0, IPv4Address("192.0.2.254"))
    assert route.route_source(ipr, IPv4Address("198.51.100.1")) == (IPv4Address("192.0.2.254"), eth0)


def test_tun_device_lives_as_long_as_its_fd(host_ns: str) -> None:
    with netns.entered(host_ns):
        fd = tunnel.open_tun("flannel0")
    try:
        with netns.iproute(host_ns) as ipr:
            assert link.find_link(ipr, "flannel0") is not None
    finally:
        os.close(fd)
    with netns.iproute(host_ns) as ipr:
        assert link.find_link(ipr, "flannel0") is None
