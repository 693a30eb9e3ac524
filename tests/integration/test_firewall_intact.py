"""The firewall knows when nobody but itself has committed since its rules were last complete, so the
guard's full check runs only after someone else's change (against the real kernel and iptables)."""

from ipaddress import IPv4Address, IPv4Network

import pytest

from muslin.engine.firewall import BridgeSpec, IptablesFirewall, PortSpec
from muslin.engine.nft_firewall import NftablesFirewall
from muslin.engine.overlay_encryption import OverlayEncryption
from muslin.kernel import iptables, netns

pytestmark = pytest.mark.root

NET = BridgeSpec(bridge="br-intact", subnet=IPv4Network("10.91.0.0/24"), masquerade=True, icc=True, internal=False)
PORT = PortSpec(bridge="br-intact", proto="tcp", host_ip="", host_port=8080,
                container_ip=IPv4Address("10.91.0.2"), container_port=80)


@pytest.mark.parametrize("backend", [IptablesFirewall, NftablesFirewall])
def test_own_commits_keep_the_rules_known_complete_a_foreign_one_does_not(host_ns, backend) -> None:
    with netns.entered(host_ns):
        firewall = backend()
        try:
            assert not firewall.intact()  # never checked yet
            firewall.ensure([], [])
            assert firewall.intact()
            firewall.setup_network(NET)
            firewall.add_port_forwards([PORT])
            firewall.remove_port_forwards([PORT])
            assert firewall.intact()  # only our own commits since
            iptables.restore("*filter\n-A FORWARD -s 10.9.9.9/32 -j DROP\nCOMMIT\n")  # someone else's
            assert not firewall.intact()
            firewall.add_port_forwards([PORT])  # ours, but after theirs: still unknown
            assert not firewall.intact()
            assert firewall.ensure([NET], [PORT]) == 0
            assert firewall.intact()
            firewall.teardown_network(NET)
            firewall.remove_port_forwards([PORT])
            assert firewall.intact()
        finally:
            firewall.close()


@pytest.mark.parametrize("backend", [IptablesFirewall, NftablesFirewall])
def test_the_overlay_encryptions_rules_committed_beside_keep_them_known_complete(host_ns, backend) -> None:
    with netns.entered(host_ns):
        firewall = backend()
        try:
            firewall.ensure([NET], [])
            beside = OverlayEncryption(firewall.commit_beside)
            beside.write_marks({4096, 4097})  # mangle and filter: two transactions with iptables-restore
            beside.write_marks({4097})
            assert firewall.intact()  # the guard has nothing to check
            OverlayEncryption().write_marks(set())  # committed past the firewall: unknown again
            assert not firewall.intact()
            assert firewall.ensure([NET], []) == 0
        finally:
            OverlayEncryption().write_marks(set())
            firewall.close()
