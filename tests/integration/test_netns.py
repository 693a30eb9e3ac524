import os

import pytest

from muslin.kernel import iptables, netns

pytestmark = pytest.mark.root


def test_create_enter_and_remove_namespace(make_netns) -> None:
    name = make_netns()
    assert netns.exists(name)
    outer = netns.current_inode()
    with netns.entered(name):
        assert netns.current_inode() != outer
    assert netns.current_inode() == outer
    with netns.iproute(name) as ipr:
        (lo,) = ipr.link_lookup(ifname="lo")
        assert ipr.get_links(lo)[0].get_attr("IFLA_OPERSTATE") in ("UNKNOWN", "UP")
    netns.remove(name)
    assert not netns.exists(name)
    assert not os.path.exists(netns.path_for(name))


def test_iptables_batch_applies_inside_namespace_only(host_ns) -> None:
    b = iptables.Batch()
    b.add("nat", ":MUSLIN-T - [0:0]")
    b.add("nat", "-A MUSLIN-T -s 10.9.0.0/24 -j MASQUERADE")
    with netns.entered(host_ns):
        b.apply()
        inside = iptables.read("nat")
    assert "MUSLIN-T" in inside.chains
    assert inside.has("-A MUSLIN-T -s 10.9.0.0/24 -j MASQUERADE")
