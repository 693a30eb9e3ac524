from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, strategies as st

from muslin.engine import ipam
from muslin.errors import Conflict, Forbidden, InvalidArgument
from muslin.engine.requests import IPAMPoolRequest


def test_pool_from_config_checks_gateway_range_and_aux() -> None:
    pool = ipam.pool_from_config(IPAMPoolRequest(subnet="10.10.0.0/24", gateway="10.10.0.1", ip_range="10.10.0.128/25",
                                                 aux_addresses={"router": "10.10.0.254"}))
    assert pool.ip_range == IPv4Network("10.10.0.128/25")
    assert ipam.next_free(pool, set()) == IPv4Address("10.10.0.129")  # as dockerd: not the range's first
    for bad, msg in [
        (IPAMPoolRequest(subnet="10.10.0.0/24", gateway="10.11.0.1"), "gateway"),
        (IPAMPoolRequest(subnet="10.10.0.0/24", ip_range="10.11.0.0/25"), "range"),
        (IPAMPoolRequest(subnet="10.10.0.0/24", aux_addresses={"a": "10.12.0.1"}), "aux"),
        (IPAMPoolRequest(subnet="10.10.0.1/24"), "host bits"),
        (IPAMPoolRequest(subnet="10.10.0.0"), "CIDR"),
        (IPAMPoolRequest(subnet="banana"), "CIDR"),
        (IPAMPoolRequest(subnet="10.10.0.0/24", gateway="10.10.0.0"), "network or broadcast"),
    ]:
        with pytest.raises(InvalidArgument, match=msg):
            ipam.pool_from_config(bad)


def test_choose_subnet_follows_docker_pools_and_skips_overlaps() -> None:
    assert ipam.choose_subnet([]) == IPv4Network("172.17.0.0/16")
    used = [IPv4Network(f"172.{n}.0.0/16") for n in range(17, 32)] + [IPv4Network("192.168.0.0/24")]
    assert ipam.choose_subnet(used) == IPv4Network("192.168.16.0/20")
    with pytest.raises(Conflict):
        ipam.choose_subnet([IPv4Network("0.0.0.0/0")])


def test_bridge_mac_is_02_42_plus_the_address() -> None:
    assert ipam.bridge_mac(IPv4Address("172.17.0.2")) == "02:42:ac:11:00:02"
    assert ipam.bridge_mac(IPv4Address("192.168.100.2")) == "02:42:c0:a8:64:02"


@given(prefix=st.integers(min_value=24, max_value=29), taken=st.sets(st.integers(min_value=0, max_value=255)))
def test_next_free_never_returns_reserved_or_taken(prefix: int, taken: set[int]) -> None:
    pool = ipam.pool_from_config(IPAMPoolRequest(subnet=f"10.0.0.0/{prefix}", gateway="10.0.0.1"))
    allocated = {IPv4Address("10.0.0.0") + t for t in taken if IPv4Address("10.0.0.0") + t in pool.subnet}
    try:
        addr = ipam.next_free(pool, allocated)
    except Conflict:
        usable = set(pool.subnet) - ipam.reserved(pool)
        assert usable <= allocated
        return
    assert addr in pool.subnet and addr not in allocated and addr not in ipam.reserved(pool)
    # lowest free: nothing free below it
    assert all(a in allocated or a in ipam.reserved(pool) for a in pool.subnet if a < addr)


@given(a=st.integers(min_value=8, max_value=30), b=st.integers(min_value=8, max_value=30))
def test_check_no_overlap_matches_ipaddress(a: int, b: int) -> None:
    x, y = IPv4Network(f"10.0.0.0/{a}"), IPv4Network(f"10.0.0.0/{b}")
    with pytest.raises(Forbidden):  # dockerd answers 403 for an overlapping pool
        ipam.check_no_overlap(x, [("other", y)])
    ipam.check_no_overlap(IPv4Network("11.0.0.0/8"), [("other", y)])
