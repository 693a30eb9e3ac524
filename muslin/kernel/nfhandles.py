"""Deleting iptables rules by their nf_tables handle, over one netlink socket kept open.

Why not ``iptables-restore`` with ``-D`` lines: the kernel applies such a batch in about a millisecond,
but the process then closes its netfilter netlink socket, and closing one waits until the deleted
rules have been freed after an RCU grace period (10-25 ms here; see ``nft_rcv_nl_event``). A socket
that stays open never pays that wait; the rules are gone from the ruleset as soon as the batch is
acknowledged either way.

iptables-nft keeps each iptables rule as one nf_tables rule, and ``iptables-save`` prints a chain's
rules in the kernel's order, so the n-th ``-A CHAIN`` line of a table is the n-th rule a dump of that
chain returns. A snapshot is only used when the ruleset generation is the same before and after it;
handles never change or get reused, so the deletion is exact even if others change the ruleset after.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from collections.abc import Iterable

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES, nfgen_msg
from pyroute2.netlink.nfnetlink.nftsocket import (
    NFT_MSG_DELRULE,
    NFT_MSG_GETGEN,
    NFT_MSG_GETRULE,
    NFTSocket,
    nft_rule_msg,
)

from . import iptables

log = logging.getLogger(__name__)

NFPROTO_IPV4 = 2
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
SNAPSHOT_ATTEMPTS = 3
# The expressions iptables-nft builds from iptables syntax. A rule with others (a set lookup, say) was
# written with nft, and iptables-save may print it lossily, as if it were a simpler rule; ``iptables -D``
# with that text would delete it. Matching skips such rules, so only rules iptables wrote are deleted.
IPTABLES_EXPRESSIONS = frozenset({"meta", "cmp", "payload", "bitwise", "immediate", "match", "target", "counter"})


@dataclass(frozen=True)
class DumpedRule:
    handle: int
    from_iptables: bool


class Unmappable(Exception):
    """The iptables view and the nf_tables view of a chain do not line up (iptables-legacy, rules
    iptables cannot show, or a ruleset that kept changing): the caller falls back to iptables-restore."""


class HandleDeleter:
    """Deletes ``-A CHAIN spec`` rules of the IPv4 tables in one nf_tables transaction.

    The socket belongs to the network namespace of the thread that first uses it; use one deleter from
    one thread.
    """

    def __init__(self) -> None:
        self._sock: NFTSocket | None = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def delete(self, rules: dict[str, list[str]]) -> None:
        """Delete each listed rule (first match, as ``iptables -D``); rules not present are skipped.
        Falls back to one iptables-restore batch when the handles cannot be mapped."""
        rules = {table: lines for table, lines in rules.items() if lines}
        if not rules:
            return
        try:
            handles = self._handles_of(rules)
        except Unmappable as exc:
            log.debug("deleting through iptables-restore: %s", exc)
            self._delete_with_restore(rules)
            return
        if handles:
            try:
                self._delete_handles(handles)
            except NetlinkError as exc:
                # ENOENT: someone removed one of them between our snapshot and the batch, which the
                # kernel then refused as a whole. Diff again and let iptables-restore do the rest.
                log.debug("handle deletion refused (%s); deleting through iptables-restore", exc)
                self._delete_with_restore(rules)

    # -- the snapshot ------------------------------------------------------------------------------
    def _handles_of(self, rules: dict[str, list[str]]) -> list[tuple[str, str, int]]:
        chains = sorted({(table, line.split()[1]) for table, lines in rules.items() for line in lines})
        for _ in range(SNAPSHOT_ATTEMPTS):
            before = self._generation()
            state = iptables.read_all()
            dumped = {key: self._chain_rules(*key) for key in chains}
            if self._generation() == before:
                return _match(rules, state, dumped)
        raise Unmappable("the ruleset kept changing while it was read")

    def _generation(self) -> int:
        reply = self._socket().request_get(nfgen_msg(), NFT_MSG_GETGEN, msg_flags=NLM_F_REQUEST)
        return int(reply[0].get_attr("NFTA_GEN_ID"))

    def _chain_rules(self, table: str, chain: str) -> list[DumpedRule]:
        msg = nft_rule_msg()
        msg["attrs"] = [("NFTA_RULE_TABLE", table), ("NFTA_RULE_CHAIN", chain)]
        try:
            dump = self._socket().request_get(msg, NFT_MSG_GETRULE, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:  # no such table or chain in nf_tables
                return []
            raise
        return [DumpedRule(int(r.get_attr("NFTA_RULE_HANDLE")),
                           {e.get_attr("NFTA_EXPR_NAME") for e in r.get_attr("NFTA_RULE_EXPRESSIONS") or []}
                           <= IPTABLES_EXPRESSIONS)
                for r in dump]

    # -- the deletion ------------------------------------------------------------------------------
    def _delete_handles(self, handles: list[tuple[str, str, int]]) -> None:
        messages = [_batch_marker(NFNL_MSG_BATCH_BEGIN)]
        for table, chain, handle in handles:
            msg = nft_rule_msg()
            msg["attrs"] = [("NFTA_RULE_TABLE", table), ("NFTA_RULE_CHAIN", chain), ("NFTA_RULE_HANDLE", handle)]
            msg["header"]["type"] = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELRULE
            msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
            msg["nfgen_family"] = NFPROTO_IPV4
            messages.append(msg)
        messages.append(_batch_marker(NFNL_MSG_BATCH_END))
        # Each DELRULE asks for an ack, so a refused batch (the kernel applies all or nothing) raises.
        self._socket().nlm_request_batch(messages)

    def _delete_with_restore(self, rules: dict[str, list[str]]) -> None:
        state = iptables.read_all()
        batch = iptables.Batch()
        for table, lines in rules.items():
            current = state.get(table, iptables.Ruleset())
            for line in lines:
                if current.has(line):
                    batch.add(table, "-D" + line[2:])
        batch.apply()

    def _socket(self) -> NFTSocket:
        if self._sock is None:
            self._sock = NFTSocket(nfgen_family=NFPROTO_IPV4)
        return self._sock


def _batch_marker(kind: int) -> nfgen_msg:
    msg = nfgen_msg()
    msg["res_id"] = NFNL_SUBSYS_NFTABLES
    msg["header"]["type"] = kind
    msg["header"]["flags"] = NLM_F_REQUEST
    return msg


def _match(rules: dict[str, list[str]], state: dict[str, iptables.Ruleset],
           dumped: dict[tuple[str, str], list[DumpedRule]]) -> list[tuple[str, str, int]]:
    """(table, chain, handle) of each wanted rule that is present, by its position in its chain."""
    out: list[tuple[str, str, int]] = []
    for table, lines in rules.items():
        current = state.get(table, iptables.Ruleset())
        taken: set[int] = set()
        for line in lines:
            chain = line.split()[1]
            in_chain = [iptables.normalize(r) for r in current.rules_in(chain)]
            kernel = dumped[(table, chain)]
            if len(in_chain) != len(kernel):
                raise Unmappable(f"{table} {chain}: iptables shows {len(in_chain)} rules, nf_tables holds {len(kernel)}")
            wanted = iptables.normalize(line)
            position = next((i for i, r in enumerate(in_chain)
                             if r == wanted and kernel[i].from_iptables and kernel[i].handle not in taken), None)
            if position is None:
                continue
            taken.add(kernel[position].handle)
            out.append((table, chain, kernel[position].handle))
    return out


def by_table(rules: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Group (table, "-A CHAIN spec") pairs by table."""
    out: dict[str, list[str]] = {}
    for table, line in rules:
        out.setdefault(table, []).append(line)
    return out
