"""muslind's host firewall as tests see it, whichever backend wrote it: where a host port goes, which
subnets are masqueraded, each bridge's ICC verdict, which bridges are isolated or internal, and the
whole listing for "nothing of X is left" checks. One reader per backend (``iptables-save`` of the
iptables backend's chains; ``nft -j list table ip muslin``'s set elements for nftables), so a test
states what it expects once and runs under the default backend, whichever that is here.

Tests that are about one backend's own layout (iptables' FORWARD ordering, MUSLIN-USER, nft's chains)
read that backend directly instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from muslin.engine.nft_ruleset import CHAINS, QUALIFIED, Element, TableState, parse_table

IPTABLES, NFTABLES = "iptables", "nftables"
Shell = Callable[..., str]  # runs a command in the daemon's namespace: sh("iptables-save", check=False)
_STARTED_WITH = re.compile(r"firewall backend (iptables|nftables) \(")


@dataclass(frozen=True, order=True)
class Forward:
    """A published port: ``host_ip`` "" when it answers on every host address."""

    protocol: str
    host_port: int
    to: str  # "172.17.0.2:80"
    host_ip: str = ""


def backend_in_log(log: str) -> str | None:
    """The backend the last start of muslind chose, from its log line."""
    found = _STARTED_WITH.findall(log)
    return found[-1] if found else None


def backend_in_namespace(sh: Shell) -> str:
    """For a namespace whose muslind's log is not at hand (the lab's nodes): nftables when its table
    exists (the nftables backend writes it at start, the iptables backend deletes it)."""
    return NFTABLES if f"table {QUALIFIED}" in sh("nft", "list", "tables", check=False) else IPTABLES


class FirewallView:
    def __init__(self, sh: Shell, backend: str) -> None:
        self.sh, self.backend = sh, backend

    # -- reading -------------------------------------------------------------------------------------
    def listing(self) -> str:
        """Everything the backend wrote, as its tool prints it (for "nothing of X is left")."""
        if self.backend == NFTABLES:
            return self.sh("nft", "list", "table", *QUALIFIED.split(), check=False)
        return self.sh("iptables-save")

    def snapshot(self, ordered: bool = True) -> object:
        """Something equal before and after a change that should have changed no rule: the rules of
        ours (in order, unless not ``ordered``), and with nftables the table's elements and chains
        and whatever iptables rules the namespace holds besides."""
        lines = [line for line in self.sh("iptables-save").splitlines() if line.startswith(("-A", ":MUSLIN"))]
        lines = lines if ordered else sorted(lines)
        if self.backend == NFTABLES:
            state = self._table()
            return lines, None if state is None else (state.elements, state.chains, state.sets)
        return lines

    def forwards(self) -> list[Forward]:
        """Every published port's DNAT, sorted (a list: iptables could hold one twice)."""
        if self.backend == NFTABLES:
            out = []
            for e in self._elements():
                if e.set == "dnat-any-address":
                    out.append(Forward(e.key[0], int(e.key[1]), f"{e.value[0]}:{e.value[1]}"))
                elif e.set == "dnat-by-address":
                    out.append(Forward(e.key[1], int(e.key[2]), f"{e.value[0]}:{e.value[1]}", e.key[0]))
            return sorted(out)
        pattern = re.compile(r"^-A MUSLIN (?:-d (\S+)/32 )?-p (\w+) -m \w+ --dport (\d+) -j DNAT --to-destination (\S+)$")
        return sorted(Forward(m[2], int(m[3]), m[4], m[1] or "")
                      for m in map(pattern.match, self._iptables("nat")) if m)

    def hairpins(self) -> set[tuple[str, str, int]]:
        """(container address, protocol, container port) of each port a container may reach through
        the host's published port and be answered."""
        if self.backend == NFTABLES:
            return {(e.key[0], e.key[2], int(e.key[3])) for e in self._elements() if e.set == "hairpin"}
        pattern = re.compile(r"^-A POSTROUTING -s (\S+)/32 -d \1/32 -p (\w+) -m \w+ --dport (\d+) -j MASQUERADE$")
        return {(m[1], m[2], int(m[3])) for m in map(pattern.match, self._iptables("nat")) if m}

    def masqueraded(self) -> dict[str, str]:
        """subnet → the bridge it is masqueraded leaving."""
        if self.backend == NFTABLES:
            return {e.key[0]: e.comment for e in self._elements() if e.set == "masquerade-subnets"}
        pattern = re.compile(r"^-A POSTROUTING -s (\S+) ! -o (\S+) -j MASQUERADE$")
        return {m[1]: m[2] for m in map(pattern.match, self._iptables("nat")) if m}

    def icc(self) -> dict[str, bool]:
        """bridge → whether its containers may talk to one another."""
        if self.backend == NFTABLES:
            return {e.key[0]: e.value[0] == "accept" for e in self._elements() if e.set == "same-bridge"}
        pattern = re.compile(r"^-A MUSLIN-FORWARD -i (\S+) -o \1 -j (ACCEPT|DROP)$")
        return {m[1]: m[2] == "ACCEPT" for m in map(pattern.match, self._iptables("filter")) if m}

    def isolated(self) -> set[str]:
        """Bridges (not internal) whose traffic to another bridge is dropped."""
        if self.backend == NFTABLES:
            return {e.key[0] for e in self._elements() if e.set == "bridges"}
        rules = self._iptables("filter")
        pattern = re.compile(r"^-A MUSLIN-ISOLATION-STAGE-2 -o (\S+) -j DROP$")
        return {m[1] for m in map(pattern.match, rules)
                if m and f"-A MUSLIN-ISOLATION-STAGE-1 -i {m[1]} ! -o {m[1]} -j MUSLIN-ISOLATION-STAGE-2" in rules}

    def internal(self) -> dict[str, str]:
        """bridge → subnet of internal networks: nothing leaves or enters the subnet."""
        if self.backend == NFTABLES:
            bridges = {e.key[0] for e in self._elements() if e.set == "internal-bridges"}
            return {e.comment: e.key[0] for e in self._elements() if e.set == "internal-subnets" and e.comment in bridges}
        rules = self._iptables("filter")
        pattern = re.compile(r"^-A MUSLIN-ISOLATION-STAGE-1 ! -s (\S+) -o (\S+) -j DROP$")
        return {m[2]: m[1] for m in map(pattern.match, rules)
                if m and f"-A MUSLIN-ISOLATION-STAGE-1 ! -d {m[1]} -i {m[2]} -j DROP" in rules}

    def passes_published_ports_to(self, bridge: str) -> bool:
        """Whether the forwarding rules let published ports' traffic through to this bridge."""
        if self.backend == NFTABLES:
            state = self._table()
            return (state is not None and bridge in {e.key[0] for e in state.elements if e.set == "bridges"}
                    and state.chains.get("forward") == [comment for comment, _ in CHAINS["forward"].rules])
        return f"-A MUSLIN-FORWARD -o {bridge} -j MUSLIN" in self._iptables("filter")

    # -- changing it behind muslind's back (what a crash or another program leaves) ------------------
    def remove_masquerade(self, subnet: str, bridge: str) -> None:
        if self.backend == NFTABLES:
            self.sh("nft", "delete", "element", *QUALIFIED.split(), "masquerade-subnets", f"{{ {subnet} }}")
        else:
            self.sh("iptables", "-t", "nat", "-D", "POSTROUTING", "-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE")

    def remove_forwards(self) -> None:
        """Every published port's DNAT."""
        if self.backend == NFTABLES:
            for name in ("dnat-any-address", "dnat-by-address"):
                self.sh("nft", "flush", "map", *QUALIFIED.split(), name)
        else:
            self.sh("iptables", "-t", "nat", "-F", "MUSLIN")

    def flush_forwarding(self) -> None:
        """The forwarding rules of every network (iptables' MUSLIN-FORWARD, nft's forward chain)."""
        if self.backend == NFTABLES:
            self.sh("nft", "flush", "chain", *QUALIFIED.split(), "forward")
        else:
            self.sh("iptables", "-F", "MUSLIN-FORWARD")

    def wipe(self) -> None:
        """A firewall reload that replaces the whole ruleset (firewalld, a restore of a saved file)."""
        if self.backend == NFTABLES:
            self.sh("nft", "flush", "ruleset")
        else:
            self.sh("iptables-restore", input_="*filter\nCOMMIT\n*nat\nCOMMIT\n")

    # -- backend internals ---------------------------------------------------------------------------
    def _iptables(self, table: str) -> list[str]:
        return [line for line in self.sh("iptables-save", "-t", table).splitlines() if line.startswith("-A")]

    def _table(self) -> TableState | None:
        text = self.sh("nft", "-j", "list", "table", *QUALIFIED.split(), check=False)
        return parse_table(json.loads(text or "{}"))

    def _elements(self) -> set[Element]:
        state = self._table()
        return state.elements if state is not None else set()


def of_daemon(daemon) -> FirewallView:
    """The firewall of a test's muslind (tests/e2e's Daemon), read by the backend its log names."""
    backend = backend_in_log(daemon.log()) or backend_in_namespace(daemon.sh)
    return FirewallView(daemon.sh, backend)

