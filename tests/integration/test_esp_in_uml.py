"""The ESP data path of encrypted overlays on a kernel that has ESP. This machine's kernel has XFRM but no
ESP nor AES-GCM (and no modules), so Debian's User-Mode Linux kernel, which has them, is booted as a
process: its root is this machine's own files read-only (hostfs), it has no network device to the
outside, and it runs in a scratch namespace. In it uml_guest/esp_check.py plays two engines' underlays
and syncs muslin's OverlayEncryption (kernel/xfrm.py's netlink, the iptables marks) on both; this test
judges what it reports. The engine around it (keys in etcd, peers) is tests/overlay/test_encrypted.py's."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from muslin.kernel import netns

from ..tools import require

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
GUEST = Path(__file__).resolve().parent / "uml_guest"
BOOT_LIMIT = 240  # seconds, for a loaded machine; the guest's own run takes a few


def boot_guest(host_ns: str) -> str:
    with tempfile.TemporaryDirectory(prefix="muslin-uml-") as uml_dir:
        proc = subprocess.run(
            ["nsenter", f"--net={netns.path_for(host_ns)}", require("linux.uml"), "mem=384M", f"uml_dir={uml_dir}",
             "rootfstype=hostfs", "rootflags=/", "ro", f"init={GUEST / 'init.sh'}", "con0=fd:0,fd:1", "con=null",
             f"MUSLIN_PYTHON={sys.executable}", f"MUSLIN_REPO={REPO}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BOOT_LIMIT)
    return proc.stdout + proc.stderr


def test_encrypted_vxlan_is_esp_on_the_wire_and_plain_vxlan_beside_it_is_not(host_ns: str) -> None:
    console = boot_guest(host_ns)
    found = [line for line in console.splitlines() if line.startswith("UML-RESULT ")]
    assert found, console[-4000:]
    result = json.loads(found[0].removeprefix("UML-RESULT "))
    assert result["probe"] == []  # this kernel has what the probe asks for
    # per side: an SA each way and the outbound policy; one mark, an ACCEPT-if-IPsec and a DROP for VNI 5001
    side = {"states": 2, "policies": 1, "chain": True, "marks": 1, "drops": 1}
    assert result["programmed"] == [side, side]
    assert result["pings"] == [True, True, True]  # encrypted, plain, and 1396 bytes within the 1424 MTU
    wire = result["wire"]
    assert wire.get("50/None", 0) > 0 and "17/5001" not in wire and wire.get("17/5002", 0) > 0, wire
    # without its policy a sends VNI 5001 in plain, and b refuses it
    assert result["without_policy"]["plain_on_wire"] > 0 and result["without_policy"]["ping"] is False
    assert result["repaired"] is True  # a fresh sync (a restart) puts the policy back
    nothing = {"states": 0, "policies": 0, "chain": False, "marks": 0, "drops": 0}
    assert result["left"] == [nothing, nothing]
