"""The engine's IPsec state (engine/overlay_encryption.py) in a scratch namespace: the marks per VNI as
iptables holds them, and a sync towards peers that either programs SAs and policies exactly (a kernel
with ESP) or is refused leaving nothing behind (a kernel without, as this machine's)."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address

import pytest

from muslin.engine.overlay_encryption import CHAIN, REQID, ClusterKey, OverlayEncryption
from muslin.errors import EngineError
from muslin.kernel import netns, xfrm

pytestmark = pytest.mark.root

LOCAL = IPv4Address("192.168.255.154")
PEER1, PEER2 = IPv4Address("192.168.255.155"), IPv4Address("192.168.255.156")


def run(ns: str, *cmd: str) -> str:
    return subprocess.run(["nsenter", f"--net={netns.path_for(ns)}", *cmd], capture_output=True, text=True,
                          check=True, timeout=20).stdout


def xfrm_of(ns: str) -> tuple[str, str]:
    return run(ns, "ip", "xfrm", "state").strip(), run(ns, "ip", "xfrm", "policy").strip()


def test_marks_follow_the_vnis_and_go_completely(host_ns: str) -> None:
    with netns.entered(netns.path_for(host_ns)):
        OverlayEncryption().write_marks({4096, 4100})
        saved = run(host_ns, "iptables-save")
        assert "-A OUTPUT -j MUSLIN-OVERLAY-ESP" in saved and "-A INPUT -j MUSLIN-OVERLAY-ESP" in saved
        assert saved.count("-j MARK --set-xmark 0x4d534c/0xffffffff") == 2
        assert saved.count("-m policy --dir in --pol ipsec -j ACCEPT") == 2 and saved.count("-j DROP") == 2
        again = OverlayEncryption()  # a restart: reads which VNIs are marked, writes only the difference
        again.write_marks({4100})
        saved = run(host_ns, "iptables-save")
        assert saved.count("--set-xmark") == 1 and "=0x100400" in saved  # 4100 << 8
        again.write_marks(set())
        assert CHAIN not in run(host_ns, "iptables-save")


def test_sync_programs_peers_exactly_or_refuses_leaving_nothing(host_ns: str) -> None:
    key = ClusterKey.generate()
    with netns.entered(netns.path_for(host_ns)):
        missing = xfrm.probe_esp(REQID)
        encryption = OverlayEncryption()
        if missing:
            with pytest.raises(EngineError) as refused:
                encryption.sync(LOCAL, {PEER1, PEER2}, {4096}, key)
            assert missing[0] in refused.value.message
            assert xfrm_of(host_ns) == ("", "") and CHAIN not in run(host_ns, "iptables-save")
            return
        encryption.sync(LOCAL, {PEER1, PEER2}, {4096}, key)
        states, policies = xfrm_of(host_ns)
        assert states.count("proto esp") == 4 and states.count("rfc4106(gcm(aes))") == 4
        assert policies.count("dir out") == 2 and "mark 0x4d534c/0xffffffff" in policies
        encryption.sync(LOCAL, {PEER2}, {4096}, key)
        states, policies = xfrm_of(host_ns)
        assert states.count("proto esp") == 2 and str(PEER1) not in states + policies
        OverlayEncryption().sync(LOCAL, set(), set(), key)  # a fresh one (a restart) removes what it finds
        assert xfrm_of(host_ns) == ("", "") and CHAIN not in run(host_ns, "iptables-save")
