"""muslin.kernel link, address and route as the engine's drivers use them, in scratch namespaces:
every ensure_* idempotent, retired links gone from their own namespace, the attach path's echo."""

from __future__ import annotations

import errno
import os
import subprocess
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from muslin.engine.drivers.base import configure_endpoint_link
from muslin.engine.model import Endpoint
from muslin.kernel import address, link, netns, route

pytestmark = pytest.mark.root


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["nsenter", f"--net={netns.path_for(ns)}", "ip", *args],
                          capture_output=True, text=True, check=True, timeout=20).stdout


def test_bridge_is_kept_takes_the_mtu_and_its_name_is_its_kind(host_ns: str) -> None:
    with netns.iproute(host_ns) as ipr:
        first = link.ensure_bridge(ipr, "br-t", 1500)
        assert link.ensure_bridge(ipr, "br-t", 1400) == first
        found = link.find_link(ipr, "br-t")
        assert found is not None and (found.index, found.kind, found.mtu) == (first, "bridge", 1400)
        assert found.mac.startswith("02:42:") and not found.loopback
        assert ",UP" in ip(host_ns, "-o", "link", "show", "br-t")
        link.ensure_veth_pair(ipr, "dm-t", "dmp-t")
        with pytest.raises(FileExistsError):  # a link of another kind holds the name
            link.ensure_bridge(ipr, "dm-t", 1500)
        assert link.find_link(ipr, "dm-t").kind == "veth"
        lo = link.find_link(ipr, "lo")
        assert lo is not None and lo.loopback and lo.kind is None
        assert {"lo", "br-t", "dm-t"} <= {found.name for found in link.all_links(ipr)}
        assert link.find_link(ipr, "nope") is None and link.index_of(ipr, "nope") is None


def test_veth_pair_and_vlan_are_idempotent(host_ns: str) -> None:
    with netns.iproute(host_ns) as ipr:
        first = link.ensure_veth_pair(ipr, "dm-a", "dmp-a")
        assert link.ensure_veth_pair(ipr, "dm-a", "dmp-a") == first
        assert ",UP" in ip(host_ns, "-o", "link", "show", "dmp-a")
        try:
            vlan = link.ensure_vlan(ipr, "dm-a.10", first, 10)
        except NetlinkError as exc:
            if exc.code == errno.EOPNOTSUPP:
                pytest.skip("this kernel has no 802.1q")
            raise
        assert link.ensure_vlan(ipr, "dm-a.10", first, 10) == vlan
        with pytest.raises(FileExistsError):  # VLAN 10 of dm-a exists under another name
            link.ensure_vlan(ipr, "vl10", first, 10)
        assert "vlan protocol 802.1Q id 10" in ip(host_ns, "-d", "link", "show", "dm-a.10")


def test_address_and_routes_are_ensured_once(host_ns: str) -> None:
    with netns.iproute(host_ns) as ipr:
        index = link.ensure_veth_pair(ipr, "dm-r", "dmp-r")
        for _ in range(2):
            address.ensure_address(ipr, index, IPv4Interface("10.77.0.1/24"))
            address.ensure_address(ipr, index, IPv4Interface("10.78.0.1/32"))
        assert sorted(a.address for a in address.ipv4_addresses(ipr, index)) == [
            IPv4Interface("10.77.0.1/24"), IPv4Interface("10.78.0.1/32")]
        shown = ip(host_ns, "-o", "-4", "addr", "show", "dm-r")
        assert "10.77.0.1/24 brd 10.77.0.255" in shown and "10.78.0.1/32 scope" in shown  # no brd on a /32
        assert address.AddressInfo(index, IPv4Interface("10.77.0.1/24")) in address.ipv4_addresses(ipr)
        for _ in range(2):
            route.ensure_default_route(ipr, index, IPv4Address("10.77.0.254"))
        # A second gateway does not take over the default route, as a container's second network does not.
        route.ensure_default_route(ipr, index, IPv4Address("10.77.0.253"))
        assert ip(host_ns, "route", "show", "default").split()[:3] == ["default", "via", "10.77.0.254"]
        assert route.RouteEntry(IPv4Network("10.77.0.0/24"), None, index) in route.ipv4_routes(ipr)
        assert all(r.dst.prefixlen > 0 for r in route.ipv4_routes(ipr))  # the default route is not listed
        assert route.route_source(ipr, IPv4Address("192.0.2.9")) == (IPv4Address("10.77.0.254"), index)


