"""The nftables firewall backend (``--firewall-backend nftables``): ``Firewall`` over ``nft_ruleset``.

Each change is the elements of one network or of some ports, added or deleted in one nf_tables
transaction sent over netlink (``nftsets``), without reading the ruleset: its cost does not grow with
what already exists. Only when the kernel refuses such a transaction (the table was flushed by
someone, an element is already gone or holds another value) is the table read (libnftables), and one
transaction written that makes those elements right, the table's skeleton included. The kernel
applies a transaction whole or not at all, so a failure leaves nothing half done.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network

from muslin.kernel import iptables, libnftables, nfhandles, nfnetlink, nftsets

from .firewall import OWN_CHAINS, BridgeSpec, PortSpec, bridge_rules, legacy_rules
from .nft_ruleset import (QUALIFIED, TABLE, Element, TableState, add_elements, delete_elements, full_table,
                          network_elements, parse_table, port_elements, skeleton, wanted_elements, wire)

log = logging.getLogger(__name__)
GENERATION_REPLY_SECONDS = 5.0


class NftablesFirewall:
    """Networks and published ports as elements of ``table ip muslin``.

    One caller at a time: the engine serialises firewall calls, and the libnftables context and the
    netlink socket belong to the namespace of the thread that first used them.

    As ``IptablesFirewall``, it knows when nobody else has touched the ruleset: every committed
    transaction bumps the ruleset's generation by one, so a commit of ours that took it from a
    generation where the table was complete, with nothing else in between, leaves it complete, and
    the firewall guard's ``intact`` needs no read.
    """

    def __init__(self) -> None:
        self._nft = libnftables.Nft()
        self._elements = nftsets.ElementWriter(TABLE)
        self._generation_socket: socket.socket | None = None
        self._sequence = 0
        self._complete_at: int | None = None

    def close(self) -> None:
        self._nft.close()
        self._elements.close()
        if self._generation_socket is not None:
            self._generation_socket.close()
            self._generation_socket = None

    def intact(self) -> bool:
        return self._complete_at is not None and self._generation() == self._complete_at

    def commit_beside(self, commit: Callable[[], object], commits: int) -> None:
        """As ``IptablesFirewall.commit_beside``: another part's commit, none of our table's."""
        self._commit(commit, self._generation(), self._complete_at, commits)

    # -- the interface ------------------------------------------------------------------------------
    def setup_network(self, spec: BridgeSpec) -> None:
        self._change(network_elements(spec), [])

    def teardown_network(self, spec: BridgeSpec) -> None:
        self._change([], network_elements(spec))

    def add_port_forwards(self, ports: list[PortSpec]) -> None:
        self._change([e for p in ports for e in port_elements(p)], [])

    def remove_port_forwards(self, ports: list[PortSpec]) -> None:
        self._change([], [e for p in ports for e in port_elements(p)])

    def remove_rules_naming(self, ifname: str) -> None:
        """Every element of this bridge (an orphan bridge whose network the store no longer has)."""
        read_at = self._generation()
        state = self._read()
        if state is not None and (naming := state.elements_naming(ifname)):
            self._commit_script(delete_elements(naming), read_at, self._complete_at)

    def remove_legacy_rules(self, networks: list[BridgeSpec]) -> None:
        """The iptables backend's chains and rules (muslind ran with it before this start): left in
        place they would keep DNATing ports and dropping traffic by the old networks' rules. Without
        the iptables tools that backend never ran here, and there is nothing to remove."""
        if iptables.available():
            remove_iptables_backend(networks)

    def ensure(self, networks: list[BridgeSpec], ports: list[PortSpec]) -> int:
        """Make the table exactly these networks and ports (missing elements added, stale ones
        deleted, chains rewritten where their rules differ) in one transaction; returns how many
        lines that wrote, 0 when nothing was committed."""
        read_at = self._generation()
        state = self._read()
        wanted = wanted_elements(networks, ports)
        if state is not None and (misshapen := state.misshapen_sets()):
            log.warning("nftables table %s has sets of another shape (%s): recreating it, rules added "
                        "to its chain user-forward are lost", QUALIFIED, ", ".join(misshapen))
            lines = [f"delete table {QUALIFIED}", *full_table(), *add_elements(wanted)]
        else:
            present = state.elements if state is not None else set()
            lines = [*(skeleton(state) if state is not None else full_table()),
                     *delete_elements(present - wanted), *add_elements(wanted - present)]
        if lines:
            self._commit_script(lines, read_at, complete_at=read_at)
        else:
            self._complete_at = read_at
        return len(lines)

    # -- changes ------------------------------------------------------------------------------------
    def _change(self, add: list[Element], remove: list[Element]) -> None:
        if not add and not remove:
            return
        try:
            changes = ([nftsets.Change(e.set, True, w) for e in sorted(set(add)) for w in wire(e)]
                       + [nftsets.Change(e.set, False, w) for e in sorted(set(remove)) for w in wire(e)])
        except ValueError as exc:  # nothing we can encode: nft's own parser gives the error below
            log.debug("element not encodable (%s)", exc)
            changes = []
        if changes:
            read_at = self._generation()
            try:
                self._commit(lambda: self._elements.apply(changes), read_at, self._complete_at)
                return
            except OSError as exc:  # nftsets.Refused included: nothing was applied
                log.debug("element change refused (%s): reading the table", exc)
        read_at = self._generation()
        lines = repair(self._read(), add, remove)
        if lines:
            self._commit_script(lines, read_at, self._complete_at)

    def _commit_script(self, lines: list[str], read_at: int | None, complete_at: int | None) -> None:
        self._commit(lambda: self._nft.run("\n".join(lines) + "\n"), read_at, complete_at)

    def _commit(self, transaction: Callable[[], object], read_at: int | None, complete_at: int | None,
                commits: int = 1) -> None:
        """Run one transaction (or ``commits`` of them). The table stays known complete if it was at
        ``read_at`` (``complete_at``) and nothing but these transactions committed since."""
        try:
            transaction()
        except BaseException:
            self._complete_at = None if self._generation() != read_at else self._complete_at
            raise
        after = self._generation()
        nothing_else = read_at is not None and after is not None and complete_at == read_at and after - read_at <= commits
        self._complete_at = after if nothing_else else None

    def _read(self) -> TableState | None:
        try:
            return parse_table(self._nft.run_json(f"list table {QUALIFIED}"))
        except libnftables.NftError:
            return None  # no such table

    def _generation(self) -> int | None:
        try:
            if self._generation_socket is None:
                self._generation_socket = nfnetlink.open_socket()
                self._generation_socket.settimeout(GENERATION_REPLY_SECONDS)
            self._sequence = self._sequence % 0x7FFFFFFF + 1
            return nfhandles.generation(self._generation_socket, self._sequence)
        except OSError:
            if self._generation_socket is not None:
                self._generation_socket.close()
                self._generation_socket = None
            return None


def repair(state: TableState | None, add: Iterable[Element], remove: Iterable[Element]) -> list[str]:
    """One transaction that makes these elements right against the table as read: its skeleton where
    something is missing, ``remove`` deleted where present, ``add`` added where missing, after deleting
    an element of the same key with another value."""
    if state is not None and (misshapen := state.misshapen_sets()):
        raise libnftables.NftError(f"nftables table {QUALIFIED} has sets of another shape ({', '.join(misshapen)}): "
                                   "restart muslind to recreate it")
    present = {(e.set, e.key): e for e in state.elements} if state is not None else {}
    add, remove = set(add), set(remove)
    stale = {present[(e.set, e.key)] for e in add if (e.set, e.key) in present and present[(e.set, e.key)] != e}
    gone = {present[(e.set, e.key)] for e in remove if (e.set, e.key) in present}
    missing = {e for e in add if present.get((e.set, e.key)) != e}
    lines = skeleton(state) if state is not None else full_table()
    return [*lines, *delete_elements(stale | gone), *add_elements(missing)]


def remove_iptables_backend(networks: list[BridgeSpec]) -> int:
    """Delete what the iptables backend wrote (its chains, the jumps into them, its masquerade and
    hairpin rules in POSTROUTING, older layouts' rules in FORWARD) in one iptables-restore batch;
    returns how many rules and chains that was. Nothing is run when there are none."""
    state = iptables.read_all()
    subnets = [n.subnet for n in networks]
    ours = {iptables.normalize(f"-A {chain} {spec}") for table, chain, spec, _ in
            [r for n in networks for r in bridge_rules(n)] + legacy_rules(networks)}
    batch = iptables.Batch()
    removed = 0
    for table, chains in OWN_CHAINS.items():
        current = state.get(table)
        if current is None:
            continue
        for rule in current.rules:
            words = rule.split()
            if words[1] in chains:
                continue  # flushed with its chain below
            target = words[words.index("-j") + 1] if "-j" in words else ""
            if target in chains or iptables.normalize(rule) in ours or _hairpin(words, subnets):
                batch.add(table, "-D" + rule[2:])
                removed += 1
        present = [chain for chain in chains if chain in current.chains]
        if "MUSLIN-USER" in present and len(current.rules_in("MUSLIN-USER")) > 1:
            log.warning("removing chain MUSLIN-USER and its rules: with the nftables backend, rules "
                        "of your own go in chain user-forward of table %s", QUALIFIED)
        # Every chain emptied before any is deleted: they jump to one another.
        for chain in present:
            batch.add(table, f"-F {chain}")
        for chain in present:
            batch.add(table, f"-X {chain}")
        removed += len(present)
    if batch:
        batch.apply()
    return removed


def _hairpin(words: list[str], subnets: list[IPv4Network]) -> bool:
    """A port's hairpin rule of the iptables backend: ``-s C/32 -d C/32 ... -j MASQUERADE`` with C in
    one of our networks."""
    if words[1] != "POSTROUTING" or words[-1] != "MASQUERADE" or "-s" not in words or "-d" not in words:
        return False
    source, dest = words[words.index("-s") + 1], words[words.index("-d") + 1]
    if source != dest or not source.endswith("/32"):
        return False
    address = IPv4Address(source[:-3])
    return any(address in subnet for subnet in subnets)
