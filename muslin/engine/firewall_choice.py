"""Which firewall backend muslind runs: ``--firewall-backend`` when given, else nftables wherever it can
work (a change then costs the same few set elements whatever else exists, where iptables' grows with
the ruleset), iptables where it cannot.

nftables can work when libnftables loads (the table and its rules are written through it) and this
namespace's kernel answers nf_tables (the elements are written over netlink): one request for the
ruleset's generation, which a kernel without nf_tables (or without nfnetlink) refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from muslin.kernel import libnftables, nfhandles, nfnetlink

IPTABLES, NFTABLES = "iptables", "nftables"
BACKENDS = (IPTABLES, NFTABLES)
PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class Choice:
    backend: str
    reason: str  # for the start's log line


def nftables_unavailable() -> str | None:
    """Why the nftables backend cannot work here, None when it can."""
    if not libnftables.available():
        return f"{libnftables.LIBRARY} cannot be loaded (install libnftables1)"
    try:
        sock = nfnetlink.open_socket()
    except OSError as exc:
        return f"the kernel has no netfilter netlink ({exc.strerror or exc})"
    try:
        sock.settimeout(PROBE_SECONDS)
        nfhandles.generation(sock, 1)
    except OSError as exc:  # a timeout included
        return f"the kernel does not answer nf_tables ({exc.strerror or exc})"
    finally:
        sock.close()
    return None


def choose(requested: str) -> Choice:
    """The backend for ``--firewall-backend requested`` ("" when not given). ValueError when nftables
    is asked for where it cannot work, with the reason."""
    if requested == IPTABLES:
        return Choice(IPTABLES, "--firewall-backend iptables")
    unavailable = nftables_unavailable()
    if requested == NFTABLES:
        if unavailable:
            raise ValueError(f"firewall-backend is set to nftables, but {unavailable}; "
                             "use --firewall-backend iptables")
        return Choice(NFTABLES, "--firewall-backend nftables")
    if unavailable:
        return Choice(IPTABLES, f"the default nftables cannot work here: {unavailable}")
    return Choice(NFTABLES, "the default: nf_tables and libnftables are available")
