"""What the engine programs for encrypted overlays, as pure logic: SPIs both engines agree on, the SAs and
policies towards a set of peers, the per-VNI rules, the MTU, the key's record."""

from ipaddress import IPv4Address

import pytest

from muslin.engine import overlay_encryption as enc
from muslin.engine.global_networks import GlobalNetworks
from muslin.kernel import xfrm

A, B, C = IPv4Address("192.168.255.154"), IPv4Address("192.168.255.155"), IPv4Address("192.168.255.156")
KEY = enc.ClusterKey(bytes(range(16)), 0xC0FFEE)


def test_each_engine_computes_the_others_spis() -> None:
    assert enc.spi(A, B, KEY.tag) == enc.spi(A, B, KEY.tag) != enc.spi(B, A, KEY.tag)
    assert enc.spi(A, B, KEY.tag) != enc.spi(A, B, KEY.tag + 1)
    assert all(enc.spi(A, IPv4Address(f"10.0.{i // 256}.{i % 256}"), 1) > 255 for i in range(2000))
    states_a, policies_a = enc.wanted_xfrm(A, {B}, KEY)
    states_b, _ = enc.wanted_xfrm(B, {A}, KEY)
    assert {(s.id, s.key) for s in states_a} == {(s.id, s.key) for s in states_b}  # same SAs, same keys
    assert policies_a == [xfrm.UdpPolicy(A, B, 4789, xfrm.XFRM_POLICY_OUT, enc.MARK, enc.spi(A, B, KEY.tag), enc.REQID)]


def test_two_sas_and_one_policy_per_peer_with_the_spi_as_salt() -> None:
    states, policies = enc.wanted_xfrm(A, {B, C}, KEY)
    assert len(states) == 4 and len(policies) == 2
    for state in states:
        assert state.reqid == enc.REQID and state.key == KEY.key + state.id.spi.to_bytes(4, "big")
    assert enc.wanted_xfrm(A, set(), KEY) == ([], [])


def test_rules_match_the_vni_in_the_vxlan_header() -> None:
    rules = enc.rules({4096})
    assert rules["mangle"] == ["-A MUSLIN-OVERLAY-ESP -p udp --dport 4789 -m u32 --u32 "
                               "0>>22&0x3C@12&0xFFFFFF00=1048576 -j MARK --set-xmark 0x4d534c/0xffffffff"]
    assert [r.rsplit(" -j ", 1)[1] for r in rules["filter"]] == ["ACCEPT", "DROP"]
    assert enc.rules(set()) == {"mangle": [], "filter": []}


def test_mtu_leaves_room_for_esp_as_libnetwork() -> None:
    assert enc.encrypted_mtu(1450) == 1424
    assert enc.encrypted_mtu(1400) % 4 == 0 and enc.encrypted_mtu(1400) <= 1374


def test_the_key_record_round_trips_and_a_bad_one_is_refused() -> None:
    key = enc.ClusterKey.generate()
    assert enc.ClusterKey.from_doc(key.to_doc()) == key and len(key.key) == 16
    with pytest.raises(ValueError):
        enc.ClusterKey.from_doc(b'{"key": "00ff", "tag": 1}')


@pytest.mark.parametrize("doc", [
    b'{"key": "000102030405060708090a0b0c0d0e0f", "tag": -1}',
    b'{"key": "000102030405060708090a0b0c0d0e0f", "tag": 4294967296}',
    b'{"key": "000102030405060708090a0b0c0d0e0f", "tag": "7"}',
    b'{"key": "000102030405060708090a0b0c0d0e0f", "tag": 1.5}',
    b'{"key": "000102030405060708090a0b0c0d0e0f", "tag": true}',
    b'{"key": "000102030405060708090a0b0c0d0e0f0f", "tag": 1}',
])
def test_a_key_record_whose_tag_or_key_is_out_of_range_is_refused(doc: bytes) -> None:
    with pytest.raises(ValueError):
        enc.ClusterKey.from_doc(doc)


def test_an_unreadable_key_record_is_no_key_not_an_error() -> None:
    """What the listing does with the record: a bad one means no key (joins refused), and the listing
    goes on; the highest tag still gives an SPI."""
    assert GlobalNetworks._key_from(b'{"key": "000102030405060708090a0b0c0d0e0f", "tag": -1}') is None
    assert GlobalNetworks._key_from(b'[1, 2]') is None
    top = GlobalNetworks._key_from(b'{"key": "000102030405060708090a0b0c0d0e0f", "tag": 4294967295}')
    assert top is not None and enc.spi(A, B, top.tag) > 255
