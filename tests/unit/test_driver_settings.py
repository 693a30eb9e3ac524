"""Driver settings: read from the user's options and the daemon's flags, stored, read back, and
converted from the dict of strings that data roots written before typed settings hold."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from muslin.engine.config import DaemonConfig
from muslin.engine.drivers.base import HostNetlink
from muslin.engine.drivers.bridge_options import bridge_settings
from muslin.engine.drivers.macvlan import MacvlanDriver
from muslin.errors import InvalidArgument
from muslin.engine.model import IPAMPool, Network
from muslin.engine.settings import BridgeSettings, MacvlanMode, MacvlanSettings, ParentOrigin, Vlan
from muslin.engine.store import Store

NET_ID = "0123456789ab" + "c" * 52


def _net(driver: str = "bridge", options: dict[str, str] | None = None, predefined: bool = False,
         settings: BridgeSettings | MacvlanSettings | None = None, name: str = "front",
         id_: str = NET_ID) -> Network:
    return Network(id=id_, name=name, driver=driver, created="2026-12-01T14:00:00.000000000Z",
                   pools=[IPAMPool(IPv4Network("10.9.0.0/24"), IPv4Address("10.9.0.1"))],
                   options=dict(options or {}), predefined=predefined, settings=settings)


def _flags(**flags: object) -> DaemonConfig:
    paths = {"data_root": Path("/nonexistent/data"), "exec_root": Path("/nonexistent/run")}
    return DaemonConfig(**paths, **flags)  # type: ignore[arg-type]


# -- bridge: options + daemon flags --------------------------------------------------------------
def test_a_user_bridge_takes_its_name_from_its_id_and_the_rest_from_the_flags() -> None:
    config = _flags(mtu=1450, ip_masq=False, icc=False, default_bind_ip="127.0.0.1")
    assert bridge_settings(_net(), config) == BridgeSettings(
        bridge_name="br-0123456789ab", mtu=1450, icc=True,  # --icc is for the default bridge only
        masquerade=False, host_binding=IPv4Address("127.0.0.1"))


def test_the_default_bridge_follows_bridge_name_and_icc_flags() -> None:
    config = _flags(bridge_name="docker7", icc=False)
    settings = bridge_settings(_net(predefined=True), config)
    assert settings == BridgeSettings(bridge_name="docker7", mtu=1500, icc=False, masquerade=True,
                                      host_binding=IPv4Address("0.0.0.0"))


def test_options_win_over_the_flags() -> None:
    options = {"com.docker.network.bridge.name": "docker1", "com.docker.network.driver.mtu": "9000",
               "com.docker.network.bridge.enable_icc": "false",
               "com.docker.network.bridge.enable_ip_masquerade": "0",
               "com.docker.network.bridge.host_binding_ipv4": "10.1.2.3"}
    assert bridge_settings(_net(options=options), _flags()) == BridgeSettings(
        bridge_name="docker1", mtu=9000, icc=False, masquerade=False, host_binding=IPv4Address("10.1.2.3"))


@pytest.mark.parametrize(("key", "value", "message"), [
    ("com.docker.network.driver.mtu", "big", "not a number"),
    ("com.docker.network.driver.mtu", "67", "between 68 and 65535"),
    ("com.docker.network.bridge.enable_icc", "maybe", "expected true or false"),
    ("com.docker.network.bridge.host_binding_ipv4", "::1", "not an IPv4 address"),
    ("com.docker.network.bridge.name", "a-name-too-long-for-linux", "1 to 15 characters"),
    ("com.docker.network.bridge.name", "br/0", "1 to 15 characters"),
    # a quote would end the name in the nft and iptables-restore scripts that carry it
    ("com.docker.network.bridge.name", 'br"0', "1 to 15 characters"),
    ("com.docker.network.bridge.default_bridge", "true", "reserved for the default bridge"),
    ("com.docker.network.bridge.inhibit_ipv4", "true", "unknown option"),
])
def test_bad_bridge_options_are_refused(key: str, value: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        bridge_settings(_net(options={key: value}), _flags())


def test_a_bridge_without_a_gateway_is_refused() -> None:
    net = _net()
    net.pools[0].gateway = None
    with pytest.raises(InvalidArgument, match="needs a subnet and a gateway"):
        bridge_settings(net, _flags())


# -- macvlan: what needs no look at the host's links ----------------------------------------------
def test_a_macvlan_without_parent_gets_a_dummy_of_its_own() -> None:
    host = HostNetlink()  # opened on first use only: no parent, no look at the host
    net = _net("macvlan", {"macvlan_mode": "private"})
    MacvlanDriver(host).prepare(net, [])
    assert net.settings == MacvlanSettings(parent="dm-0123456789ab", mode=MacvlanMode.PRIVATE,
                                           origin=ParentOrigin.DUMMY)
    net = _net("macvlan")
    MacvlanDriver(host).prepare(net, [])
    assert isinstance(net.settings, MacvlanSettings) and net.settings.mode is MacvlanMode.BRIDGE


@pytest.mark.parametrize(("options", "message"), [
    ({"macvlan_mode": "l2"}, "requested macvlan mode 'l2' is not valid"),
    ({"com.docker.network.driver.mtu": "1400"}, "unknown option"),
])
def test_bad_macvlan_options_are_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        MacvlanDriver(HostNetlink()).prepare(_net("macvlan", options), [])


# -- the store ------------------------------------------------------------------------------------
SETTINGS = [
    ("bridge", BridgeSettings(bridge_name="br-0123456789ab", mtu=1450, icc=False, masquerade=True,
                              host_binding=IPv4Address("127.0.0.1"))),
    ("macvlan", MacvlanSettings(parent="eth0", mode=MacvlanMode.VEPA, origin=ParentOrigin.USER)),
    ("macvlan", MacvlanSettings(parent="eth0.10", mode=MacvlanMode.BRIDGE, origin=ParentOrigin.VLAN,
                                vlan=Vlan(base="eth0", vid=10))),
    ("macvlan", MacvlanSettings(parent="dm-0123456789ab", mode=MacvlanMode.PASSTHRU, origin=ParentOrigin.DUMMY)),
    ("null", None),
]


@pytest.mark.parametrize(("driver", "settings"), SETTINGS)
def test_settings_round_trip_through_the_store(tmp_path, driver: str, settings) -> None:
    store = Store(tmp_path)
    try:
        net = _net(driver, settings=settings)
        with store.transaction() as db:
            store.put_network(db, net)
        (back,) = store.networks()
        assert back == net and type(back.settings) is type(settings)
        (doc,) = store._rows("SELECT doc FROM networks")
        assert "resolved" not in json.loads(doc[0])
    finally:
        store.close()


# Documents exactly as the store wrote them before settings were typed (main at aae20e5).
OLD_DOCS = {
    "bridge": '{"id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "name": "bridge", '
              '"driver": "bridge", "created": "2026-12-01T14:00:00.000000000Z", "pools": [{"subnet": '
              '"172.17.0.0/16", "gateway": "172.17.0.1", "ip_range": null, "aux_addresses": {}}], '
              '"ipam_driver": "default", "ipam_options": {}, "internal": false, "attachable": false, '
              '"ingress": false, "enable_ipv6": false, "options": {"com.docker.network.bridge.default_bridge": '
              '"true"}, "labels": {}, "resolved": {"bridge": "muslin0", "mtu": "1500", "icc": "true", '
              '"masquerade": "false", "host_binding_ipv4": "0.0.0.0"}, "predefined": true, '
              '"subnet_from_user": true}',
    "mv": '{"id": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "name": "mv", '
          '"driver": "macvlan", "created": "2026-12-01T14:00:00.000000000Z", "pools": [{"subnet": '
          '"192.168.60.0/24", "gateway": "192.168.60.254", "ip_range": null, "aux_addresses": {}}], '
          '"ipam_driver": "default", "ipam_options": {}, "internal": false, "attachable": false, '
          '"ingress": false, "enable_ipv6": false, "options": {"parent": "eth0.10"}, "labels": {}, '
          '"resolved": {"parent": "eth0.10", "mode": "bridge", "created_parent": "vlan"}, '
          '"predefined": false, "subnet_from_user": true}',
    "mv-eth1": '{"id": "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc", "name": "mv-eth1", '
               '"driver": "macvlan", "created": "2026-12-01T14:00:00.000000000Z", "pools": [{"subnet": '
               '"192.168.61.0/24", "gateway": "192.168.61.1", "ip_range": null, "aux_addresses": {}}], '
               '"ipam_driver": "default", "ipam_options": {}, "internal": false, "attachable": false, '
               '"ingress": false, "enable_ipv6": false, "options": {"parent": "eth1", "macvlan_mode": '
               '"private"}, "labels": {}, "resolved": {"parent": "eth1", "mode": "private", '
               '"created_parent": ""}, "predefined": false, "subnet_from_user": true}',
    "mv-own": '{"id": "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd", "name": "mv-own", '
              '"driver": "macvlan", "created": "2026-12-01T14:00:00.000000000Z", "pools": [{"subnet": '
              '"192.168.62.0/24", "gateway": "192.168.62.1", "ip_range": null, "aux_addresses": {}}], '
              '"ipam_driver": "default", "ipam_options": {}, "internal": false, "attachable": false, '
              '"ingress": false, "enable_ipv6": false, "options": {}, "labels": {}, "resolved": '
              '{"parent": "dm-dddddddddddd", "mode": "bridge", "created_parent": "dummy"}, '
              '"predefined": false, "subnet_from_user": false}',
    "host": '{"id": "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "host", '
            '"driver": "host", "created": "2026-12-01T14:00:00.000000000Z", "pools": [], "ipam_driver": '
            '"default", "ipam_options": {}, "internal": false, "attachable": false, "ingress": false, '
            '"enable_ipv6": false, "options": {}, "labels": {}, "resolved": {}, "predefined": true, '
            '"subnet_from_user": true}',
}


def test_a_data_root_with_settings_as_strings_still_loads(tmp_path) -> None:
    store = Store(tmp_path)
    try:
        with store.transaction() as db:
            for name, doc in OLD_DOCS.items():
                db.execute("INSERT INTO networks (id, name, doc) VALUES (?, ?, ?)", (json.loads(doc)["id"], name, doc))
        nets = {n.name: n for n in store.networks()}
        assert nets["bridge"].settings == BridgeSettings(bridge_name="muslin0", mtu=1500, icc=True, masquerade=False,
                                                         host_binding=IPv4Address("0.0.0.0"))
        assert nets["mv"].settings == MacvlanSettings(parent="eth0.10", mode=MacvlanMode.BRIDGE,
                                                      origin=ParentOrigin.VLAN, vlan=Vlan(base="eth0", vid=10))
        assert nets["mv-eth1"].settings == MacvlanSettings(parent="eth1", mode=MacvlanMode.PRIVATE,
                                                           origin=ParentOrigin.USER)
        assert nets["mv-own"].settings == MacvlanSettings(parent="dm-dddddddddddd", mode=MacvlanMode.BRIDGE,
                                                          origin=ParentOrigin.DUMMY)
        assert nets["host"].settings is None
        assert nets["bridge"].options == {"com.docker.network.bridge.default_bridge": "true"}  # inspect's view
        # Written back, a network takes the new shape and reads the same.
        with store.transaction() as db:
            for net in nets.values():
                store.put_network(db, net)
        assert {n.name: n for n in store.networks()} == nets
        assert all("resolved" not in json.loads(d) for (d,) in store._rows("SELECT doc FROM networks"))
    finally:
        store.close()
