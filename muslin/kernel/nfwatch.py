"""Notice changes to the nf_tables ruleset of the current network namespace.

Every committed nf_tables transaction (iptables-nft, nft, firewalld, a reload that flushes everything) is
announced to the NFNLGRP_NFTABLES multicast group. The watcher only needs to know *that* the IPv4
tables changed, never how, so it is a bare netlink socket whose messages are only read as far as their
family; the caller then diffs what it wants against what the kernel holds. iptables-legacy announces
nothing.
"""

from __future__ import annotations

import errno

from .netlink import messages
from .nfnetlink import NFPROTO_IPV4, open_socket

NFNLGRP_NFTABLES = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1


class RulesetChanges:
    def __init__(self) -> None:
        self._sock = open_socket()
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> int:
        """Read every pending notification; returns how many concern the IPv4 tables (iptables'), the
        others (ip6tables, arp, bridge, inet, the generation notice of each commit) are skipped. An
        overrun (ENOBUFS) counts as one: changes were missed, which is all a caller needs to know."""
        count = 0
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return count
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:  # ENOBUFS: the kernel dropped notifications for us
                    raise
                count += 1
                continue
            # The body starts with the nfgenmsg, whose first byte is the family.
            count += sum(1 for _, _, _, body in messages(data) if body[:1] == bytes([NFPROTO_IPV4]))

    def close(self) -> None:
        self._sock.close()
