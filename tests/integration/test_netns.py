import os
import subprocess

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


def test_pins_stay_removable_after_ip_netns_prepares_the_directory(tmp_path) -> None:
    """What `ip netns add` does to the pin directory: make it shared, and where that fails (not a mount
    point) bind it over itself first, which hides every pin made before. Ours makes it a mount point
    before the first pin, so ip only shares it and the pin stays removable."""
    pins = tmp_path / "pins"
    path = netns.create(str(pins / "one"))
    try:
        if subprocess.run(["mount", "--make-shared", str(pins)], capture_output=True).returncode != 0:
            subprocess.run(["mount", "--bind", str(pins), str(pins)], check=True)
            subprocess.run(["mount", "--make-shared", str(pins)], check=True)
        netns.remove(path)
        assert not os.path.exists(path)
    finally:
        while subprocess.run(["umount", "-l", str(pins)], capture_output=True).returncode == 0:
            pass
        if os.path.exists(path):
            subprocess.run(["umount", "-l", path], capture_output=True)
            os.unlink(path)


def test_the_pin_directory_is_made_a_mount_once_and_recognised_after(tmp_path) -> None:
    """Whether the directory is a mount yet is asked at every pin: answered without the mount table (a
    line per pin), and a second ensure adds no second mount over the first."""
    pins = tmp_path / "pins"
    try:
        assert not netns._is_mount_root(str(tmp_path))
        netns.ensure_pin_directory(str(pins))
        assert netns._is_mount_root(str(pins))
        netns.ensure_pin_directory(str(pins))
        with open("/proc/self/mountinfo") as f:
            assert sum(1 for line in f if line.split()[4] == str(pins)) == 1
    finally:
        while subprocess.run(["umount", "-l", str(pins)], capture_output=True).returncode == 0:
            pass
