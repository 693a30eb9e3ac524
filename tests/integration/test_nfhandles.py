"""Deleting iptables rules by nf_tables handle, against the real kernel and the real iptables tools."""

import subprocess

import pytest

from muslin.kernel import iptables, netns
from muslin.kernel.nfhandles import HandleDeleter

from ..tools import require

pytestmark = pytest.mark.root

SETUP = """*filter
:MUSLIN - [0:0]
-A FORWARD -o br-a -j MUSLIN
-A FORWARD -o br-b -j MUSLIN
-A FORWARD -i br-a ! -o br-a -j ACCEPT
-A FORWARD -o br-a -j MUSLIN
-A FORWARD -o br-a -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:MUSLIN - [0:0]
-A POSTROUTING -s 10.1.0.0/24 ! -o br-a -j MASQUERADE
-A POSTROUTING -o br-a -m addrtype --src-type LOCAL -j MASQUERADE
-A MUSLIN -d 10.9.9.9/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.1.0.2:80
COMMIT
"""
DELETE = {
    "filter": ["-A FORWARD -o br-a -j MUSLIN", "-A FORWARD -i br-a ! -o br-a -j ACCEPT",
               "-A FORWARD -o br-a -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
               "-A FORWARD -o br-zz -j MUSLIN"],  # not present: skipped
    "nat": ["-A POSTROUTING -s 10.1.0.0/24 ! -o br-a -j MASQUERADE",
            "-A POSTROUTING -o br-a -m addrtype --src-type LOCAL -j MASQUERADE",
            "-A MUSLIN -d 10.9.9.9/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.1.0.2:80"],
}
LEFT = {
    "filter": ["-A FORWARD -o br-b -j MUSLIN", "-A FORWARD -o br-a -j MUSLIN"],
    "nat": [],
}


def _rules() -> dict[str, list[str]]:
    state = iptables.read_all()
    return {table: state.get(table, iptables.Ruleset()).rules for table in ("filter", "nat")}


def _refuse_restore(batch: str) -> None:
    raise AssertionError(f"expected the nf_tables handle path, got an iptables-restore batch:\n{batch}")


def test_deletes_listed_rules_by_handle_in_one_transaction(host_ns, monkeypatch) -> None:
    with netns.entered(host_ns):
        iptables.restore(SETUP)
        monkeypatch.setattr(iptables, "restore", _refuse_restore)
        deleter = HandleDeleter()
        try:
            deleter.delete(DELETE)
            assert _rules() == LEFT  # the first of two equal rules went, as with iptables -D
            deleter.delete(DELETE)  # idempotent: deletes the remaining duplicate, nothing else
            assert _rules() == {"filter": ["-A FORWARD -o br-b -j MUSLIN"], "nat": []}
        finally:
            deleter.close()


def test_a_rule_written_with_nft_is_not_taken_for_ours(host_ns, monkeypatch) -> None:
    """A set lookup prints as "-A FORWARD -j ACCEPT" (and ``iptables -D FORWARD -j ACCEPT`` would delete
    it); deleting that text removes the rule iptables wrote instead."""
    nft = require("nft")
    with netns.entered(host_ns):
        iptables.restore("*filter\n-A FORWARD -o br-a -j ACCEPT\n-A FORWARD -j ACCEPT\nCOMMIT\n")
        subprocess.run([nft, "insert", "rule", "ip", "filter", "FORWARD",
                        "ip", "saddr", "{", "10.2.0.1,", "10.2.0.2", "}", "accept"], check=True)
        assert _rules()["filter"][0] == "-A FORWARD -j ACCEPT"
        monkeypatch.setattr(iptables, "restore", _refuse_restore)
        deleter = HandleDeleter()
        try:
            deleter.delete({"filter": ["-A FORWARD -j ACCEPT", "-A FORWARD -o br-a -j ACCEPT"]})
        finally:
            deleter.close()
        listing = subprocess.run([nft, "list", "chain", "ip", "filter", "FORWARD"],
                                 capture_output=True, text=True, check=True).stdout
    assert "10.2.0.1" in listing and "br-a" not in listing
    assert "counter" not in listing  # iptables-nft gives each of its rules a counter; the set rule has none


class _RacingDeleter(HandleDeleter):
    """Someone else changes the ruleset between our snapshot and our transaction."""

    def __init__(self, meanwhile: str) -> None:
        super().__init__()
        self.meanwhile = meanwhile

    def _snapshot(self, rules):
        snapshot = super()._snapshot(rules)
        iptables.restore(self.meanwhile)
        return snapshot


@pytest.mark.parametrize("meanwhile", [
    "*filter\n-D FORWARD -i br-a ! -o br-a -j ACCEPT\nCOMMIT\n",  # one of ours, gone already
    "*filter\n-A FORWARD -o br-other -j ACCEPT\nCOMMIT\n",  # anything at all: the generation moved on
])
def test_a_refused_transaction_falls_back_to_iptables_restore(host_ns, monkeypatch, meanwhile) -> None:
    batches: list[str] = []
    real_restore = iptables.restore

    def spy(batch: str) -> None:
        batches.append(batch)
        real_restore(batch)

    with netns.entered(host_ns):
        iptables.restore(SETUP)
        deleter = _RacingDeleter(meanwhile)
        monkeypatch.setattr(iptables, "restore", spy)
        try:
            deleter.delete(DELETE)
        finally:
            deleter.close()
        left = _rules()
    assert [b for b in batches if "-D " in b and b != meanwhile], "the fallback did not run"
    extra = ["-A FORWARD -o br-other -j ACCEPT"] if "br-other" in meanwhile else []
    assert left == {"filter": LEFT["filter"] + extra, "nat": []}


def test_a_rule_listed_twice_is_deleted_as_often_as_it_is_there(host_ns) -> None:
    """Two published ports to one container port share their hairpin rule; tearing both down lists it
    twice. Both paths delete the one copy there is and do not fail over the second listing."""
    twice = {"nat": ["-A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE"] * 2}
    with netns.entered(host_ns):
        for nf_tables in (True, False):
            iptables.restore("*nat\n-A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p tcp -m tcp --dport 80 "
                             "-j MASQUERADE\nCOMMIT\n")
            deleter = HandleDeleter()
            deleter._unavailable = not nf_tables  # as on a host with iptables-legacy only
            try:
                deleter.delete(twice)
            finally:
                deleter.close()
            assert _rules()["nat"] == []
