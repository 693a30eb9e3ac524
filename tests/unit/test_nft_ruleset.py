"""The nftables backend's pure parts: elements of networks and ports, the scripts, reading a listing back,
and the one transaction that repairs a refused change."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from muslin.engine.firewall import BridgeSpec, PortSpec
from muslin.engine.nft_firewall import repair
from muslin.engine.nft_ruleset import (CHAINS, SETS, Element, add_elements, delete_elements, full_table,
                                       network_elements, parse_table, port_elements, skeleton, wanted_elements,
                                       wire)
from muslin.kernel import nftsets
from muslin.kernel.libnftables import NftError

NET = BridgeSpec("br-a", IPv4Network("10.1.0.0/24"), masquerade=True, icc=True, internal=False)
PORT = PortSpec("br-a", "tcp", "", 8080, IPv4Address("10.1.0.2"), 80)


def test_a_network_is_elements_keyed_on_its_bridge() -> None:
    assert set(network_elements(NET)) == {
        Element("bridges", ("br-a",)),
        Element("same-bridge", ("br-a", "br-a"), ("accept",)),
        Element("masquerade-subnets", ("10.1.0.0/24",), comment="br-a"),
        Element("own-bridge", ("br-a", "br-a")),
    }
    no_icc = BridgeSpec("br-b", IPv4Network("10.2.0.0/24"), masquerade=False, icc=False, internal=False)
    assert set(network_elements(no_icc)) == {Element("bridges", ("br-b",)),
                                             Element("same-bridge", ("br-b", "br-b"), ("jump same-bridge-no-icc",))}
    internal = BridgeSpec("br-i", IPv4Network("10.3.0.0/24"), masquerade=True, icc=False, internal=True)
    assert set(network_elements(internal)) == {
        Element("internal-bridges", ("br-i",)),
        Element("internal-subnets", ("10.3.0.0/24",), comment="br-i"),
        Element("same-bridge", ("br-i", "br-i"), ("drop",)),
    }


def test_a_port_is_a_dnat_an_accept_and_a_hairpin_element() -> None:
    assert port_elements(PORT) == [
        Element("dnat-any-address", ("tcp", "8080"), ("10.1.0.2", "80")),
        Element("published-ports", ("br-a", "10.1.0.2", "tcp", "80")),
        Element("hairpin", ("10.1.0.2", "10.1.0.2", "tcp", "80")),
    ]
    local = PortSpec("br-a", "udp", "127.0.0.1", 5353, IPv4Address("10.1.0.2"), 53)
    assert port_elements(local)[0] == Element("dnat-by-address", ("127.0.0.1", "udp", "5353"), ("10.1.0.2", "53"))
    assert port_elements(PortSpec("br-a", "tcp", "0.0.0.0", 1, IPv4Address("10.1.0.2"), 2))[0].set == "dnat-any-address"


def test_the_kernel_bytes_of_elements() -> None:
    """What nft itself sends: fields padded to 4 bytes, a subnet as its start and the address after
    its end, flagged; the bridge's name as the subnet's comment."""
    (dnat, published, hairpin) = [wire(e) for e in port_elements(PORT)]
    assert dnat == [nftsets.Element(bytes([6, 0, 0, 0, 0x1F, 0x90, 0, 0]), data=bytes([10, 1, 0, 2, 0, 80, 0, 0]))]
    assert published[0].key == b"br-a".ljust(16, b"\0") + bytes([10, 1, 0, 2, 6, 0, 0, 0, 0, 80, 0, 0])
    assert len(hairpin[0].key) == 16
    masquerade = next(e for e in network_elements(NET) if e.set == "masquerade-subnets")
    assert wire(masquerade) == [nftsets.Element(bytes([10, 1, 0, 0]), comment="br-a"),
                                nftsets.Element(bytes([10, 1, 1, 0]), interval_end=True)]
    no_icc = BridgeSpec("br-b", IPv4Network("10.2.0.0/24"), masquerade=False, icc=False, internal=False)
    same = next(e for e in network_elements(no_icc) if e.set == "same-bridge")
    assert wire(same)[0].verdict == "jump same-bridge-no-icc"
    with pytest.raises(ValueError, match="protocol"):
        wire(Element("hairpin", ("10.1.0.2", "10.1.0.2", "bogus", "80")))


def test_scripts_show_where_a_port_goes_and_delete_by_key() -> None:
    assert add_elements(port_elements(PORT))[0] == \
        "add element ip muslin dnat-any-address { tcp . 8080 : 10.1.0.2 . 80 }"
    assert 'add element ip muslin published-ports { "br-a" . 10.1.0.2 . tcp . 80 }' in add_elements(port_elements(PORT))
    assert delete_elements(port_elements(PORT))[0] == "delete element ip muslin dnat-any-address { tcp . 8080 }"
    # Two ports of one endpoint to the same container port share their accept and hairpin elements.
    twice = [e for p in (PORT, PortSpec("br-a", "tcp", "", 8081, IPv4Address("10.1.0.2"), 80)) for e in port_elements(p)]
    assert len(delete_elements(twice)) == 4


def test_the_full_table_declares_every_set_and_chain_before_the_rules_that_use_them() -> None:
    script = full_table()
    assert script[0] == "add table ip muslin"
    for name in SETS:
        assert any(line.startswith(("add set", "add map")) and f" {name} {{" in line for line in script)
    first_rule = next(i for i, line in enumerate(script) if line.startswith("add rule"))
    assert all(not line.startswith(("add set", "add map")) for line in script[first_rule:])
    assert "add chain ip muslin user-forward" in script
    assert "add chain ip muslin forward { type filter hook forward priority filter; policy accept; }" in script
    assert 'add rule ip muslin forward jump user-forward comment "user rules"' in script


def _listing(elements: dict[str, list], chains: dict[str, list[str]] | None = None) -> dict:
    objects: list[dict] = [{"metainfo": {}}, {"table": {"family": "ip", "name": "muslin"}}]
    for name, spec in SETS.items():
        body = {"family": "ip", "table": "muslin", "name": name,
                "type": list(spec.key) if len(spec.key) > 1 else spec.key[0]}
        if spec.interval:
            body["flags"] = ["interval"]
        if spec.data:
            body["map"] = spec.data
        if elements.get(name):
            body["elem"] = elements[name]
        objects.append({"map" if spec.data else "set": body})
    chains = chains if chains is not None else {c.name: [comment for comment, _ in c.rules] for c in CHAINS.values()}
    for chain, comments in {**chains, "user-forward": []}.items():
        objects.append({"chain": {"family": "ip", "table": "muslin", "name": chain}})
        objects += [{"rule": {"chain": chain, "comment": comment, "expr": []}} for comment in comments]
    return {"nftables": objects}


def test_a_listing_reads_back_as_the_elements_written() -> None:
    state = parse_table(_listing({
        "dnat-any-address": [[{"concat": ["tcp", 8080]}, {"concat": ["10.1.0.2", 80]}]],
        "published-ports": [{"concat": ["br-a", "10.1.0.2", "tcp", 80]}],
        "hairpin": [{"concat": ["10.1.0.2", "10.1.0.2", "tcp", 80]}],
        "bridges": ["br-a"],
        "same-bridge": [[{"concat": ["br-a", "br-a"]}, {"accept": None}],
                        [{"concat": ["br-b", "br-b"]}, {"jump": {"target": "same-bridge-no-icc"}}]],
        "masquerade-subnets": [{"elem": {"val": {"prefix": {"addr": "10.1.0.0", "len": 24}}, "comment": "br-a"}}],
        "own-bridge": [{"concat": ["br-a", "br-a"]}],
        "internal-subnets": ["10.9.0.7"],  # nft shows a /32 as an address
    }))
    assert state is not None
    assert wanted_elements([NET], [PORT]) <= state.elements
    assert Element("same-bridge", ("br-b", "br-b"), ("jump same-bridge-no-icc",)) in state.elements
    assert Element("internal-subnets", ("10.9.0.7/32",)) in state.elements
    assert state.misshapen_sets() == []
    assert skeleton(state) == []
    assert state.elements_naming("br-a") == wanted_elements([NET], [PORT])
    assert parse_table({"nftables": [{"metainfo": {}}]}) is None


def test_the_skeleton_rewrites_only_chains_that_differ_and_never_the_users() -> None:
    chains = {c.name: [comment for comment, _ in c.rules] for c in CHAINS.values()}
    chains["postrouting"] = chains["postrouting"][:1]  # someone deleted rules
    del chains["output"]
    state = parse_table(_listing({}, chains))
    assert state is not None
    lines = skeleton(state)
    assert "flush chain ip muslin postrouting" in lines
    assert sum(line.startswith("add rule ip muslin postrouting") for line in lines) == len(CHAINS["postrouting"].rules)
    assert any(line.startswith("add chain ip muslin output {") for line in lines)
    assert not any("user-forward" in line and "flush" in line for line in lines)
    assert not any("forward " in line and "flush" in line for line in lines)


def test_repair_adds_what_is_missing_replaces_other_values_and_deletes_only_what_is_there() -> None:
    stale = Element("dnat-any-address", ("tcp", "8080"), ("10.1.0.9", "80"))
    state = parse_table(_listing({
        "dnat-any-address": [[{"concat": ["tcp", 8080]}, {"concat": ["10.1.0.9", 80]}]],
        "bridges": ["br-a"],
    }))
    assert state is not None and stale in state.elements
    lines = repair(state, port_elements(PORT), [Element("bridges", ("br-a",)), Element("bridges", ("br-gone",))])
    assert lines == [
        "delete element ip muslin bridges { \"br-a\" }",
        "delete element ip muslin dnat-any-address { tcp . 8080 }",
        *add_elements(port_elements(PORT)),
    ]
    assert repair(None, [Element("bridges", ("br-a",))], [])[0] == "add table ip muslin"
    assert repair(state, [], [Element("bridges", ("br-gone",))]) == []


def test_repair_refuses_a_table_of_another_shape() -> None:
    listing = _listing({})
    for obj in listing["nftables"]:
        if obj.get("set", {}).get("name") == "bridges":
            obj["set"]["type"] = "ipv4_addr"
    state = parse_table(listing)
    assert state is not None and state.misshapen_sets() == ["bridges"]
    with pytest.raises(NftError, match="another shape"):
        repair(state, [Element("bridges", ("br-a",))], [])
