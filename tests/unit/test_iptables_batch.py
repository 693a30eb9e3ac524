from muslin.kernel.iptables import Batch, Ruleset, normalize


def test_batch_renders_tables_in_order_with_declarations_first() -> None:
    b = Batch()
    b.add("nat", "-A POSTROUTING -s 10.0.0.0/24 -j MASQUERADE")
    b.add("filter", "-A FORWARD -j MUSLIN-USER")
    b.add("filter", ":MUSLIN-USER - [0:0]")
    text = b.render()
    assert text.splitlines() == [
        "*filter", ":MUSLIN-USER - [0:0]", "-A FORWARD -j MUSLIN-USER", "COMMIT",
        "*nat", "-A POSTROUTING -s 10.0.0.0/24 -j MASQUERADE", "COMMIT",
    ]


def test_empty_batch_is_falsy_and_renders_nothing() -> None:
    assert not Batch()
    assert Batch().render() == ""


def test_ruleset_matches_rules_ignoring_spacing() -> None:
    rs = Ruleset(chains={"MUSLIN"}, rules=["-A MUSLIN -i br0 -j RETURN"])
    assert rs.has("-A MUSLIN  -i br0 -j RETURN")
    assert not rs.has("-A MUSLIN -i br1 -j RETURN")
    assert rs.rules_in("MUSLIN") == ["-A MUSLIN -i br0 -j RETURN"]
    assert normalize(" a  b ") == "a b"
