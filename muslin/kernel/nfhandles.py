"""Deleting iptables rules by their nf_tables handle, over netlink sockets kept open.

Why not ``iptables-restore`` with ``-D`` lines: the kernel applies such a batch in about a millisecond,
but the process then closes its netfilter netlink socket, and closing one waits until the deleted
rules have been freed after an RCU grace period (10-25 ms here; see ``nft_rcv_nl_event``). Sockets
that stay open never pay that wait; the rules are gone from the ruleset as soon as the batch is
acknowledged either way.

iptables-nft keeps each iptables rule as one nf_tables rule, and ``iptables-save`` prints a chain's
rules in the kernel's order, so the n-th ``-A CHAIN`` line of a table is the n-th rule a dump of that
chain returns. A snapshot is only used when the ruleset generation is the same before and after it,
and the deletion batch carries that generation: the kernel refuses it (ERESTART) if anything changed
since, as iptables-nft's own batches do. A handle is only unique while its table lives, and a reload
that recreates the table could hand ours to someone else's rule.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from . import iptables
from .netlink import (NLA_HEADER, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ERROR, attribute, attributes,
                      error_code, header, messages)
from .nfnetlink import (NFGENMSG, NFNL_SUBSYS_NFTABLES, NetlinkError, nftables_message, open_socket, request,
                        string_attribute)

log = logging.getLogger(__name__)

NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFNL_BATCH_GENID = 1
NFT_MSG_GETRULE, NFT_MSG_DELRULE, NFT_MSG_GETGEN = 7, 8, 16
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS = 1, 2, 3, 4
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME = 1
NFTA_GEN_ID = 1
READ_REPLY_SECONDS = 5.0
BATCH_REPLY_SECONDS = 5.0
SNAPSHOT_ATTEMPTS = 3
# The expressions iptables-nft builds from iptables syntax. A rule with others (a set lookup, say) was
# written with nft, and iptables-save may print it lossily, as if it were a simpler rule; ``iptables -D``
# with that text would delete it. Matching skips such rules, so only rules iptables wrote are deleted.
IPTABLES_EXPRESSIONS = frozenset({"meta", "cmp", "payload", "bitwise", "range", "limit", "immediate", "match",
                                  "target", "counter"})


IPTABLES_EXPRESSION_NAMES = frozenset(name.encode() for name in IPTABLES_EXPRESSIONS)


@dataclass(frozen=True)
class DumpedRule:
    handle: int
    from_iptables: bool


class Unmappable(Exception):
    """The iptables view and the nf_tables view of a chain do not line up (iptables-legacy, rules
    iptables cannot show, or a ruleset that kept changing): the caller falls back to iptables-restore."""


class Refused(Exception):
    """The kernel refused the deletion batch as a whole: ERESTART (the ruleset changed since the
    snapshot) or ENOENT (a rule was deleted meanwhile)."""


@dataclass(frozen=True)
class Snapshot:
    generation: int
    handles: list[tuple[str, str, int]]  # (table, chain, handle) of each rule to delete


class HandleDeleter:
    """Deletes ``-A CHAIN spec`` rules of the IPv4 tables in one nf_tables transaction.

    The sockets belong to the network namespace of the thread that first uses them; use one deleter
    from one thread.
    """

    def __init__(self) -> None:
        self._reader: socket.socket | None = None  # generation and rule dumps
        self._writer: socket.socket | None = None  # the batch, whose replies we read ourselves
        self._sequence = 0
        self._unavailable = False  # no nf_tables here (iptables-legacy only): always iptables-restore

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def generation(self) -> int | None:
        """The ruleset's generation now; None where nf_tables cannot be asked (iptables-legacy)."""
        if self._unavailable:
            return None
        try:
            return self._generation()
        except OSError as exc:
            self._unavailable = exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP)
            self.close()
            return None

    def delete(self, rules: dict[str, list[str]]) -> None:
        """Delete each listed rule (first match, as ``iptables -D``); rules not present are skipped.
        Falls back to one iptables-restore batch when the handles cannot be mapped or the kernel
        refuses the batch."""
        rules = {table: lines for table, lines in rules.items() if lines}
        if not rules:
            return
        try:
            if self._unavailable:
                raise Unmappable("nf_tables cannot be asked here")
            snapshot = self._snapshot(rules)
            if snapshot.handles:
                self._delete_handles(snapshot)
        except (Unmappable, Refused) as exc:
            log.debug("deleting through iptables-restore: %s", exc)
            self._delete_with_restore(rules)

    # -- the snapshot ------------------------------------------------------------------------------
    def _snapshot(self, rules: dict[str, list[str]]) -> Snapshot:
        chains = sorted({(table, line.split()[1]) for table, lines in rules.items() for line in lines})
        try:
            for _ in range(SNAPSHOT_ATTEMPTS):
                before = self._generation()
                state = iptables.read_all()
                dumped = {key: self._chain_rules(*key) for key in chains}
                if self._generation() == before:
                    return Snapshot(before, _match(rules, state, dumped))
        except OSError as exc:  # NetlinkError included
            code = exc.errno
            # A kernel without nf_tables (or netfilter netlink) says so every time: stop asking.
            self._unavailable = code in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP)
            self.close()
            raise Unmappable(f"nf_tables cannot be asked: {exc}") from None
        raise Unmappable("the ruleset kept changing while it was read")

    def _generation(self) -> int:
        return generation(self._read_socket(), self._next_sequence())

    def _chain_rules(self, table: str, chain: str) -> list[DumpedRule]:
        sequence = self._next_sequence()
        message = nftables_message(NFT_MSG_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, sequence,
                                   string_attribute(NFTA_RULE_TABLE, table) + string_attribute(NFTA_RULE_CHAIN, chain))
        try:
            return [_dumped_rule(body) for body in request(self._read_socket(), message, sequence)]
        except NetlinkError as exc:
            if exc.errno == errno.ENOENT:  # no such table or chain in nf_tables
                return []
            raise

    def _read_socket(self) -> socket.socket:
        if self._reader is None:
            self._reader = open_socket()
            self._reader.settimeout(READ_REPLY_SECONDS)
        return self._reader

    # -- the deletion ------------------------------------------------------------------------------
    def _delete_handles(self, snapshot: Snapshot) -> None:
        """One batch: BEGIN (with the snapshot's generation), a DELRULE per handle, END. Every DELRULE
        asks for an ack, and the kernel answers each one, also when it aborts the batch; a batch refused
        for its generation gets one error, on BEGIN, and nothing else."""
        begin = self._next_sequence()
        parts = [_batch_marker(NFNL_MSG_BATCH_BEGIN, begin, snapshot.generation)]
        waiting = set()
        for table, chain, handle in snapshot.handles:
            sequence = self._next_sequence()
            parts.append(nftables_message(NFT_MSG_DELRULE, NLM_F_REQUEST | NLM_F_ACK, sequence,
                                          string_attribute(NFTA_RULE_TABLE, table)
                                          + string_attribute(NFTA_RULE_CHAIN, chain)
                                          + attribute(NFTA_RULE_HANDLE, struct.pack(">Q", handle))))
            waiting.add(sequence)
        parts.append(_batch_marker(NFNL_MSG_BATCH_END, self._next_sequence()))
        sock = self._write_socket()
        try:
            sock.send(b"".join(parts))
            refusal = 0
            while waiting:
                for sequence, error in _errors_in(sock.recv(65536)):
                    if sequence == begin and error:
                        raise Refused(errno.errorcode.get(error, str(error)))
                    if sequence in waiting:
                        waiting.discard(sequence)
                        refusal = refusal or error
            if refusal:
                raise Refused(errno.errorcode.get(refusal, str(refusal)))
        except Refused:
            raise
        except OSError as exc:  # no answer in time, or the socket broke: start afresh next time
            self.close()
            raise Refused(f"no answer to the batch: {exc}") from None

    def _write_socket(self) -> socket.socket:
        if self._writer is None:
            self._writer = open_socket()
            self._writer.settimeout(BATCH_REPLY_SECONDS)
        return self._writer

    def _next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    def _delete_with_restore(self, rules: dict[str, list[str]]) -> None:
        state = iptables.read_all()
        batch = iptables.Batch()
        for table, lines in rules.items():
            # As many -D lines as copies present, never more: one too many fails the whole batch.
            present = Counter(iptables.normalize(r) for r in state.get(table, iptables.Ruleset()).rules)
            for line in lines:
                if present[iptables.normalize(line)] > 0:
                    present[iptables.normalize(line)] -= 1
                    batch.add(table, "-D" + line[2:])
        batch.apply()


