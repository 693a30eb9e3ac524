"""The firewall behind one small interface, with an iptables implementation.

A network's (or a port's) rules are a pure function of the model: ``bridge_rules`` and ``port_rules``
return the lines Docker's bridge driver would program, in chains of our own (MUSLIN, MUSLIN-USER,
MUSLIN-FORWARD, MUSLIN-ISOLATION-STAGE-1/2). Setting up adds the missing lines (one iptables-restore
transaction), tearing down deletes the present ones (one nf_tables transaction, see ``nfhandles``), so
both are idempotent and a reconcile after a crash is the same call as the first setup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

from muslin.kernel import iptables, libnftables, netns, nfhandles, nfnetlink

# (table, chain, rule spec without "-A CHAIN", position): "first" inserts at the top of the chain,
# "append" adds at the end, and the "head" rules of a chain are kept as its very first rules, in the
# order listed (the FORWARD jumps: MUSLIN-USER must be seen before MUSLIN-FORWARD accepts anything).
Rule = tuple[str, str, str, str]

OWN_CHAINS: dict[str, list[str]] = {
    "nat": ["MUSLIN"],
    "filter": ["MUSLIN", "MUSLIN-USER", "MUSLIN-FORWARD", "MUSLIN-ISOLATION-STAGE-1", "MUSLIN-ISOLATION-STAGE-2"],
}

# The nftables backend's table (``nft_ruleset``), which the iptables backend removes when it finds one.
NFTABLES_TABLE = ("ip", "muslin")


@dataclass(frozen=True)
class BridgeSpec:
    bridge: str
    subnet: IPv4Network
    masquerade: bool
    icc: bool
    internal: bool


@dataclass(frozen=True)
class PortSpec:
    bridge: str
    proto: str
    host_ip: str  # "" or 0.0.0.0 = any
    host_port: int
    container_ip: IPv4Address
    container_port: int


def base_rules() -> list[Rule]:
    """The jumps into our chains and their default RETURNs, shared by every network."""
    return [
        ("nat", "PREROUTING", "-m addrtype --dst-type LOCAL -j MUSLIN", "append"),
        # Unlike Docker, 127.0.0.0/8 is not excluded: published ports answer on 127.0.0.1 through
        # route_localnet + MASQUERADE instead of a userland proxy per port (see bridge_rules).
        ("nat", "OUTPUT", "-m addrtype --dst-type LOCAL -j MUSLIN", "append"),
        # Both jumps go to the top of FORWARD (MUSLIN-USER first, as DOCKER-USER), so a host chain that
        # ends in a catch-all REJECT cannot shadow the networks' rules; Docker 28 has DOCKER-FORWARD for this.
        ("filter", "FORWARD", "-j MUSLIN-USER", "head"),
        ("filter", "FORWARD", "-j MUSLIN-FORWARD", "head"),
        ("filter", "MUSLIN-FORWARD", "-j MUSLIN-ISOLATION-STAGE-1", "head"),
        ("filter", "MUSLIN-USER", "-j RETURN", "append"),
        ("filter", "MUSLIN-ISOLATION-STAGE-1", "-j RETURN", "append"),
        ("filter", "MUSLIN-ISOLATION-STAGE-2", "-j RETURN", "append"),
    ]


def bridge_rules(spec: BridgeSpec) -> list[Rule]:
    br, net = spec.bridge, spec.subnet
    if spec.internal:
        # No way in or out: only traffic that stays on the bridge is allowed.
        rules: list[Rule] = [
            ("filter", "MUSLIN-ISOLATION-STAGE-1", f"! -s {net} -o {br} -j DROP", "first"),
            ("filter", "MUSLIN-ISOLATION-STAGE-1", f"! -d {net} -i {br} -j DROP", "first"),
        ]
    else:
        # No "-i <bridge> -j RETURN" in nat MUSLIN (Docker has it only with its userland proxy): without a
        # proxy, containers reach published ports, their own included, through the same DNAT rules.
        # Per-network forwarding rules are appended to MUSLIN-FORWARD, after its isolation jump.
        rules = [
            ("filter", "MUSLIN-FORWARD", f"-o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "append"),
            ("filter", "MUSLIN-FORWARD", f"-o {br} -j MUSLIN", "append"),
            ("filter", "MUSLIN-FORWARD", f"-i {br} ! -o {br} -j ACCEPT", "append"),
            ("filter", "MUSLIN-ISOLATION-STAGE-1", f"-i {br} ! -o {br} -j MUSLIN-ISOLATION-STAGE-2", "first"),
            ("filter", "MUSLIN-ISOLATION-STAGE-2", f"-o {br} -j DROP", "first"),
        ]
        if spec.masquerade:
            rules.append(("nat", "POSTROUTING", f"-s {net} ! -o {br} -j MASQUERADE", "append"))
        # Host-originated traffic to a published port on 127.0.0.1 leaves with a loopback source; it has
        # to be rewritten to the bridge address or the container's reply would go nowhere.
        rules.append(("nat", "POSTROUTING", f"-o {br} -m addrtype --src-type LOCAL -j MASQUERADE", "append"))
    verdict = "ACCEPT" if spec.icc else "DROP"
    rules.append(("filter", "MUSLIN-FORWARD", f"-i {br} -o {br} -j {verdict}", "append"))
    return rules


def legacy_rules(networks: list[BridgeSpec]) -> list[Rule]:
    """What muslind before MUSLIN-FORWARD put straight into FORWARD: removed at start, or they would
    outlive their networks and keep an old policy (an ICC DROP, say) in force."""
    forwarding = [(t, "FORWARD", spec, pos) for n in networks
                  for t, chain, spec, pos in bridge_rules(n) if chain == "MUSLIN-FORWARD"]
    # The ICC verdict of either setting: it may have changed since that layout wrote it.
    either_icc = [("filter", "FORWARD", f"-i {n.bridge} -o {n.bridge} -j {verdict}", "append")
                  for n in networks for verdict in ("ACCEPT", "DROP")]
    return [("filter", "FORWARD", "-j MUSLIN-ISOLATION-STAGE-1", "first"), *forwarding, *either_icc]


def port_rules(p: PortSpec) -> list[Rule]:
    dest = f"-d {p.host_ip}/32 " if p.host_ip and p.host_ip != "0.0.0.0" else ""
    cip, proto = p.container_ip, p.proto
    return [
        ("nat", "MUSLIN",
         f"{dest}-p {proto} -m {proto} --dport {p.host_port} "
         f"-j DNAT --to-destination {cip}:{p.container_port}", "append"),
        # Hairpin: a container reaching its own published port comes back through the same bridge port.
        ("nat", "POSTROUTING",
         f"-s {cip}/32 -d {cip}/32 -p {proto} -m {proto} --dport {p.container_port} -j MASQUERADE", "append"),
        ("filter", "MUSLIN",
         f"-d {cip}/32 ! -i {p.bridge} -o {p.bridge} -p {proto} -m {proto} --dport {p.container_port} -j ACCEPT",
         "append"),
    ]


DNS_CHAIN = "MUSLIN-DNS"


@dataclass(frozen=True)
class DNSRedirect:
    """Inside a container's namespace: queries to ``address``:53 go to the embedded DNS's own ports."""

    address: str
    udp_port: int
    tcp_port: int


def dns_jump(address: str) -> Rule:
    return ("nat", "OUTPUT", f"-d {address}/32 -j {DNS_CHAIN}", "append")


def dns_redirect_rules(r: DNSRedirect) -> list[Rule]:
    # Replies go back through the same conntrack entry: no SNAT is needed.
    return [("nat", DNS_CHAIN, f"-p {proto} -m {proto} --dport 53 -j DNAT --to-destination {r.address}:{port}", "append")
            for proto, port in (("udp", r.udp_port), ("tcp", r.tcp_port))]


def dns_redirect_batch(redirect: DNSRedirect, add_jump: bool) -> iptables.Batch:
    """One transaction: the chain declared (which empties it, so a new start's ports replace the last
    ones), the jump into it added once (``add_jump``: the namespace lacks it), its DNATs."""
    batch = iptables.Batch()
    batch.add("nat", f":{DNS_CHAIN} - [0:0]")
    for table, chain, spec, _ in ([dns_jump(redirect.address)] if add_jump else []) + dns_redirect_rules(redirect):
        batch.add(table, f"-A {chain} {spec}")
    return batch


def dns_redirect_ports(rules: list[str], address: str) -> tuple[int, int]:
    """(UDP, TCP) ports that ``dns_redirect_rules`` lines (as iptables-save prints them) send queries
    to, 0 where there is none."""
    ports = {"udp": 0, "tcp": 0}
    for rule in rules:
        words = rule.split()
        if "-p" in words and "--to-destination" in words:
            proto = words[words.index("-p") + 1]
            target = words[words.index("--to-destination") + 1]
            host, _, port = target.rpartition(":")
            if proto in ports and host == address and port.isdigit():
                ports[proto] = int(port)
    return ports["udp"], ports["tcp"]


class SandboxFirewall:
    """Rules inside a container's own namespace: the embedded DNS's redirect (chain MUSLIN-DNS), kept
    whatever --iptables says about the host's firewall, as dockerd. Used from the engine's worker thread."""

    @staticmethod
    def read_dns_redirect(sandbox: str, address: str) -> tuple[DNSRedirect, bool]:
        """The redirect the namespace holds (ports 0 where none) and whether OUTPUT jumps to it."""
        with netns.entered(sandbox):
            nat = iptables.read("nat")
        udp_port, tcp_port = dns_redirect_ports(nat.rules_in(DNS_CHAIN), address)
        _, chain, spec, _ = dns_jump(address)
        return DNSRedirect(address, udp_port, tcp_port), nat.has(f"-A {chain} {spec}")

    @staticmethod
    def set_dns_redirect(sandbox: str, redirect: DNSRedirect, add_jump: bool) -> None:
        batch = dns_redirect_batch(redirect, add_jump)
        with netns.entered(sandbox):
            batch.apply()


class Firewall(Protocol):
    def intact(self) -> bool: ...
    def setup_network(self, spec: BridgeSpec) -> None: ...
    def teardown_network(self, spec: BridgeSpec) -> None: ...
    def add_port_forwards(self, ports: list[PortSpec]) -> None: ...
    def remove_port_forwards(self, ports: list[PortSpec]) -> None: ...
    def remove_rules_naming(self, ifname: str) -> None: ...
    def remove_legacy_rules(self, networks: list[BridgeSpec]) -> None: ...
    def ensure(self, networks: list[BridgeSpec], ports: list[PortSpec]) -> int: ...
    def commit_beside(self, commit: Callable[[], object], commits: int) -> None: ...
    def close(self) -> None: ...


class IptablesFirewall:
    """Applies rule lists as diffs against what the kernel holds, one transaction per call.

    Additions go through iptables-restore; deletions by nf_tables handle (``nfhandles``), which spares
    every removal an RCU grace period. Used from the engine's worker thread only.

    It also knows when nobody else has touched the ruleset: every committed nf_tables transaction bumps
    the ruleset's generation by one, so commits of ours that took it from a generation where our rules
    were complete, with nothing else committing in between, leave them complete (each call leaves them
    as the model then wants them). The firewall guard asks ``intact`` before its full check, which costs
    as much as there are rules.
    """

    def __init__(self) -> None:
        self._deleter = nfhandles.HandleDeleter()
        self._complete_at: int | None = None  # a generation at which every rule we want was in place

    def intact(self) -> bool:
        """Nothing but this firewall has committed since ``ensure`` last found or made every rule."""
        return self._complete_at is not None and self._deleter.generation() == self._complete_at

    def _commit(self, commit: Callable[[], object], read_at: int | None, commits: int,
                complete_at: int | None) -> None:
        """Run ``commit`` (at most ``commits`` nf_tables transactions: iptables-restore makes one per
        table) on a ruleset read at generation ``read_at``. The rules stay known complete if they were
        complete at ``read_at`` (``complete_at``) and nothing else committed until ours were done."""
        try:
            commit()
        except BaseException:
            self._complete_at = None  # whatever of it the kernel took, the guard's check will tell
            raise
        after = self._deleter.generation()
        nothing_else = (read_at is not None and after is not None and complete_at == read_at
                        and after - read_at <= commits)
        self._complete_at = after if nothing_else else None

    def close(self) -> None:
        self._deleter.close()

    def commit_beside(self, commit: Callable[[], object], commits: int) -> None:
        """Run another part of the engine's commit (at most ``commits`` nf_tables transactions) to rules
        of its own, none of ours: our rules stay known complete, so the guard has nothing to check."""
        self._commit(commit, self._deleter.generation(), commits, self._complete_at)

    def setup_network(self, spec: BridgeSpec) -> None:
        self._add(base_rules() + bridge_rules(spec))

    def teardown_network(self, spec: BridgeSpec) -> None:
        self._remove(bridge_rules(spec))

    def add_port_forwards(self, ports: list[PortSpec]) -> None:
        self._add([r for p in ports for r in port_rules(p)])

    def remove_port_forwards(self, ports: list[PortSpec]) -> None:
        self._remove([r for p in ports for r in port_rules(p)])

    def remove_legacy_rules(self, networks: list[BridgeSpec]) -> None:
        """Rules of older layouts, and the nftables backend's table (muslind ran with
        --firewall-backend nftables before this start)."""
        legacy = legacy_rules(networks)
        present = {iptables.normalize(line) for line in iptables.chain_rules("filter", "FORWARD")}
        if stale := [r for r in legacy if iptables.normalize(f"-A {r[1]} {r[2]}") in present]:
            self._remove(stale)
        if libnftables.available() and nfnetlink.table_exists(*NFTABLES_TABLE):
            libnftables.delete_table(*NFTABLES_TABLE)

    def ensure(self, networks: list[BridgeSpec], ports: list[PortSpec]) -> int:
        """Put back whatever rule of these networks and ports is missing or out of place, in one
        transaction; returns how many rules that wrote. 0: nothing was committed. ``networks`` and
        ``ports`` are all there are: afterwards the rules are known complete."""
        return self._add(base_rules() + [r for spec in networks for r in bridge_rules(spec)]
                         + [r for p in ports for r in port_rules(p)], everything=True)

    def remove_rules_naming(self, ifname: str) -> None:
        """Delete every rule that matches on this interface (-i/-o), in our chains and the built-in ones."""
        naming = []
        for table, current in iptables.read_all().items():
            for rule in current.rules:
                words = rule.split()
                if any(words[i] in ("-i", "-o") and words[i + 1] == ifname for i in range(len(words) - 1)):
                    naming.append((table, rule))
        self._delete(nfhandles.by_table(naming))

    def _add(self, rules: list[Rule], everything: bool = False) -> int:
        """Add the missing ones of ``rules``; ``everything``: they are all the rules we want, so once
        added the ruleset is complete."""
        added = 0
        batch = iptables.Batch()
        read_at = self._deleter.generation()
        state = iptables.read_all()
        for table in {r[0] for r in rules}:
            current = state.setdefault(table, iptables.Ruleset())
            for chain in OWN_CHAINS.get(table, []):
                if chain not in current.chains:
                    batch.add(table, f":{chain} - [0:0]")
            heads: dict[str, list[str]] = {}
            for t, chain, spec, position in rules:
                if t != table:
                    continue
                if position == "head":
                    heads.setdefault(chain, []).append(spec)
                    continue
                if current.has(f"-A {chain} {spec}"):
                    continue
                current.add(f"-A {chain} {spec}")  # a rule listed twice is added once
                batch.add(table, f"-I {chain} 1 {spec}" if position == "first" else f"-A {chain} {spec}")
                added += 1
            for chain, specs in heads.items():
                added += _pin_head(batch, table, chain, specs, current)
        complete_at = read_at if everything else self._complete_at
        if batch:
            self._commit(batch.apply, read_at, len(batch.tables()), complete_at)
        elif everything:
            self._complete_at = read_at  # all there as read
        return added

    def _remove(self, rules: list[Rule]) -> None:
        self._delete(nfhandles.by_table((table, f"-A {chain} {spec}") for table, chain, spec, _ in rules))

    def _delete(self, rules: dict[str, list[str]]) -> None:
        # One nf_tables transaction, or one per table when the deleter falls back to iptables-restore.
        read_at = self._deleter.generation()
        self._commit(lambda: self._deleter.delete(rules), read_at, len(rules), self._complete_at)


def _pin_head(batch: iptables.Batch, table: str, chain: str, specs: list[str], current: iptables.Ruleset) -> int:
    """Make ``specs`` the first rules of the chain, in order, when they are not already: a user's rule
    inserted above them, or a restore that found only one missing, must not reorder them. Returns how
    many rules were (re)inserted."""
    wanted = [iptables.normalize(f"-A {chain} {spec}") for spec in dict.fromkeys(specs)]
    present = [iptables.normalize(rule) for rule in current.rules_in(chain)]
    if present[:len(wanted)] == wanted:
        return 0
    for line in wanted:
        for _ in range(present.count(line)):
            batch.add(table, "-D" + line[2:])
    for line in reversed(wanted):
        batch.add(table, f"-I {chain} 1" + line[len(f"-A {chain}"):])
    return len(wanted)
