"""Which firewall backend muslind runs: an explicit --firewall-backend wins, the default is nftables
where libnftables loads and the kernel answers nf_tables, iptables otherwise; an explicit nftables
that cannot work refuses the start with the reason (an EngineError, which muslind logs and exits 1
on, before anything is set up)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from muslin.engine import engine, firewall_choice
from muslin.engine.config import DaemonConfig
from muslin.errors import EngineError
from muslin.kernel import libnftables, nfhandles, nfnetlink


class FakeSocket:
    def settimeout(self, seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def nftables_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libnftables, "available", lambda: True)
    monkeypatch.setattr(nfnetlink, "open_socket", FakeSocket)
    monkeypatch.setattr(nfhandles, "generation", lambda sock, sequence: 7)


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


def test_an_explicit_backend_wins(nftables_works: None) -> None:
    assert firewall_choice.choose("iptables") == firewall_choice.Choice("iptables", "--firewall-backend iptables")
    assert firewall_choice.choose("nftables").backend == "nftables"


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
