"""Backends against the kernel of a scratch namespace: the udp backend's failures leave nothing open and a
forwarder that stopped is rebuilt; the vxlan backend keeps a VTEP's fdb entry while a lease still uses it."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Network

import pytest

from muslin.fabric.agent import AgentError, find_external_interface
from muslin.fabric.backends import udp
from muslin.fabric.backends.vxlan import VxlanBackend
from muslin.fabric.backends.base import ExternalInterface
from muslin.fabric.config import parse_config
from muslin.fabric.subnets import Lease, LeaseAttrs
from muslin.kernel import address, link, neighbour, netns
from muslin.lab.rig import wait_for
from tests.fabric.kernel_routes import routes_within

pytestmark = pytest.mark.root

CONFIG = parse_config('{"Network":"172.21.0.0/16","Backend":{"Type":"udp"}}')
OWN = Lease(IPv4Network("172.21.5.0/24"), LeaseAttrs(IPv4Address("192.0.2.1")))
PEER = Lease(IPv4Network("172.21.6.0/24"), LeaseAttrs(IPv4Address("192.0.2.2")))


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_failed_bind_closes_the_tun_fd_and_socket(underlay) -> None:
    ns, ipr, eth0 = underlay
    # 192.0.2.99 is on no interface: bind fails with EADDRNOTAVAIL after flannel0 was opened.
    backend = udp.UdpBackend(CONFIG, ExternalInterface("eth0", eth0, IPv4Address("192.0.2.99"),
                                                       IPv4Address("192.0.2.99"), 1500), ipr)
    before = open_fds()
    with netns.entered(ns):
        for _ in range(2):  # the retry fails the same way, not with EBUSY from a leaked fd
            with pytest.raises(OSError) as failed:
                backend.register_network(OWN)
            assert failed.value.errno == 99  # EADDRNOTAVAIL
    assert open_fds() == before
    assert link.find_link(ipr, udp.TUN_NAME) is None
    assert backend.forwarder is None and backend.sock is None and backend.tun_fd is None


def test_reconcile_rebuilds_a_forwarder_that_stopped(underlay, monkeypatch) -> None:
    ns, ipr, eth0 = underlay
    monkeypatch.setattr(udp, "GIVE_UP_AFTER", 2)  # give up after two failed reads, not after seconds
    backend = udp.UdpBackend(CONFIG, ExternalInterface("eth0", eth0, IPv4Address("192.0.2.1"),
                                                       IPv4Address("192.0.2.1"), 1500), ipr)
    try:
        with netns.entered(ns):
            backend.register_network(OWN)
            backend.add_peer(PEER)
            first = backend.forwarder
            assert first is not None and first.alive
            assert first.routes == {int(PEER.subnet.network_address): ("192.0.2.2", 8285)}
            # flannel0 deleted by hand: the fd stays open but its reads fail, and the thread gives up.
            ipr.link("del", index=link.find_link(ipr, udp.TUN_NAME).index)
            wait_for(lambda: not first.alive, 5, "the forwarder to give up")
            backend.reconcile([PEER])
        second = backend.forwarder
        assert second is not None and second is not first and second.alive
        assert second.routes == first.routes
        device = link.find_link(ipr, udp.TUN_NAME)
        assert device is not None and device.mtu == 1472
        assert [str(a.address) for a in address.ipv4_addresses(ipr, device.index)] == ["172.21.5.0/32"]
        assert any(r.dst == CONFIG.network for r in routes_within(ipr, CONFIG.network))
        # Deleted again: the next reconcile replaces it at once, without waiting for the thread to give up.
        ipr.link("del", index=device.index)
        with netns.entered(ns):
            backend.reconcile([PEER])
        assert backend.forwarder is not second and backend.forwarder.alive
        assert link.find_link(ipr, udp.TUN_NAME) is not None
    finally:
        backend.close()
    assert link.find_link(ipr, udp.TUN_NAME) is None


def test_vxlan_keeps_a_vtep_entry_while_another_lease_of_that_node_uses_it(underlay) -> None:
    ns, ipr, eth0 = underlay
    config = parse_config('{"Network":"172.21.0.0/16","Backend":{"Type":"vxlan"}}')
    backend = VxlanBackend(config, ExternalInterface("eth0", eth0, IPv4Address("192.0.2.1"),
                                                     IPv4Address("192.0.2.1"), 1500), ipr)
    mac = "aa:bb:cc:dd:ee:01"
    # One node (192.0.2.2) with two leases, e.g. its old one not yet expired; the second spells the key
    # as a Go decoder would accept it.
    first = Lease(IPv4Network("172.21.6.0/24"), LeaseAttrs(IPv4Address("192.0.2.2"), "vxlan",
                                                             {"VNI": 1, "VtepMAC": mac}))
    second = Lease(IPv4Network("172.21.7.0/24"), LeaseAttrs(IPv4Address("192.0.2.2"), "vxlan",
                                                              {"VNI": 1, "vtepmac": mac.upper()}))
    backend.lease_attrs()
    backend.register_network(OWN)
    backend.add_peer(first)
    backend.add_peer(second)
    dev = link.find_link(ipr, "flannel.1").index
    assert neighbour.fdb_entries(ipr, dev) == {(mac, IPv4Address("192.0.2.2"))}
    backend.remove_peer(first)
    assert neighbour.fdb_entries(ipr, dev) == {(mac, IPv4Address("192.0.2.2"))}  # second still needs it
    assert set(neighbour.permanent_neighbours(ipr, dev)) == {IPv4Address("172.21.7.0")}
    assert [r.dst for r in routes_within(ipr, config.network)] == [second.subnet]
    backend.remove_peer(second)
    assert neighbour.fdb_entries(ipr, dev) == set() and neighbour.permanent_neighbours(ipr, dev) == {}
    assert routes_within(ipr, config.network) == []


def test_interface_choice_follows_flanneld(underlay) -> None:
    """--iface first, then --iface-regex, then --iface-can-reach; with none of them, the interface holding
    --public-ip, else the default route's; a miss is an error, never a silent fallback."""
    ns, ipr, eth0 = underlay
    eth0p = ipr.link_lookup(ifname="eth0p")[0]
    ipr.addr("add", index=eth0p, address="198.51.100.1", prefixlen=24)
    ipr.route("add", dst="203.0.113.0/24", gateway="198.51.100.254", oif=eth0p)
    ipr.route("add", dst="0.0.0.0/0", gateway="192.0.2.254", oif=eth0)
    pick = find_external_interface
    assert pick(ipr, ["nope", "eth0p"], None).name == "eth0p"
    assert pick(ipr, ["nope"], None, ["^198\\."]).address == IPv4Address("198.51.100.1")
    assert pick(ipr, ["nope"], None, ["^10\\."], IPv4Address("203.0.113.9")).name == "eth0p"
    assert pick(ipr, [], IPv4Address("198.51.100.1")).name == "eth0p"
    assert pick(ipr, [], None).name == "eth0"  # the default route's
    assert pick(ipr, [], None, [], IPv4Address("192.0.2.9")).name == "eth0"  # on eth0's own link
    with pytest.raises(AgentError, match="no interface matches --iface nope, --iface-regex x"):
        pick(ipr, ["nope"], None, ["x"])
    with pytest.raises(AgentError, match="no interface holds --public-ip 10.9.9.9"):
        pick(ipr, [], IPv4Address("10.9.9.9"))