def test_address_and_route_lists_read_by_hand_agree_with_ip(host_ns: str) -> None:
    """The lists come from dumps read with struct (pyroute2 decodes too slowly at hundreds of networks):
    every IPv4 address of every link, one link's alone, and only the main table's routes, whatever
    other tables (the local one, a numbered one past 255, which the header cannot name) hold."""
    with netns.iproute(host_ns) as ipr:
        first = link.ensure_veth_pair(ipr, "dm-l", "dmp-l")
        second = link.index_of(ipr, "dmp-l")
        assert second is not None
        for index, text in ((first, "10.81.0.1/24"), (first, "10.81.1.1/16"), (second, "10.82.0.7/32")):
            address.ensure_address(ipr, index, IPv4Interface(text))
        ip(host_ns, "route", "add", "10.83.0.0/24", "dev", "dm-l", "table", "1000")
        ip(host_ns, "route", "add", "10.84.0.0/24", "via", "10.81.0.9", "dev", "dm-l")
        shown = {(int(line.split()[0].rstrip(":")), IPv4Interface(line.split()[3]))
                 for line in ip(host_ns, "-o", "-4", "addr", "show").splitlines()}
        assert {(a.index, a.address) for a in address.ipv4_addresses(ipr)} == shown
        assert sorted(a.address for a in address.ipv4_addresses(ipr, second)) == [IPv4Interface("10.82.0.7/32")]
        main = {IPv4Network(line.split()[0]) for line in ip(host_ns, "-4", "route", "show", "table", "main").splitlines()
                if not line.startswith("default")}
        listed = route.ipv4_routes(ipr)
        assert {r.dst for r in listed} == main and IPv4Network("10.83.0.0/24") not in main
        assert route.RouteEntry(IPv4Network("10.84.0.0/24"), IPv4Address("10.81.0.9"), first) in listed


def test_veth_into_a_sandbox_echoes_the_peer_index_and_retires_in_its_own_namespace(make_netns) -> None:
    host, sandbox = make_netns(), make_netns()
    with netns.iproute(host) as ipr, netns.iproute(sandbox) as peer_ipr:
        bridge = link.ensure_bridge(ipr, "br-v", 1450)
        fd = os.open(netns.path_for(sandbox), os.O_RDONLY | os.O_CLOEXEC)
        try:
            index, peer = link.add_veth_into(ipr, "vetht", "eth0", fd, 1450, "02:42:0a:4d:00:02", bridge,
                                             hairpin=True)
        finally:
            os.close(fd)
        # The peer's index comes with the kernel's echo of the new link (kernels before 6.3 send none).
        assert index == link.index_of(ipr, "vetht") and peer in (None, link.index_of(peer_ipr, "eth0"))
        inside = link.link_by_index(peer_ipr, link.index_of(peer_ipr, "eth0"))
        assert (inside.name, inside.kind, inside.mtu, inside.mac) == ("eth0", "veth", 1450, "02:42:0a:4d:00:02")
        assert "master br-v" in ip(host, "-o", "link", "show", "vetht")
        assert "hairpin on" in ip(host, "-d", "link", "show", "vetht")
        # Retired: the names are free at once, in both namespaces; the reaper deletes in the host's.
        assert link.retire_veth(ipr, "vetht", netns.path_for(sandbox), "eth0")
        assert link.index_of(ipr, "vetht") is None and link.index_of(peer_ipr, "eth0") is None
        link.wait_for_reaper()
        assert [found.name for found in link.all_links(peer_ipr)] == ["lo"]
        assert not any(found.name.startswith(link.RETIRED_PREFIX) for found in link.all_links(ipr))
        assert not link.retire_veth(ipr, "vetht", netns.path_for(sandbox), "eth0")


def test_retired_link_frees_its_subnet_and_name_and_leftovers_are_reaped(host_ns: str) -> None:
    with netns.iproute(host_ns) as ipr:
        index = link.ensure_bridge(ipr, "br-x", 1500)
        address.ensure_address(ipr, index, IPv4Interface("10.79.0.1/24"))
        assert link.retire_link(ipr, "br-x")
        assert link.index_of(ipr, "br-x") is None and address.ipv4_addresses(ipr, index) == []
        assert not link.retire_link(ipr, "br-x")
        link.wait_for_reaper()
        assert index not in {found.index for found in link.all_links(ipr)}
        # What a crash leaves between the rename and the reaper's delete.
        link.ensure_veth_pair(ipr, link.RETIRED_PREFIX + "0badc0de", link.RETIRED_PREFIX + "0badc0df")
        link.reap_retired(ipr, link.all_links(ipr))
        assert not any(found.name.startswith(link.RETIRED_PREFIX) for found in link.all_links(ipr))


