import pytest

from muslin.kernel.iptables import read_all
from muslin.kernel.nfhandles import DumpedRule, Unmappable, _match

SAVED = """*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -o br-a -j MUSLIN
-A FORWARD -i br-a ! -o br-a -j ACCEPT
-A FORWARD -o br-a -j MUSLIN
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 10.1.0.0/24 ! -o br-a -j MASQUERADE
COMMIT
"""


def plain(*handles: int) -> list[DumpedRule]:
    return [DumpedRule(h, True) for h in handles]


def test_rules_map_to_handles_by_position_first_match_first() -> None:
    dumped = {("filter", "FORWARD"): plain(7, 9, 12), ("nat", "POSTROUTING"): plain(4)}
    wanted = {"filter": ["-A FORWARD -o br-a  -j MUSLIN", "-A FORWARD -o br-a -j MUSLIN"],
              "nat": ["-A POSTROUTING -s 10.1.0.0/24 ! -o br-a -j MASQUERADE"]}
    assert _match(wanted, read_all(SAVED), dumped) == [
        ("filter", "FORWARD", 7), ("filter", "FORWARD", 12), ("nat", "POSTROUTING", 4)]


def test_absent_rules_are_skipped() -> None:
    dumped = {("filter", "FORWARD"): plain(7, 9, 12), ("filter", "MUSLIN"): []}
    wanted = {"filter": ["-A FORWARD -o br-b -j MUSLIN", "-A MUSLIN -j RETURN"]}
    assert _match(wanted, read_all(SAVED), dumped) == []


def test_counts_that_differ_are_unmappable() -> None:
    # iptables-legacy shows rules that nf_tables does not hold.
    with pytest.raises(Unmappable):
        _match({"filter": ["-A FORWARD -o br-a -j MUSLIN"]}, read_all(SAVED), {("filter", "FORWARD"): plain(7, 9)})


def test_a_rule_written_with_nft_is_skipped_for_the_next_equal_one() -> None:
    dumped = {("filter", "FORWARD"): [DumpedRule(7, False), DumpedRule(9, True), DumpedRule(12, True)]}
    assert _match({"filter": ["-A FORWARD -o br-a -j MUSLIN"]}, read_all(SAVED), dumped) == [("filter", "FORWARD", 12)]
