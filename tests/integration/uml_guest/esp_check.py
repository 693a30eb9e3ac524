"""Runs inside the User-Mode Linux guest (see init.sh): the ESP data path of encrypted overlays on a kernel
that has ESP. Two namespaces joined by a veth play two engines' underlays; each has a VXLAN of VNI 5001
(encrypted) and one of 5002 (plain) towards the other, as an engine's overlays have; muslin's
OverlayEncryption is synced on both sides with one cluster key. Prints what it saw as one JSON line
("UML-RESULT {...}") for test_esp_in_uml.py to judge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import IPv4Address

sys.path.insert(0, os.environ["MUSLIN_REPO"])

from muslin.engine.overlay_encryption import CHAIN, REQID, ClusterKey, OverlayEncryption  # noqa: E402
from muslin.kernel import netns, xfrm  # noqa: E402
from tests.overlay.capture import Capture  # noqa: E402

ENCRYPTED, PLAIN = 5001, 5002
A, B = IPv4Address("192.168.99.1"), IPv4Address("192.168.99.2")


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


# two echoes 0.2 s apart (not busybox's 1 s): the same packets on the wire, a second less per ping
PING = ["busybox", "ping", "-c2", "-i", "0.2", "-W2"]


def ping(size: int = 56) -> bool:
    return subprocess.run(["ip", "netns", "exec", "a", *PING, "-s", str(size), "10.1.0.2"],
                          capture_output=True, check=False).returncode == 0


def ping_plain() -> bool:
    return subprocess.run(["ip", "netns", "exec", "a", *PING, "10.2.0.2"],
                          capture_output=True, check=False).returncode == 0


def ipsec(ns: str) -> dict[str, object]:
    with netns.entered(f"/run/netns/{ns}"), xfrm.XfrmSocket() as sock:
        states = [s for s in sock.states() if s.reqid == REQID]
        policies = [p for p in sock.policies() if p.reqid == REQID]
    saved = subprocess.run(["ip", "netns", "exec", ns, "iptables-save"], capture_output=True, text=True).stdout
    return {"states": len(states), "policies": len(policies), "chain": CHAIN in saved,
            "marks": saved.count("--set-xmark"), "drops": saved.count("-j DROP")}


def build() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for ns in ("a", "b"):
        subprocess.run(["ip", "netns", "add", ns], check=True)
        ip(ns, "link", "set", "lo", "up")
    subprocess.run(["ip", "link", "add", "va", "netns", "a", "type", "veth", "peer", "name", "vb", "netns", "b"],
                   check=True)
    for ns, me, other, last in (("a", A, B, "1"), ("b", B, A, "2")):
        ip(ns, "addr", "add", f"{me}/24", "dev", f"v{ns}")
        ip(ns, "link", "set", f"v{ns}", "up")
        for vni, inner, mtu in ((ENCRYPTED, "10.1.0", "1424"), (PLAIN, "10.2.0", "1450")):
            ip(ns, "link", "add", f"vx{vni}", "type", "vxlan", "id", str(vni), "local", str(me), "remote", str(other),
               "dstport", "4789", "dev", f"v{ns}")
            ip(ns, "link", "set", f"vx{vni}", "mtu", mtu, "up")
            ip(ns, "addr", "add", f"{inner}.{last}/24", "dev", f"vx{vni}")


def sync(ns: str, me: IPv4Address, remotes: set[IPv4Address], vnis: set[int], key: ClusterKey) -> None:
    with netns.entered(f"/run/netns/{ns}"):
        OverlayEncryption().sync(me, remotes, vnis, key)  # a fresh one each time: as after a restart


def main() -> None:
    build()
    result: dict[str, object] = {}
    with netns.entered("/run/netns/a"):
        result["probe"] = xfrm.probe_esp(REQID)
    key = ClusterKey.generate()
    sync("a", A, {B}, {ENCRYPTED}, key)
    sync("b", B, {A}, {ENCRYPTED}, key)
    result["programmed"] = [ipsec("a"), ipsec("b")]

    capture = Capture("b", "vb").start()
    result["pings"] = [ping(), ping_plain(), ping(1396)]
    result["wire"] = {f"{proto}/{vni}": n for (proto, vni), n in capture.stop().items()}

    # a without its policy sends the encrypted VNI in plain: b drops it
    with netns.entered("/run/netns/a"), xfrm.XfrmSocket() as sock:
        sock.remove_policies([p for p in sock.policies() if p.reqid == REQID])
    capture = Capture("b", "vb").start()
    result["without_policy"] = {"ping": ping(), "plain_on_wire": capture.stop()[(17, ENCRYPTED)]}
    sync("a", A, {B}, {ENCRYPTED}, key)
    result["repaired"] = ping()

    sync("a", A, set(), set(), key)
    sync("b", B, set(), set(), key)
    result["left"] = [ipsec("a"), ipsec("b")]
    print("UML-RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