def test_links_retired_at_once_are_deleted_together_and_no_other_link(make_netns) -> None:
    """The reaper deletes every retired link of a namespace by its group: the veths of containers
    stopping together and their bridge all go (the peers with their veths), a link never retired stays,
    and so does one in a group of the user's."""
    host, sandboxes = make_netns(), [make_netns() for _ in range(4)]
    with netns.iproute(host) as ipr:
        bridge = link.ensure_bridge(ipr, "br-g", 1500)
        link.ensure_veth_pair(ipr, "keep0", "keep1")
        ip(host, "link", "set", "keep1", "group", "7")
        for i, sandbox in enumerate(sandboxes):
            fd = os.open(netns.path_for(sandbox), os.O_RDONLY | os.O_CLOEXEC)
            try:
                link.add_veth_into(ipr, f"vg{i}", "eth0", fd, 1500, f"02:42:0a:58:00:0{i}", bridge)
            finally:
                os.close(fd)
        for i, sandbox in enumerate(sandboxes):
            assert link.retire_veth(ipr, f"vg{i}", netns.path_for(sandbox), "eth0")
        assert link.retire_link(ipr, "br-g")
        link.wait_for_reaper()
        assert sorted(found.name for found in link.all_links(ipr)) == ["keep0", "keep1", "lo"]
        for sandbox in sandboxes:
            with netns.iproute(sandbox) as inside:
                assert [found.name for found in link.all_links(inside)] == ["lo"]


def test_endpoint_link_is_configured_in_one_batch_and_again_without_error(make_netns) -> None:
    """An endpoint's end inside its sandbox, as the drivers configure it: addresses (a LinkLocalIP too),
    up, the default route via the gateway (proto boot, as Docker's); a second run changes nothing and
    fails nothing, and a second network's gateway does not take the default route."""
    sandbox = make_netns()
    path = netns.path_for(sandbox)
    with netns.iproute(sandbox) as ipr:
        link.ensure_veth_pair(ipr, "eth0", "eth1")
        ep = Endpoint(id="e" * 64, network_id="n" * 64, container_id="c" * 64, container_name="web",
                      address=IPv4Interface("10.85.0.2/24"), mac="02:42:0a:55:00:02", ifname="eth0",
                      gateway=IPv4Address("10.85.0.1"), link_local=[IPv4Interface("169.254.7.7/16")])
        for _ in range(2):
            configure_endpoint_link(path, ep)
        second = Endpoint(id="f" * 64, network_id="m" * 64, container_id="c" * 64, container_name="web",
                          address=IPv4Interface("10.86.0.2/31"), mac="02:42:0a:56:00:02", ifname="eth1",
                          gateway=IPv4Address("10.86.0.3"))
        configure_endpoint_link(path, second, link.index_of(ipr, "eth1"))
    shown = ip(sandbox, "-o", "-4", "addr", "show")
    assert "10.85.0.2/24 brd 10.85.0.255" in shown and "169.254.7.7/16 brd 169.254.255.255" in shown
    assert "10.86.0.2/31 scope" in shown  # no broadcast on a /31
    assert ip(sandbox, "-d", "route", "show", "default").split()[:7] == [
        "unicast", "default", "via", "10.85.0.1", "dev", "eth0", "proto"]
    assert "proto boot" in ip(sandbox, "-d", "route", "show", "default")
    assert ",UP" in ip(sandbox, "-o", "link", "show", "eth0") and ",UP" in ip(sandbox, "-o", "link", "show", "eth1")
    with pytest.raises(FileNotFoundError):
        configure_endpoint_link(path, Endpoint(id="g" * 64, network_id="n" * 64, container_id="c" * 64,
                                               container_name="web", address=IPv4Interface("10.87.0.2/24"),
                                               mac="02:42:0a:57:00:02", ifname="eth9"))


def test_macvlan_is_born_in_the_sandbox(make_netns) -> None:
    host, sandbox = make_netns(), make_netns()
    with netns.iproute(host) as ipr, netns.iproute(sandbox) as peer_ipr:
        parent = link.ensure_veth_pair(ipr, "dm-m", "dmp-m")
        fd = os.open(netns.path_for(sandbox), os.O_RDONLY | os.O_CLOEXEC)
        try:
            link.add_macvlan_into(ipr, "eth0", parent, fd, "bridge", "02:42:0a:50:00:02")
        finally:
            os.close(fd)
        inside = link.find_link(peer_ipr, "eth0")
        assert inside is not None and (inside.kind, inside.mac) == ("macvlan", "02:42:0a:50:00:02")
        assert "macvlan mode bridge" in ip(sandbox, "-d", "link", "show", "eth0")
        assert link.delete_link(peer_ipr, "eth0") and not link.delete_link(peer_ipr, "eth0")


def test_sysctl_is_written_in_the_calling_threads_namespace(host_ns: str) -> None:
    with netns.entered(host_ns):
        netns.set_sysctl("net/ipv4/ip_forward", "1")
    out = subprocess.run(["nsenter", f"--net={netns.path_for(host_ns)}", "cat", "/proc/sys/net/ipv4/ip_forward"],
                         capture_output=True, text=True, check=True, timeout=20).stdout
    assert out.strip() == "1"
