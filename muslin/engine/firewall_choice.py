"""Which firewall backend muslind runs: ``--firewall-backend`` when given, else nftables wherever it can
work (a change then costs the same few set elements whatever else exists, where iptables' grows with
the ruleset), iptables where it cannot.

nftables can work when libnftables loads (the table and its rules are written through it) and this
namespace's kernel answers nf_tables (the elements are written over netlink): one request for the
ruleset's generation, which a kernel without nf_tables (or without nfnetlink) refuses. And when
iptables' FORWARD would not drop what ``table ip muslin`` accepts: an accept in one nf_tables table
does not stop another's drop, so a FORWARD policy of DROP (dockerd sets one) or a catch-all DROP or
REJECT rule there (a host firewall's) would cut every container off. The iptables backend puts its
jumps at the top of FORWARD, before such rules, so the default stays iptables there.
"""

from __future__ import annotations

from dataclasses import dataclass

from muslin.kernel import iptables, libnftables, nfhandles, nfnetlink

IPTABLES, NFTABLES = "iptables", "nftables"
BACKENDS = (IPTABLES, NFTABLES)
PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class Choice:
    backend: str
    reason: str  # for the start's log line
    warning: str | None = None  # a given nftables that iptables' FORWARD will undo


def iptables_forward_drops() -> str | None:
    """What in iptables' FORWARD drops every forwarded packet it sees (its policy, or a rule with no
    match), None when nothing does or iptables cannot be asked."""
    try:
        policy, rules = iptables.builtin_chain("filter", "FORWARD")
    except iptables.IptablesError:
        return None
    if policy == "DROP":
        return "iptables' FORWARD policy is DROP"
    for rule in rules:
        words = rule.split()
        if words[2:3] == ["-j"] and words[3:4] in (["DROP"], ["REJECT"]):
            return f"iptables' FORWARD has '{rule}'"
    return None


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
        drops = iptables_forward_drops()
        warning = (f"{drops}: it drops forwarded traffic that table ip muslin accepts (containers' egress, "
                   "published ports); accept it there, or use --firewall-backend iptables") if drops else None
        return Choice(NFTABLES, "--firewall-backend nftables", warning)
    if unavailable:
        return Choice(IPTABLES, f"the default nftables cannot work here: {unavailable}")
    if drops := iptables_forward_drops():
        return Choice(IPTABLES, f"the default nftables would not forward: {drops}, which drops what "
                                "table ip muslin accepts; the iptables backend's rules go before it")
    return Choice(NFTABLES, "the default: nf_tables and libnftables are available")
