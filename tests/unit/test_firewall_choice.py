"""Which firewall backend muslind runs: an explicit --firewall-backend wins, the default is nftables
where libnftables loads, the kernel answers nf_tables and iptables' FORWARD drops nothing, iptables
otherwise; an explicit nftables that cannot work refuses the start with the reason (an EngineError,
which muslind logs and exits 1 on, before anything is set up)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from muslin.engine import engine, firewall_choice
from muslin.engine.config import DaemonConfig
from muslin.errors import EngineError
from muslin.kernel import iptables, libnftables, nfhandles, nfnetlink


class FakeSocket:
    def settimeout(self, seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


def _forward(monkeypatch: pytest.MonkeyPatch, policy: str, *rules: str) -> None:
    monkeypatch.setattr(iptables, "builtin_chain", lambda table, chain: (policy, list(rules)))


@pytest.fixture
def nftables_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libnftables, "available", lambda: True)
    monkeypatch.setattr(nfnetlink, "open_socket", FakeSocket)
    monkeypatch.setattr(nfhandles, "generation", lambda sock, sequence: 7)
    _forward(monkeypatch, "ACCEPT", "-A FORWARD -s 10.9.9.9/32 -j DROP", "-A FORWARD -j MUSLIN-USER")


def _no_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libnftables, "available", lambda: False)


def _no_nf_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(sock: object, sequence: int) -> int:
        raise OSError(95, "Operation not supported")  # EOPNOTSUPP: a kernel without nf_tables

    monkeypatch.setattr(libnftables, "available", lambda: True)
    monkeypatch.setattr(nfnetlink, "open_socket", FakeSocket)
    monkeypatch.setattr(nfhandles, "generation", refused)


def _no_netfilter_netlink(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused() -> None:
        raise OSError(93, "Protocol not supported")  # EPROTONOSUPPORT: no nfnetlink at all

    monkeypatch.setattr(libnftables, "available", lambda: True)
    monkeypatch.setattr(nfnetlink, "open_socket", refused)


def test_the_default_is_nftables_where_it_works(nftables_works: None) -> None:
    choice = firewall_choice.choose("")
    assert choice.backend == "nftables" and "default" in choice.reason


@pytest.mark.parametrize("policy, rule, why", [
    ("DROP", "-A FORWARD -o eth0 -j ACCEPT", "iptables' FORWARD policy is DROP"),
    ("ACCEPT", "-A FORWARD -j REJECT --reject-with icmp-port-unreachable",
     "iptables' FORWARD has '-A FORWARD -j REJECT --reject-with icmp-port-unreachable'"),
    ("ACCEPT", "-A FORWARD -j DROP", "iptables' FORWARD has '-A FORWARD -j DROP'"),
])
def test_where_iptables_forward_drops_everything_the_default_stays_iptables(
        nftables_works: None, monkeypatch: pytest.MonkeyPatch, policy: str, rule: str, why: str) -> None:
    """An accept in table ip muslin does not outvote iptables' drop: nftables would cut containers off."""
    _forward(monkeypatch, policy, rule)
    choice = firewall_choice.choose("")
    assert choice.backend == "iptables" and why in choice.reason and "would not forward" in choice.reason
    given = firewall_choice.choose("nftables")  # given, it is used, with a warning that says why
    assert given.backend == "nftables" and given.warning is not None and why in given.warning


def test_when_iptables_cannot_be_asked_nothing_is_assumed_to_drop(nftables_works: None,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(table: str, chain: str) -> tuple[str, list[str]]:
        raise iptables.IptablesError("iptables not found: install the iptables package")

    monkeypatch.setattr(iptables, "builtin_chain", missing)
    assert firewall_choice.choose("").backend == "nftables"


def test_an_explicit_backend_wins(nftables_works: None) -> None:
    assert firewall_choice.choose("iptables") == firewall_choice.Choice("iptables", "--firewall-backend iptables")
    assert firewall_choice.choose("nftables") == firewall_choice.Choice("nftables", "--firewall-backend nftables")


@pytest.mark.parametrize("missing, why", [(_no_library, "libnftables.so.1 cannot be loaded"),
                                          (_no_nf_tables, "does not answer nf_tables (Operation not supported)"),
                                          (_no_netfilter_netlink, "no netfilter netlink (Protocol not supported)")])
def test_where_nftables_cannot_work_the_default_is_iptables_and_an_explicit_nftables_is_refused(
        monkeypatch: pytest.MonkeyPatch, missing, why: str) -> None:
    missing(monkeypatch)
    choice = firewall_choice.choose("")
    assert choice.backend == "iptables" and "the default nftables cannot work here" in choice.reason
    assert why in choice.reason
    assert firewall_choice.choose("iptables").backend == "iptables"
    with pytest.raises(ValueError, match=f"firewall-backend is set to nftables, but .*{re.escape(why)}"):
        firewall_choice.choose("nftables")


def test_the_engine_refuses_an_explicit_nftables_that_cannot_work_before_opening_anything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _no_library(monkeypatch)
    opened: list[str] = []
    monkeypatch.setattr(engine, "IptablesFirewall", lambda: opened.append("iptables"))
    monkeypatch.setattr(engine, "NftablesFirewall", lambda: opened.append("nftables"))
    config = DaemonConfig(data_root=Path("/nonexistent/data"), exec_root=Path("/nonexistent/run"),
                          firewall_backend="nftables")
    with pytest.raises(EngineError, match="firewall-backend is set to nftables, but libnftables.so.1 cannot be loaded"):
        engine.open_firewall(config)
    assert opened == []
    config.firewall_backend = ""
    engine.open_firewall(config)
    assert opened == ["iptables"]
    config.iptables = False  # --iptables=false: no firewall of either kind, nothing probed
    monkeypatch.setattr(firewall_choice, "choose", lambda requested: pytest.fail("probed"))
    assert engine.open_firewall(config) is None
