"""The FORWARD jumps stay first and in order, whatever was there before (against the real kernel)."""

import pytest

from muslin.engine.firewall import IptablesFirewall
from muslin.kernel import iptables, netns

pytestmark = pytest.mark.root


def test_forward_jumps_are_pinned_first_in_order(host_ns) -> None:
    with netns.entered(host_ns):
        # What an older layout, a user and a half-done restore can leave: our user jump alone, below a
        # user's rule, and nothing else of ours.
        iptables.restore("*filter\n:MUSLIN-USER - [0:0]\n-A FORWARD -s 10.9.9.9/32 -j DROP\n"
                         "-A FORWARD -j MUSLIN-USER\nCOMMIT\n")
        firewall = IptablesFirewall()
        try:
            assert firewall.ensure([], []) > 0
            forward = iptables.read("filter").rules_in("FORWARD")
            assert forward == ["-A FORWARD -j MUSLIN-USER", "-A FORWARD -j MUSLIN-FORWARD",
                               "-A FORWARD -s 10.9.9.9/32 -j DROP"]
            own = iptables.read("filter").rules_in("MUSLIN-FORWARD")
            assert own == ["-A MUSLIN-FORWARD -j MUSLIN-ISOLATION-STAGE-1"]
            assert firewall.ensure([], []) == 0  # in place: nothing to do
            assert iptables.read("filter").rules_in("FORWARD") == forward
        finally:
            firewall.close()