def _batch_marker(kind: int, sequence: int, generation: int | None = None) -> bytes:
    attrs = struct.pack("=HH", 8, NFNL_BATCH_GENID) + struct.pack(">I", generation) if generation is not None else b""
    body = NFGENMSG.pack(0, 0, socket.htons(NFNL_SUBSYS_NFTABLES)) + attrs
    return header(len(body), kind, NLM_F_REQUEST, sequence) + body


def _errors_in(data: bytes) -> Iterable[tuple[int, int]]:
    """(sequence, errno) of each NLMSG_ERROR message in a datagram; errno 0 is an ack."""
    for kind, _, sequence, body in messages(data):
        if kind == NLMSG_ERROR and len(body) >= 4:
            yield sequence, error_code(body)


def generation(sock: socket.socket, sequence: int) -> int:
    """The ruleset's generation: every committed nf_tables transaction bumps it by one."""
    message = nftables_message(NFT_MSG_GETGEN, NLM_F_REQUEST, sequence, family=socket.AF_UNSPEC)
    for body in request(sock, message, sequence):
        for kind, payload in attributes(body):
            if kind == NFTA_GEN_ID:
                return struct.unpack(">I", payload[:4])[0]
    raise OSError(errno.EPROTO, "the kernel's generation reply holds no generation")


