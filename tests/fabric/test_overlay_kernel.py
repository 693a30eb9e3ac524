"""muslin.kernel.overlay in a scratch namespace: every ensure_* is idempotent, every remove_* tolerant."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from muslin.kernel import links, netns, overlay
from tests.fabric.rig import in_ns

pytestmark = pytest.mark.root

PEER = IPv4Network("10.5.74.0/24")
MAC = "aa:bb:cc:dd:ee:01"


def test_vxlan_device_is_kept_when_it_matches_and_replaced_when_not(underlay) -> None:
    ns, ipr, eth0 = underlay
    first = overlay.ensure_vxlan(ipr, "flannel.1", 1, IPv4Address("192.0.2.1"), eth0, 8472, 1450)
    again = overlay.ensure_vxlan(ipr, "flannel.1", 1, IPv4Address("192.0.2.1"), eth0, 8472, 1450)
    assert (first.index, first.mac, first.mtu) == (again.index, again.mac, 1450)
    other = overlay.ensure_vxlan(ipr, "flannel.1", 1, IPv4Address("192.0.2.1"), eth0, 4789, 1400)
    assert other.index != first.index and other.mtu == 1400
    assert "dstport 4789 nolearning" in in_ns(ns, "ip", "-d", "link", "show", "flannel.1").stdout
    assert links.delete_link(ipr, "flannel.1")
    assert not links.delete_link(ipr, "flannel.1")
    assert overlay.find_link(ipr, "flannel.1") is None


def test_peer_state_is_idempotent_and_removal_tolerant(underlay) -> None:
    ns, ipr, eth0 = underlay
    dev = overlay.ensure_vxlan(ipr, "flannel.1", 1, IPv4Address("192.0.2.1"), eth0, 8472, 1450).index
    for _ in range(2):
        overlay.ensure_only_address(ipr, dev, IPv4Interface("10.5.1.0/32"))
        overlay.ensure_neighbour(ipr, dev, PEER.network_address, MAC)
        overlay.ensure_fdb(ipr, dev, MAC, IPv4Address("192.0.2.2"))
        overlay.ensure_route(ipr, PEER, dev, PEER.network_address, onlink=True)
    assert [a for _, a in overlay.ipv4_addresses(ipr, dev)] == [IPv4Interface("10.5.1.0/32")]
    assert overlay.permanent_neighbours(ipr, dev) == {PEER.network_address: MAC}
    assert overlay.fdb_entries(ipr, dev) == {(MAC, IPv4Address("192.0.2.2"))}
    assert overlay.routes_within(ipr, IPv4Network("10.5.0.0/16")) == [
        overlay.RouteEntry(PEER, PEER.network_address, dev)]
    assert f"{PEER} via {PEER.network_address} dev flannel.1 onlink" in in_ns(ns, "ip", "route").stdout
    # A new lease moves the device's address; the old one goes.
    overlay.ensure_only_address(ipr, dev, IPv4Interface("10.5.9.0/32"))
    assert [a for _, a in overlay.ipv4_addresses(ipr, dev)] == [IPv4Interface("10.5.9.0/32")]
    for _ in range(2):
        overlay.remove_route(ipr, PEER)
        overlay.remove_neighbour(ipr, dev, PEER.network_address)
        overlay.remove_fdb(ipr, dev, MAC, IPv4Address("192.0.2.2"))
    assert overlay.routes_within(ipr, IPv4Network("10.5.0.0/16")) == []
    assert overlay.permanent_neighbours(ipr, dev) == {} and overlay.fdb_entries(ipr, dev) == set()


def test_route_source_tells_on_link_from_routed(underlay) -> None:
    _, ipr, eth0 = underlay
    assert overlay.route_source(ipr, IPv4Address("192.0.2.7")) == (None, eth0)
    assert overlay.route_source(ipr, IPv4Address("198.51.100.1")) == (None, None)  # unreachable
    overlay.ensure_route(ipr, IPv4Network("198.51.100.0/24"), eth0, IPv4Address("192.0.2.254"))
    assert overlay.route_source(ipr, IPv4Address("198.51.100.1")) == (IPv4Address("192.0.2.254"), eth0)


def test_tun_device_lives_as_long_as_its_fd(host_ns: str) -> None:
    with netns.entered(host_ns):
        fd = overlay.open_tun("flannel0")
    try:
        with netns.iproute(host_ns) as ipr:
            assert overlay.find_link(ipr, "flannel0") is not None
    finally:
        os.close(fd)
    with netns.iproute(host_ns) as ipr:
        assert overlay.find_link(ipr, "flannel0") is None
