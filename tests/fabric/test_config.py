from ipaddress import IPv4Address, IPv4Network

import pytest

from muslin.fabric.config import ConfigError, parse_config


def test_seed_config_gets_flannels_defaults() -> None:
    c = parse_config('{"Network":"172.21.0.0/16"}')
    assert c.network == IPv4Network("172.21.0.0/16")
    assert c.subnet_len == 24
    assert c.subnet_min == IPv4Address("172.21.1.0")
    assert c.subnet_max == IPv4Address("172.21.255.0")
    assert c.backend.type == "udp" and c.backend.port is None and not c.backend.explicit  # as flanneld v0.20.2
    assert c.subnet_count == 255


def test_small_network_subnet_len_is_prefix_plus_two() -> None:
    c = parse_config('{"Network":"10.0.0.0/24"}')
    assert c.subnet_len == 26
    assert (str(c.subnet_min), str(c.subnet_max), c.subnet_count) == ("10.0.0.64", "10.0.0.192", 3)


def test_a_28_gets_30s_and_an_explicit_length_may_leave_room_for_four() -> None:
    assert parse_config('{"Network":"10.0.0.0/28"}').subnet_len == 30
    assert parse_config('{"Network":"10.5.0.0/16","SubnetLen":18}').subnet_count == 3  # 4 minus the first


def test_keys_match_case_insensitively_like_gos_decoder() -> None:
    c = parse_config('{"network":"10.5.0.0/16","SUBNETLEN":26,"subnetMin":"10.5.1.0","subnetmax":"10.5.9.192",'
                     '"backend":{"type":"vxlan","vni":7,"port":4789,"directrouting":true},"Unknown":1}')
    assert c.subnet_len == 26 and c.subnet_min == IPv4Address("10.5.1.0")
    assert c.subnet_max == IPv4Address("10.5.9.192")
    assert (c.backend.vni, c.backend.port, c.backend.direct_routing) == (7, 4789, True)


@pytest.mark.parametrize("text, message", [
    ("", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ("{}", "Network is missing"),
    ('{"Network":"10.5.0.0/33"}', "not an IPv4 network"),
    ('{"Network":"10.5.0.1/16"}', "not an IPv4 network"),
    ('{"Network":"10.5.0.0/16","SubnetLen":12}', "SubnetLen /12 leaves .* fewer than four subnets"),
    ('{"Network":"10.5.0.0/16","SubnetLen":17}', "SubnetLen /17 leaves .* fewer than four subnets"),
    ('{"Network":"10.5.0.0/16","SubnetLen":31}', "at most /30"),
    ('{"Network":"10.5.0.0/29"}', "too small"),
    ('{"Network":"10.5.0.0/16","Backend":{}}', "Backend has no Type"),
    ('{"Network":"10.5.0.0/16","Backend":{"VNI":2}}', "Backend has no Type"),
    ('{"Network":"10.5.0.0/16","SubnetLen":"24"}', "SubnetLen must be a number"),
    ('{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}', "SubnetMin 10.6.0.0 is not inside"),
    ('{"Network":"10.5.0.0/16","SubnetMax":"10.5.3.7"}', "not the start of a /24"),
    ('{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.3.0"}', "above SubnetMax"),
    ('{"Network":"10.5.0.0/16","Backend":{"Type":"aws-vpc"}}', "not supported"),
    ('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":true}}', "VNI must be a number"),
    ('{"Network":"10.5.0.0/16","Backend":"vxlan"}', "Backend must be an object"),
    ('{"Network":"10.5.0.0/16","network":"10.6.0.0/16"}', "given twice"),
    ('{"Network":"10.5.0.0/16","EnableIPv6":true}', "EnableIPv6"),
    ('{"Network":"10.5.0.0/16","Networks":["10.6.0.0/16"]}', "Networks .* not supported"),
])
def test_invalid_configs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_fits_checks_length_range_and_network() -> None:
    c = parse_config('{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}')
    assert c.fits(IPv4Network("10.5.10.0/24"))
    assert not c.fits(IPv4Network("10.5.9.0/24"))
    assert not c.fits(IPv4Network("10.5.10.0/25"))
    assert not c.fits(IPv4Network("10.6.10.0/24"))
