"""The agent's iptables rules, in chains of its own, each change one iptables-restore transaction.

nat: ``POSTROUTING -j MUSLIN-FLANNEL-POSTRTG`` masquerades traffic leaving the overlay (flannel's
FLANNEL-POSTRTG logic) when --ip-masq is on. filter: ``FORWARD -j MUSLIN-FLANNEL-FWD`` accepts overlay
traffic, so cross-host traffic flows even under a FORWARD policy of DROP. Declaring a chain in a
--noflush restore empties it, so every apply replaces the chain's content whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network

from muslin.kernel import iptables

NAT_CHAIN = "MUSLIN-FLANNEL-POSTRTG"
FORWARD_CHAIN = "MUSLIN-FLANNEL-FWD"
NAT_JUMP = f"-A POSTROUTING -j {NAT_CHAIN}"
FORWARD_JUMP = f"-A FORWARD -j {FORWARD_CHAIN}"
# kube-proxy marks packets it masquerades itself; flannel leaves them alone, and so do we.
KUBE_MASQ_MARK = "0x4000/0x4000"
MULTICAST = "224.0.0.0/4"


@dataclass(frozen=True)
class FirewallSpec:
    network: IPv4Network
    subnet: IPv4Network
    ip_masq: bool
    forward_rules: bool = True


def masquerade_rules(network: IPv4Network, subnet: IPv4Network) -> list[str]:
    n, s, c = str(network), str(subnet), NAT_CHAIN
    return [
        f"-A {c} -m mark --mark {KUBE_MASQ_MARK} -j RETURN",
        f"-A {c} -s {n} -d {n} -j RETURN",  # overlay to overlay: keep the source
        f"-A {c} -s {n} ! -d {MULTICAST} -j MASQUERADE --random-fully",  # overlay to the world
        f"-A {c} ! -s {n} -d {s} -j RETURN",  # the world to our containers
        f"-A {c} ! -s {n} -d {n} -j MASQUERADE --random-fully",  # the world to other hosts' containers
    ]


def forward_rules(network: IPv4Network) -> list[str]:
    return [f"-A {FORWARD_CHAIN} -s {network} -j ACCEPT", f"-A {FORWARD_CHAIN} -d {network} -j ACCEPT"]


@dataclass(frozen=True)
class _Part:
    table: str
    chain: str
    jump: str
    builtin_chain: str  # holds the jump to our chain, inserted at its top as flannel does


def _parts() -> tuple[_Part, _Part]:
    return (_Part("nat", NAT_CHAIN, NAT_JUMP, "POSTROUTING"), _Part("filter", FORWARD_CHAIN, FORWARD_JUMP, "FORWARD"))


def _wanted(spec: FirewallSpec, part: _Part) -> list[str] | None:
    """The chain's rules, or None when that part is switched off."""
    if part.table == "nat":
        return masquerade_rules(spec.network, spec.subnet) if spec.ip_masq else None
    return forward_rules(spec.network) if spec.forward_rules else None


def _remove_part(batch: iptables.Batch, part: _Part, current: iptables.Ruleset) -> None:
    for rule in current.rules:
        if iptables.normalize(rule) == part.jump:
            batch.add(part.table, "-D" + part.jump[2:])
    batch.add(part.table, f"-F {part.chain}")
    batch.add(part.table, f"-X {part.chain}")


def sync_batch(spec: FirewallSpec, nat: iptables.Ruleset, filter_: iptables.Ruleset) -> iptables.Batch:
    """The transaction taking the current tables to spec; empty when everything is in place."""
    batch = iptables.Batch()
    for part, current in zip(_parts(), (nat, filter_)):
        wanted = _wanted(spec, part)
        if wanted is None:
            if part.chain in current.chains:  # switched off since the last run (e.g. --ip-masq dropped)
                _remove_part(batch, part, current)
            continue
        in_place = (current.has(part.jump) and [iptables.normalize(r) for r in current.rules_in(part.chain)]
                    == [iptables.normalize(r) for r in wanted])
        if in_place:
            continue
        batch.add(part.table, f":{part.chain} - [0:0]")
        for rule in wanted:
            batch.add(part.table, rule)
        if not current.has(part.jump):
            batch.add(part.table, f"-I {part.builtin_chain} 1 -j {part.chain}")
    return batch


def apply(spec: FirewallSpec) -> None:
    """Install or repair our rules (the periodic resync calls this too: a no-op when all is in place)."""
    tables = iptables.read_all()  # one iptables-save for both tables: this runs every resync
    batch = sync_batch(spec, tables.get("nat", iptables.Ruleset()), tables.get("filter", iptables.Ruleset()))
    if batch:
        batch.apply()


def teardown_batch(nat: iptables.Ruleset, filter_: iptables.Ruleset) -> iptables.Batch:
    batch = iptables.Batch()
    for part, current in zip(_parts(), (nat, filter_)):
        if part.chain in current.chains:
            _remove_part(batch, part, current)
    return batch


def remove() -> None:
    """Remove our chains and the jumps to them (clean shutdown); a no-op when they are absent."""
    tables = iptables.read_all()
    batch = teardown_batch(tables.get("nat", iptables.Ruleset()), tables.get("filter", iptables.Ruleset()))
    if batch:
        batch.apply()
