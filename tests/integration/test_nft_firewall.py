"""The nftables backend against the real kernel, in a namespace of its own: a refused transaction
leaves nothing half done, an orphan bridge's elements go, and each backend removes the other's rules."""

from __future__ import annotations

import json
import subprocess
from ipaddress import IPv4Address, IPv4Network

import pytest

from muslin.engine.firewall import BridgeSpec, IptablesFirewall, PortSpec
from muslin.engine.nft_firewall import NftablesFirewall, remove_iptables_backend
from muslin.engine.nft_ruleset import TableState, parse_table, port_elements, wanted_elements
from muslin.kernel import iptables, netns

pytestmark = pytest.mark.root

NET = BridgeSpec(bridge="br-nfta", subnet=IPv4Network("10.92.0.0/24"), masquerade=True, icc=False, internal=False)
OTHER = BridgeSpec(bridge="br-nftb", subnet=IPv4Network("10.93.0.0/24"), masquerade=True, icc=True, internal=True)
PORT = PortSpec(bridge="br-nfta", proto="tcp", host_ip="", host_port=8080,
                container_ip=IPv4Address("10.92.0.2"), container_port=80)
LOCAL = PortSpec(bridge="br-nfta", proto="udp", host_ip="127.0.0.1", host_port=5353,
                 container_ip=IPv4Address("10.92.0.3"), container_port=53)


def _state(ns: str) -> TableState | None:
    out = subprocess.run(["nsenter", f"--net={netns.path_for(ns)}", "nft", "-j", "list", "table", "ip", "muslin"],
                         capture_output=True, text=True).stdout
    return parse_table(json.loads(out)) if out else None


def test_a_refused_change_leaves_nothing_half_done(host_ns) -> None:
    with netns.entered(host_ns):
        firewall = NftablesFirewall()
        try:
            firewall.ensure([NET], [])
            before = _state(host_ns)
            bad = PortSpec(bridge="br-nfta", proto="bogus", host_ip="", host_port=1,
                           container_ip=IPv4Address("10.92.0.9"), container_port=1)
            with pytest.raises(Exception, match="bogus"):
                firewall.add_port_forwards([PORT, bad])
            assert _state(host_ns) == before  # not even PORT's elements
            firewall.add_port_forwards([PORT, LOCAL])
            firewall.add_port_forwards([PORT])  # again: nothing to do, nothing refused
            state = _state(host_ns)
            assert state is not None and wanted_elements([NET], [PORT, LOCAL]) == state.elements
            assert firewall.intact()
        finally:
            firewall.close()


def test_changes_after_a_flush_repair_the_table_in_the_same_transaction(host_ns) -> None:
    with netns.entered(host_ns):
        firewall = NftablesFirewall()
        try:
            firewall.setup_network(NET)  # no table yet: created with the elements
            subprocess.run(["nft", "flush", "ruleset"], check=True)
            assert not firewall.intact()
            firewall.add_port_forwards([PORT])
            state = _state(host_ns)
            assert state is not None and state.elements == set(port_elements(PORT))
            assert "jump user-forward" in subprocess.run(["nft", "list", "chain", "ip", "muslin", "forward"],
                                                         capture_output=True, text=True).stdout
            firewall.teardown_network(NET)  # elements that are not there: nothing refused
            firewall.remove_port_forwards([PORT])
            firewall.remove_port_forwards([PORT])
            state = _state(host_ns)
            assert state is not None and state.elements == set()
            assert firewall.ensure([NET, OTHER], [PORT]) > 0
            assert firewall.intact() and firewall.ensure([NET, OTHER], [PORT]) == 0
        finally:
            firewall.close()


def test_an_orphan_bridges_elements_go_with_it(host_ns) -> None:
    with netns.entered(host_ns):
        firewall = NftablesFirewall()
        try:
            firewall.ensure([NET, OTHER], [PORT, LOCAL])
            firewall.remove_rules_naming("br-nfta")
            state = _state(host_ns)
            assert state is not None and state.elements == wanted_elements([OTHER], [])
        finally:
            firewall.close()


def test_each_backend_removes_the_others_rules(host_ns) -> None:
    with netns.entered(host_ns):
        old = IptablesFirewall()
        try:
            old.ensure([NET, OTHER], [PORT, LOCAL])
        finally:
            old.close()
        subprocess.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth9", "-j", "MASQUERADE"], check=True)
        assert remove_iptables_backend([NET, OTHER]) > 0
        saved = iptables.save("filter") + iptables.save("nat")
        assert "MUSLIN" not in saved and "10.92.0" not in saved and "10.93.0" not in saved
        assert "-A POSTROUTING -o eth9 -j MASQUERADE" in saved  # not ours: kept
        assert remove_iptables_backend([NET, OTHER]) == 0

        firewall = NftablesFirewall()
        try:
            firewall.ensure([NET], [PORT])
        finally:
            firewall.close()
        back = IptablesFirewall()
        try:
            back.remove_legacy_rules([NET])
        finally:
            back.close()
        assert _state(host_ns) is None


def test_a_table_of_an_older_layout_is_recreated_at_ensure(host_ns) -> None:
    with netns.entered(host_ns):
        subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
            "table ip muslin {\n"
            "  set internal-subnets { type ifname . ipv4_addr; flags interval; }\n"
            "  chain postrouting { type nat hook postrouting priority srcnat; policy accept; "
            "oifname . ip saddr @internal-subnets accept; }\n"
            "}\n"))
        firewall = NftablesFirewall()
        try:
            assert firewall.ensure([NET, OTHER], [PORT]) > 0
            state = _state(host_ns)
            assert state is not None and state.misshapen_sets() == []
            assert state.elements == wanted_elements([NET, OTHER], [PORT])
            assert firewall.intact() and firewall.ensure([NET, OTHER], [PORT]) == 0
        finally:
            firewall.close()
