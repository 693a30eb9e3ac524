"""Lease JSON, subnet choice and the acquire logic, against an in-memory store (pure logic only)."""

from __future__ import annotations

import asyncio
import json
import random
from ipaddress import IPv4Address, IPv4Network

import pytest

from muslin.fabric.config import parse_config
from muslin.fabric.subnets import (LeaseAttrs, NetworkExhausted, SubnetManager, choose_subnet, subnet_from_key,
                                   subnet_key)
from tests.fabric.memstore import MemoryStore

PREFIX = "/atomic.io/network"
CONFIG = parse_config('{"Network":"10.5.0.0/16"}')


def run(coro):
    return asyncio.run(coro)


def attrs(ip: str, **kw) -> LeaseAttrs:
    return LeaseAttrs(IPv4Address(ip), **kw)


def test_lease_json_matches_flannels_per_backend() -> None:
    vx = attrs("192.0.2.1", backend_type="vxlan", backend_data={"VNI": 1, "VtepMAC": "f2:7f:1f:ab:c0:1a"})
    assert json.loads(vx.to_json()) == {"PublicIP": "192.0.2.1", "PublicIPv6": None, "BackendType": "vxlan",
                                        "BackendData": {"VNI": 1, "VtepMAC": "f2:7f:1f:ab:c0:1a"}}
    assert attrs("192.0.2.1").to_json() == '{"PublicIP":"192.0.2.1","PublicIPv6":null}'
    assert json.loads(attrs("192.0.2.1", backend_type="host-gw").to_json()) == {
        "PublicIP": "192.0.2.1", "PublicIPv6": None, "BackendType": "host-gw"}
    assert LeaseAttrs.from_json(vx.to_json()) == vx
    assert LeaseAttrs.from_json('{"publicip":"192.0.2.9"}').public_ip == IPv4Address("192.0.2.9")


@pytest.mark.parametrize("raw", ["", "[]", '{"PublicIP":"x"}', "{}"])
def test_bad_lease_values_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        LeaseAttrs.from_json(raw)


def test_keys_round_trip() -> None:
    subnet = IPv4Network("10.5.55.0/24")
    assert subnet_key(PREFIX + "/", subnet) == "/atomic.io/network/subnets/10.5.55.0-24"
    assert subnet_from_key(subnet_key(PREFIX, subnet)) == subnet
    assert subnet_from_key("/atomic.io/network/subnets/garbage") is None


def test_choose_subnet_skips_taken_and_picks_among_first_hundred() -> None:
    taken = {IPv4Network("10.5.1.0/24"), IPv4Network("10.5.2.0/24")}
    seen = {choose_subnet(CONFIG, taken, random.Random(seed)) for seed in range(200)}
    assert not seen & taken
    assert all(IPv4Network("10.5.3.0/24").network_address <= s.network_address <= IPv4Address("10.5.102.0")
               for s in seen)
    assert len(seen) > 50


def test_exhausted_network_raises_with_a_clear_message() -> None:
    config = parse_config('{"Network":"10.5.0.0/16","SubnetMin":"10.5.7.0","SubnetMax":"10.5.8.0"}')
    with pytest.raises(NetworkExhausted, match="exhausted.*no lease was taken"):
        choose_subnet(config, {IPv4Network("10.5.7.0/24"), IPv4Network("10.5.8.0/24")})


def test_acquire_reuses_the_lease_of_our_public_ip() -> None:
    store = MemoryStore()
    mgr = SubnetManager(store, PREFIX, lease_ttl=60)
    first = run(mgr.acquire(CONFIG, attrs("192.0.2.1", backend_type="host-gw")))
    again = run(mgr.acquire(CONFIG, attrs("192.0.2.1", backend_type="host-gw")))
    other = run(mgr.acquire(CONFIG, attrs("192.0.2.2", backend_type="host-gw")))
    assert again.subnet == first.subnet and other.subnet != first.subnet
    assert len(store.data) == 2


def test_acquire_takes_back_the_subnet_file_subnet_when_free() -> None:
    store = MemoryStore()
    mgr = SubnetManager(store, PREFIX)
    lease = run(mgr.acquire(CONFIG, attrs("192.0.2.1"), previous=IPv4Network("10.5.77.0/24")))
    assert lease.subnet == IPv4Network("10.5.77.0/24")
    taken = run(mgr.acquire(CONFIG, attrs("192.0.2.2"), previous=IPv4Network("10.5.77.0/24")))
    assert taken.subnet != lease.subnet


