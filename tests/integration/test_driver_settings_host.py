"""Settings that depend on the host's links (a macvlan's parent) and the links each driver calls its
own, read from a real namespace."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from muslin.engine.config import DaemonConfig
from muslin.engine.drivers.base import HostNetlink
from muslin.engine.drivers.bridge import BridgeDriver
from muslin.engine.drivers.bridge_options import bridge_settings
from muslin.engine.drivers.macvlan import MacvlanDriver
from muslin.errors import Conflict, InvalidArgument
from muslin.engine.model import IPAMPool, Network
from muslin.engine.settings import MacvlanMode, MacvlanSettings, ParentOrigin, Vlan
from muslin.kernel import link, netns

pytestmark = pytest.mark.root


@pytest.fixture
def host(make_netns) -> Iterator[tuple[str, HostNetlink]]:
    """A namespace with an interface eth0, and the drivers' netlink handle opened inside it."""
    ns = make_netns("ds-")
    subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"], check=True)
    handle = HostNetlink()
    with netns.entered(ns):
        handle.get()
    yield ns, handle
    handle.close()


def _net(driver: str, id_: str, options: dict[str, str] | None = None) -> Network:
    return Network(id=id_ * 64, name=f"n{id_}", driver=driver, created="2026-12-01T14:00:00.000000000Z",
                   pools=[IPAMPool(IPv4Network("10.9.0.0/24"), IPv4Address("10.9.0.1"))], options=options or {})


def test_a_macvlan_parent_is_the_users_or_a_vlan_to_create(host) -> None:
    _, handle = host
    driver = MacvlanDriver(handle)
    on_eth0 = _net("macvlan", "a", {"parent": "eth0", "macvlan_mode": "vepa"})
    driver.prepare(on_eth0, [])
    assert on_eth0.settings == MacvlanSettings(parent="eth0", mode=MacvlanMode.VEPA, origin=ParentOrigin.USER)
    on_vlan = _net("macvlan", "b", {"parent": "eth0.7"})
    driver.prepare(on_vlan, [on_eth0])
    assert on_vlan.settings == MacvlanSettings(parent="eth0.7", mode=MacvlanMode.BRIDGE, origin=ParentOrigin.VLAN,
                                               vlan=Vlan(base="eth0", vid=7))
    with pytest.raises(Conflict, match="already using parent interface eth0"):
        driver.prepare(_net("macvlan", "c", {"parent": "eth0"}), [on_eth0, on_vlan])
    for parent, message in (("lo", "loopback interface is not a valid"), ("eth9.5", "not found on the host: eth9"),
                            ("eth0.4095", "vlan id out of range"), ("wlan0", "invalid subinterface vlan name")):
        with pytest.raises(InvalidArgument, match=message):
            driver.prepare(_net("macvlan", "d", {"parent": parent}), [])


def test_each_driver_finds_links_named_as_its_own_that_no_network_explains(host) -> None:
    ns, handle = host
    for args in (["br-0123456789ab", "type", "bridge"], ["br-aaaaaaaaaaaa", "type", "bridge"],
                 ["mybridge", "type", "bridge"], ["dm-aaaaaaaaaaaa", "type", "veth", "peer", "name", "dmp-aaaaaaaaaaa"],
                 ["dm-0123456789ab", "type", "veth", "peer", "name", "dmp-0123456789a"]):
        subprocess.run(["ip", "-n", ns, "link", "add", *args], check=True)
    config = DaemonConfig(data_root=Path("/nonexistent/data"), exec_root=Path("/nonexistent/run"))
    bridge, macvlan = BridgeDriver(config, None, handle), MacvlanDriver(handle)
    stored_bridge, stored_macvlan = _net("bridge", "a"), _net("macvlan", "a")
    stored_bridge.settings = bridge_settings(stored_bridge, config)  # prepare refuses: its bridge exists
    macvlan.prepare(stored_macvlan, [])
    links = link.all_links(handle.get())
    assert bridge.orphans([stored_bridge], links) == ["br-0123456789ab"]  # mybridge has a name the user chose
    assert sorted(macvlan.orphans([stored_macvlan], links)) == ["dm-0123456789ab", "dmp-0123456789a"]
