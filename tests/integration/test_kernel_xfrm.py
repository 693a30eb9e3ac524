"""muslin.kernel.xfrm against the running kernel, in a scratch namespace: policies written by hand-made
netlink read back by iproute2 and by the dump, removed without trace; states where the kernel has ESP, and
where it lacks it the probe says what is missing as iproute2 sees it."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address

import pytest

from muslin.kernel import netns, xfrm

pytestmark = pytest.mark.root

REQID = 0x4D534C
LOCAL, REMOTE = IPv4Address("10.1.1.1"), IPv4Address("10.1.1.2")


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={netns.path_for(ns)}", "ip", *args], capture_output=True, text=True,
                          check=check, timeout=20)


def test_policy_round_trip_as_iproute2_shows_it(host_ns: str) -> None:
    policy = xfrm.UdpPolicy(LOCAL, REMOTE, 4789, xfrm.XFRM_POLICY_OUT, xfrm.Mark(REQID), 0x1234ABCD, REQID)
    inbound = xfrm.UdpPolicy(REMOTE, LOCAL, 4789, xfrm.XFRM_POLICY_IN, xfrm.Mark(REQID), 0x5678, REQID)
    with xfrm.XfrmSocket(host_ns) as sock:
        sock.add_policies([policy, inbound])
        shown = ip(host_ns, "xfrm", "policy").stdout
        assert "src 10.1.1.1/32 dst 10.1.1.2/32 proto udp dport 4789" in shown
        assert "dir out" in shown and "dir in" in shown and "mark 0x4d534c/0xffffffff" in shown
        assert "proto esp spi 0x1234abcd reqid 5067596 mode transport" in shown
        assert sorted(sock.policies()) == sorted([policy, inbound])
        sock.remove_policies([policy, inbound])
        assert sock.policies() == [] and ip(host_ns, "xfrm", "policy").stdout.strip() == ""
        sock.remove_policies([policy])  # gone already: no failure
        sock.remove_states([xfrm.StateId(LOCAL, REMOTE, 0x1234ABCD)])


def test_probe_agrees_with_iproute2_and_states_follow_it(host_ns: str) -> None:
    by_hand = ip(host_ns, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi",
                 "0x100", "reqid", "1", "mode", "transport", "aead", "rfc4106(gcm(aes))", "0x" + "01" * 20, "64",
                 check=False)
    ip(host_ns, "xfrm", "state", "flush")
    with netns.entered(host_ns):
        missing = xfrm.probe_esp(REQID)
    assert (missing == []) == (by_hand.returncode == 0), (missing, by_hand.stderr)
    assert ip(host_ns, "xfrm", "state").stdout.strip() == ""  # the probe leaves nothing
    state = xfrm.EspState(xfrm.StateId(LOCAL, REMOTE, 0x1234ABCD), REQID, bytes(range(20)))
    with xfrm.XfrmSocket(host_ns) as sock:
        if missing:
            assert "AEAD algorithm not found" in by_hand.stderr or "type not found" in by_hand.stderr
            with pytest.raises(xfrm.XfrmUnsupported) as refused:
                sock.add_states([state])
            assert xfrm.unsupported_reason(refused.value.errno) == missing[0]
            assert sock.states() == []
            return
        sock.add_states([state])
        assert sock.states() == [xfrm.DumpedState(state.id, xfrm.IPPROTO_ESP, REQID, None)]
        assert "proto esp spi 0x1234abcd reqid 5067596 mode transport" in ip(host_ns, "xfrm", "state").stdout
        sock.remove_states([state.id])
        assert sock.states() == []