def test_acquire_retries_when_another_node_wins_the_race() -> None:
    store = MemoryStore()
    store.steal_next_create = attrs("192.0.2.9").to_json()
    mgr = SubnetManager(store, PREFIX)
    lease = run(mgr.acquire(CONFIG, attrs("192.0.2.1"), previous=IPv4Network("10.5.77.0/24")))
    assert lease.subnet != IPv4Network("10.5.77.0/24")
    assert len(store.data) == 2


def test_acquire_drops_our_lease_that_no_longer_fits_the_config() -> None:
    store = MemoryStore()
    run(store.put(subnet_key(PREFIX, IPv4Network("10.9.3.0/24")), attrs("192.0.2.1").to_json().encode(), 60))
    lease = run(SubnetManager(store, PREFIX).acquire(CONFIG, attrs("192.0.2.1")))
    assert lease.subnet.subnet_of(CONFIG.network)
    assert list(store.data) == [subnet_key(PREFIX, lease.subnet)]


def test_reservation_is_used_by_its_owner_and_kept_without_ttl() -> None:
    store = MemoryStore()
    key = subnet_key(PREFIX, IPv4Network("10.5.200.0/24"))
    run(store.put(key, attrs("192.0.2.1").to_json().encode(), None))
    mgr = SubnetManager(store, PREFIX)
    lease = run(mgr.acquire(CONFIG, attrs("192.0.2.1", backend_type="host-gw")))
    assert lease.subnet == IPv4Network("10.5.200.0/24") and not lease.expires
    run(mgr.renew(lease))
    assert store.data[key][2] is False  # still no TTL
    other = run(mgr.acquire(CONFIG, attrs("192.0.2.2")))
    assert other.subnet != lease.subnet


def test_choose_subnet_skips_candidates_a_lease_of_another_length_overlaps() -> None:
    # A /20 left by an earlier config with SubnetLen 20 covers 10.5.0.0-10.5.15.255.
    taken = {IPv4Network("10.5.0.0/20")}
    seen = {choose_subnet(CONFIG, taken, random.Random(seed)) for seed in range(50)}
    assert all(s.network_address >= IPv4Address("10.5.16.0") and s.prefixlen == 24 for s in seen)


def test_renew_rewrites_only_a_lease_that_still_names_us() -> None:
    store = MemoryStore()
    mgr = SubnetManager(store, PREFIX, lease_ttl=60)
    lease = run(mgr.acquire(CONFIG, attrs("192.0.2.1")))
    key = subnet_key(PREFIX, lease.subnet)
    revision = store.data[key][1]
    renewed = run(mgr.renew(lease, attrs("192.0.2.1", backend_type="host-gw")))
    assert renewed is not None and renewed.attrs.backend_type == "host-gw"
    assert store.data[key][1] > revision
    # Another node claimed the key: renewing leaves its claim alone.
    run(store.put(key, attrs("192.0.2.9").to_json().encode(), 60))
    assert run(mgr.renew(lease)) is None
    assert json.loads(store.data[key][0])["PublicIP"] == "192.0.2.9"
    # Gone: nothing is written back.
    run(store.delete(key))
    assert run(mgr.renew(lease)) is None and key not in store.data


def test_renew_loses_to_a_claim_between_its_read_and_its_write() -> None:
    store = MemoryStore()
    mgr = SubnetManager(store, PREFIX, lease_ttl=60)
    lease = run(mgr.acquire(CONFIG, attrs("192.0.2.1")))
    store.steal_next_put = attrs("192.0.2.9").to_json()
    assert run(mgr.renew(lease)) is None
    assert json.loads(store.data[subnet_key(PREFIX, lease.subnet)][0])["PublicIP"] == "192.0.2.9"


def test_acquire_lists_again_when_our_lease_changes_while_it_is_reused() -> None:
    store = MemoryStore()
    mgr = SubnetManager(store, PREFIX, lease_ttl=60)
    first = run(mgr.acquire(CONFIG, attrs("192.0.2.1")))
    store.steal_next_put = attrs("192.0.2.9").to_json()  # the reuse's conditional write loses
    again = run(mgr.acquire(CONFIG, attrs("192.0.2.1")))
    assert again.subnet != first.subnet
    assert json.loads(store.data[subnet_key(PREFIX, first.subnet)][0])["PublicIP"] == "192.0.2.9"
