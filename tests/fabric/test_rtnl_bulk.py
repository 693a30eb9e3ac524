"""The bulk route netlink helpers against a scratch namespace's kernel: what a batch writes is what
pyroute2 (and so ip(8)) reads back, dumps read what pyroute2 reads, and refusals are reported or
tolerated as each request says."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv4Network

import pytest

from muslin.kernel import neighbour, netns, route, rtnl, tunnel
from tests.fabric.kernel_routes import routes_within

pytestmark = pytest.mark.root

PEERS = 600  # more than one datagram's worth of requests (rtnl.MESSAGES_PER_SEND)


def mac(i: int) -> str:
    return f"0a:58:00:00:{i >> 8:02x}:{i & 255:02x}"


def test_batch_programs_and_removes_what_pyroute2_reads(underlay) -> None:
    ns, ipr, eth0 = underlay
    vxlan = tunnel.ensure_vxlan(ipr, "flannel.1", 1, IPv4Address("192.0.2.1"), eth0, 8472, 1450)
    subnets = [IPv4Network(f"10.{1 + i // 256}.{i % 256}.0/24") for i in range(PEERS)]
    remotes = [IPv4Address(f"192.0.2.{10 + i % 200}") for i in range(PEERS)]
    requests = []
    for i, subnet in enumerate(subnets):
        requests += [neighbour.neighbour_request(vxlan.index, subnet.network_address, mac(i)),
                     neighbour.fdb_request(vxlan.index, mac(i), remotes[i]),
                     route.replace_request(subnet, vxlan.index, subnet.network_address, onlink=True)]
    requests.append(route.replace_request(IPv4Network("10.200.0.0/24"), eth0, IPv4Address("192.0.2.77")))
    with rtnl.RtnlSocket(ns) as sock:
        assert sock.execute(requests) == []
        assert sock.execute(requests) == []  # replace: a second run changes nothing and fails nothing

        within = IPv4Network("10.0.0.0/8")
        dumped = route.dump_routes(sock, within)
        assert sorted(dumped, key=str) == sorted(routes_within(ipr, within), key=str)
        assert len(dumped) == PEERS + 1
        assert route.RouteEntry(IPv4Network("10.200.0.0/24"), IPv4Address("192.0.2.77"), eth0) in dumped
        assert neighbour.dump_permanent_neighbours(sock, vxlan.index) == neighbour.permanent_neighbours(ipr, vxlan.index)
        assert neighbour.dump_fdb(sock, vxlan.index) == neighbour.fdb_entries(ipr, vxlan.index)
        assert neighbour.dump_fdb(sock, vxlan.index) == {(mac(i), remotes[i]) for i in range(PEERS)}
        (onlink,) = [r for r in ipr.get_routes(family=2, table=254)
                     if r.get_attr("RTA_DST") == "10.1.5.0" and r["dst_len"] == 24]
        assert onlink["proto"] == route.RTPROT_BOOT and onlink["flags"] & route.RTNH_F_ONLINK

        sources = route.route_sources(sock, [IPv4Address("10.1.7.9"), IPv4Address("192.0.2.55"),
                                             IPv4Address("198.51.100.1")])
        assert sources == {IPv4Address("10.1.7.9"): (IPv4Address("10.1.7.0"), vxlan.index),
                           IPv4Address("192.0.2.55"): (None, eth0),
                           IPv4Address("198.51.100.1"): (None, None)}
        for address in sources:
            assert route.route_source(ipr, address) == sources[address]

        removals = []
        for i, subnet in enumerate(subnets):
            removals += [route.delete_request(subnet), neighbour.neighbour_delete_request(vxlan.index, subnet.network_address),
                         neighbour.fdb_delete_request(vxlan.index, mac(i), remotes[i])]
        sock.execute(removals)
        sock.execute(removals)  # gone already: tolerated
        assert route.dump_routes(sock, within) == [route.RouteEntry(IPv4Network("10.200.0.0/24"),
                                                                    IPv4Address("192.0.2.77"), eth0)]
        assert neighbour.dump_permanent_neighbours(sock, vxlan.index) == {}
        assert neighbour.dump_fdb(sock, vxlan.index) == set()


def test_a_refusal_is_raised_after_the_rest_of_the_batch_ran(underlay) -> None:
    ns, ipr, eth0 = underlay
    good = IPv4Network("10.9.1.0/24")
    with rtnl.RtnlSocket(ns) as sock:
        with pytest.raises(rtnl.RtnlError) as refused:
            # No route reaches 203.0.113.1 and the route is not onlink: the kernel refuses it.
            sock.execute([route.replace_request(IPv4Network("10.9.0.0/24"), eth0, IPv4Address("203.0.113.1")),
                          route.replace_request(good, eth0, IPv4Address("192.0.2.9"))])
        assert refused.value.errno == errno.ENETUNREACH
        assert "10.9.0.0/24" in str(refused.value)
        assert [r.dst for r in route.dump_routes(sock, IPv4Network("10.0.0.0/8"))] == [good]
    with netns.entered(ns):  # a socket made in the calling thread's namespace works alike
        with rtnl.RtnlSocket() as sock:
            assert [r.dst for r in route.dump_routes(sock, IPv4Network("10.0.0.0/8"))] == [good]