def _dumped_rule(body: bytes) -> DumpedRule:
    """The handle of a dumped rule and whether iptables could have written it, by its expressions'
    names. A plain loop over the attribute headers: a chain of a thousand rules is read for every
    deletion in it, and this is most of that read."""
    handle, from_iptables = 0, True
    unpack, end, offset = NLA_HEADER.unpack_from, len(body), 0
    while offset + 4 <= end:
        length, kind = unpack(body, offset)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        if kind == NFTA_RULE_HANDLE:
            handle = int.from_bytes(body[offset + 4:offset + 12], "big")
        elif kind == NFTA_RULE_EXPRESSIONS:
            element, elements_end = offset + 4, offset + length
            while element + 4 <= elements_end and from_iptables:
                element_length, _ = unpack(body, element)
                if element_length < 4:
                    break
                # The kernel puts each expression's name first (NFTA_EXPR_NAME).
                name_length, name_kind = unpack(body, element + 4)
                if name_kind & NLA_TYPE_MASK == NFTA_EXPR_NAME:
                    name = body[element + 8:element + 4 + name_length].rstrip(b"\0")
                    from_iptables = name in IPTABLES_EXPRESSION_NAMES
                element += (element_length + 3) & ~3
        offset += (length + 3) & ~3
    return DumpedRule(handle, from_iptables)


def _match(rules: dict[str, list[str]], state: dict[str, iptables.Ruleset],
           dumped: dict[tuple[str, str], list[DumpedRule]]) -> list[tuple[str, str, int]]:
    """(table, chain, handle) of each wanted rule that is present, by its position in its chain."""
    out: list[tuple[str, str, int]] = []
    for table, lines in rules.items():
        current = state.get(table, iptables.Ruleset())
        taken: set[int] = set()
        chains: dict[str, list[str]] = {}
        for line in lines:
            chain = line.split()[1]
            if chain not in chains:
                chains[chain] = [iptables.normalize(r) for r in current.rules_in(chain)]
            in_chain = chains[chain]
            kernel = dumped[(table, chain)]
            if len(in_chain) != len(kernel):
                raise Unmappable(f"{table} {chain}: iptables shows {len(in_chain)} rules, "
                                 f"nf_tables holds {len(kernel)}")
            wanted = iptables.normalize(line)
            position = next((i for i, r in enumerate(in_chain)
                             if r == wanted and kernel[i].from_iptables and kernel[i].handle not in taken), None)
            if position is None:
                if wanted in in_chain:
                    log.debug("%s %r: only rules written with nft print like it; none deleted", table, line)
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
