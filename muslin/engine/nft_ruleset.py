"""The nftables backend's ruleset, as pure functions of the model: ``table ip muslin``.

The same policy as ``firewall.bridge_rules`` / ``port_rules`` (Docker's bridge driver), laid out so
that the rules never change: they are written once, and every network and published port is a few
ELEMENTS of named sets and maps that the rules look up. Adding or removing a network or a port is then
a handful of element changes in one transaction, whatever else exists, and ``nft list ruleset`` shows
where each port goes (``dnat-any-address``: ``tcp . 8080 : 172.17.0.2 . 80``).

Docker 29's nftables backend (``table ip docker-bridges``) has the same base chains (nat prerouting,
output and postrouting, filter forward) but a chain per network and a rule per port; here the
per-network and per-port state are set elements instead:

- forward: ``user-forward`` first (what MUSLIN-USER is to the iptables backend: the user's chain,
  never written by muslind); internal networks let nothing in or out of their subnet; traffic that
  stays on a bridge gets its network's ICC verdict (``same-bridge``, keyed ``iif . oif``, so only a
  packet whose two interfaces are that bridge matches: nf_tables cannot compare two interfaces
  otherwise); every other bridge-to-bridge packet is dropped (isolation); replies, published ports
  and egress are accepted.
- nat: addresses of the host (``fib daddr type local``, 127.0.0.1 included: route_localnet +
  masquerade, no userland proxy) DNAT through ``dnat-by-address`` or ``dnat-any-address``; hairpin,
  loopback-sourced and outgoing traffic is masqueraded.

An ``accept`` here ends this table's chain only: a DROP policy in iptables' FORWARD still drops (as
with Docker's nftables backend).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from muslin.kernel import nftsets

from .firewall import NFTABLES_TABLE, BridgeSpec, PortSpec

FAMILY, TABLE = NFTABLES_TABLE
QUALIFIED = f"{FAMILY} {TABLE}"
NO_ICC_CHAIN = "same-bridge-no-icc"
USER_CHAIN = "user-forward"


@dataclass(frozen=True)
class NamedSet:
    """A set (``data`` None) or a map of the table; ``key`` and ``data`` are nft type names."""

    name: str
    key: tuple[str, ...]
    comment: str
    data: str | None = None
    interval: bool = False

    def declaration(self) -> str:
        parts = [f"type {' . '.join(self.key)}" + (f" : {self.data}" if self.data else "")]
        if self.interval:
            parts.append("flags interval")
        parts.append(f'comment "{self.comment}"')
        kind = "map" if self.data else "set"
        return f"add {kind} {QUALIFIED} {self.name} {{ {'; '.join(parts)}; }}"


SETS: dict[str, NamedSet] = {s.name: s for s in (
    NamedSet("bridges", ("ifname",), "bridges of networks that are not internal"),
    NamedSet("internal-bridges", ("ifname",), "bridges of internal networks"),
    NamedSet("internal-subnets", ("ipv4_addr",), "subnets of internal networks (comment: the bridge)",
             interval=True),
    NamedSet("masquerade-subnets", ("ipv4_addr",),
             "subnets masqueraded when they leave their bridge (comment: the bridge)", interval=True),
    NamedSet("own-bridge", ("ifname", "ifname"), "bridge . bridge: traffic staying on it keeps its source"),
    NamedSet("same-bridge", ("ifname", "ifname"), "bridge . bridge : inter-container verdict (icc)",
             data="verdict"),
    NamedSet("published-ports", ("ifname", "ipv4_addr", "inet_proto", "inet_service"),
             "bridge . container . proto . port accepted from outside the bridge"),
    NamedSet("hairpin", ("ipv4_addr", "ipv4_addr", "inet_proto", "inet_service"),
             "container . container . proto . port: a container reaching its own published port"),
    NamedSet("dnat-by-address", ("ipv4_addr", "inet_proto", "inet_service"),
             "host address . proto . port : container . port", data="ipv4_addr . inet_service"),
    NamedSet("dnat-any-address", ("inet_proto", "inet_service"),
             "proto . port on any host address : container . port", data="ipv4_addr . inet_service"),
)}


@dataclass(frozen=True)
class Chain:
    name: str
    hook: tuple[str, str, str] | None  # (type, hook, priority) of a base chain; None: a regular chain
    rules: tuple[tuple[str, str], ...]  # (comment, rule): the comment names the rule in listings

    def declaration(self) -> str:
        if self.hook is None:
            return f"add chain {QUALIFIED} {self.name}"
        kind, hook, priority = self.hook
        return (f"add chain {QUALIFIED} {self.name} "
                f"{{ type {kind} hook {hook} priority {priority}; policy accept; }}")


CHAINS: dict[str, Chain] = {c.name: c for c in (
    Chain(NO_ICC_CHAIN, None, (
        ("replies", "ct state established,related accept"),
        ("icc off", "drop"),
    )),
    Chain("forward", ("filter", "forward", "filter"), (
        ("user rules", f"jump {USER_CHAIN}"),
        ("internal: foreign source", "oifname @internal-bridges ip saddr != @internal-subnets drop"),
        ("internal: foreign destination", "iifname @internal-bridges ip daddr != @internal-subnets drop"),
        ("icc", "iifname . oifname vmap @same-bridge"),
        ("internal: nothing in", "oifname @internal-bridges drop"),
        ("internal: nothing out", "iifname @internal-bridges drop"),
        ("isolation", "iifname @bridges oifname @bridges drop"),
        ("replies", "oifname @bridges ct state established,related accept"),
        ("published ports", "oifname . ip daddr . meta l4proto . th dport @published-ports accept"),
        ("egress", "iifname @bridges accept"),
    )),
    Chain("published", None, (
        ("to one host address", "dnat ip to ip daddr . meta l4proto . th dport map @dnat-by-address"),
        ("to any host address", "dnat ip to meta l4proto . th dport map @dnat-any-address"),
    )),
    Chain("prerouting", ("nat", "prerouting", "dstnat"), (
        ("host addresses", "fib daddr type local jump published"),
    )),
    # "dstnat" names -100 at prerouting only; output's NAT runs at the same priority.
    Chain("output", ("nat", "output", "-100"), (
        ("host addresses", "fib daddr type local jump published"),
    )),
    Chain("postrouting", ("nat", "postrouting", "srcnat"), (
        ("hairpin", "ip saddr . ip daddr . meta l4proto . th dport @hairpin masquerade"),
        ("loopback to published ports", "oifname @bridges fib saddr type local masquerade"),
        ("staying on its bridge", "iifname . oifname @own-bridge return"),
        ("outgoing", "ip saddr @masquerade-subnets masquerade"),
    )),
)}


@dataclass(frozen=True, order=True)
class Element:
    """One element: its set, key fields and (maps) value, as canonical text (an address, a prefix
    ``10.0.0.0/24``, ``tcp``, a port number, an interface name, a verdict ``accept`` / ``jump c``)."""

    set: str
    key: tuple[str, ...]
    value: tuple[str, ...] = ()
    comment: str = ""  # the bridge a subnet belongs to, shown by nft and read back by remove_rules_naming

    def render(self, with_value: bool = True) -> str:
        named = SETS[self.set]
        key = " . ".join(_literal(t, v) for t, v in zip(named.key, self.key, strict=True))
        if with_value and self.comment:
            key += f' comment "{self.comment}"'
        if with_value and self.value:
            types = named.data.split(" . ") if named.data else []
            key += " : " + " . ".join(_literal(t, v) for t, v in zip(types, self.value, strict=True))
        return key


def wire(e: Element) -> list[nftsets.Element]:
    """The element as the kernel holds it (what nft would send for it); a range (``*-subnets``, plain
    interval sets) is two elements: its start, and the address after its end flagged as an interval's
    end. No set is a concatenation of ranges: the kernel rebuilds such a set whole at each change."""
    named = SETS[e.set]
    if named.interval:
        subnet = IPv4Network(e.key[0])
        start = nftsets.Element(subnet.network_address.packed, comment=e.comment or None)
        if int(subnet.broadcast_address) == 0xFFFFFFFF:  # nothing after it: no closing element
            return [start]
        return [start, nftsets.Element((subnet.broadcast_address + 1).packed, interval_end=True)]
    data = verdict = None
    if named.data == "verdict":
        verdict = e.value[0]
    elif named.data:
        data = b"".join(nftsets.field(t, v) for t, v in zip(named.data.split(" . "), e.value, strict=True))
    key = b"".join(nftsets.field(t, v) for t, v in zip(named.key, e.key, strict=True))
    return [nftsets.Element(key, data=data, verdict=verdict, comment=e.comment or None)]


def _literal(kind: str, value: str) -> str:
    return f'"{value}"' if kind == "ifname" else value


def network_elements(spec: BridgeSpec) -> list[Element]:
    br, net = spec.bridge, str(spec.subnet)
    if spec.internal:
        return [Element("internal-bridges", (br,)), Element("internal-subnets", (net,), comment=br),
                Element("same-bridge", (br, br), ("accept" if spec.icc else "drop",))]
    elements = [Element("bridges", (br,)),
                Element("same-bridge", (br, br), ("accept" if spec.icc else f"jump {NO_ICC_CHAIN}",))]
    if spec.masquerade:
        elements += [Element("masquerade-subnets", (net,), comment=br), Element("own-bridge", (br, br))]
    return elements


def port_elements(p: PortSpec) -> list[Element]:
    cip, proto, cport, hport = str(p.container_ip), p.proto, str(p.container_port), str(p.host_port)
    to = (cip, cport)
    dnat = (Element("dnat-by-address", (p.host_ip, proto, hport), to) if p.host_ip and p.host_ip != "0.0.0.0"
            else Element("dnat-any-address", (proto, hport), to))
    return [dnat, Element("published-ports", (p.bridge, cip, proto, cport)),
            Element("hairpin", (cip, cip, proto, cport))]


def wanted_elements(networks: Iterable[BridgeSpec], ports: Iterable[PortSpec]) -> set[Element]:
    return {e for n in networks for e in network_elements(n)} | {e for p in ports for e in port_elements(p)}


# -- scripts -----------------------------------------------------------------------------------------
def add_elements(elements: Iterable[Element]) -> list[str]:
    return [f"add element {QUALIFIED} {e.set} {{ {e.render()} }}" for e in sorted(set(elements))]


def delete_elements(elements: Iterable[Element]) -> list[str]:
    """Deleting by key (a map's value is not needed, and a stale one must not stop the deletion)."""
    return [f"delete element {QUALIFIED} {e.set} {{ {e.render(with_value=False)} }}" for e in sorted(set(elements))]


def chain_rules(chain: Chain) -> list[str]:
    return [f'add rule {QUALIFIED} {chain.name} {rule} comment "{comment}"' for comment, rule in chain.rules]


def skeleton(state: TableState | None) -> list[str]:
    """What makes the table, its sets and chains what they should be, given what exists (None: no
    table). A set of another shape cannot be fixed in place (rules and elements use it): the caller
    recreates the table. A chain whose rules differ is flushed and written again; the user's chain
    is created if missing, never flushed."""
    lines: list[str] = []
    if state is None:
        lines.append(f"add table {QUALIFIED}")
    present_sets = state.sets if state else {}
    lines += [s.declaration() for name, s in SETS.items() if name not in present_sets]
    chains = state.chains if state else {}
    if USER_CHAIN not in chains:
        lines.append(f"add chain {QUALIFIED} {USER_CHAIN}")
    # Regular chains first: the base chains' rules jump to them.
    for chain in CHAINS.values():
        comments = [comment for comment, _ in chain.rules]
        if chain.name in chains and chains[chain.name] == comments:
            continue
        if chain.name in chains:
            lines.append(f"flush chain {QUALIFIED} {chain.name}")
        else:
            lines.append(chain.declaration())
        lines += chain_rules(chain)
    return lines


def full_table() -> list[str]:
    return skeleton(None)


# -- reading the table back ----------------------------------------------------------------------------
@dataclass
class TableState:
    """What ``nft -j list table ip muslin`` shows: sets (name -> shape) with their elements, and each
    chain's rule comments in order."""

    sets: dict[str, tuple[tuple[str, ...], str | None, bool]]
    elements: set[Element]
    chains: dict[str, list[str]]

    def misshapen_sets(self) -> list[str]:
        return [name for name, shape in self.sets.items()
                if name in SETS and shape != (SETS[name].key, SETS[name].data, SETS[name].interval)]

    def elements_naming(self, ifname: str) -> set[Element]:
        """Elements of a bridge: those with it in their key, its subnet (by its comment), and the
        port elements of the containers published on it."""
        direct = {e for e in self.elements if e.comment == ifname or (ifname in e.key and "ifname" in SETS[e.set].key)}
        published = {(e.key[1], e.key[2], e.key[3]) for e in direct if e.set == "published-ports"}
        ports = {e for e in self.elements
                 if (e.set == "hairpin" and (e.key[1], e.key[2], e.key[3]) in published)
                 or (e.set.startswith("dnat-") and (e.value[0], e.key[-2], e.value[1]) in published)}
        return direct | ports


def parse_table(listing: dict[str, Any]) -> TableState | None:
    """The table as ``run_json("list table ...")`` returns it; None when it does not exist."""
    objects = listing.get("nftables", [])
    if not any("table" in o for o in objects):
        return None
    state = TableState(sets={}, elements=set(), chains={})
    for obj in objects:
        named = obj.get("set") or obj.get("map")
        if named is not None:
            key = named["type"]
            key_types = tuple(key) if isinstance(key, list) else (key,)
            interval = "interval" in named.get("flags", [])
            state.sets[named["name"]] = (key_types, named.get("map"), interval)
            for raw in named.get("elem", []):
                element = _element(named["name"], raw, "map" in obj)
                if element is not None:
                    state.elements.add(element)
        elif "chain" in obj:
            state.chains.setdefault(obj["chain"]["name"], [])
        elif "rule" in obj:
            state.chains.setdefault(obj["rule"]["chain"], []).append(obj["rule"].get("comment", ""))
    return state


def _element(set_name: str, raw: Any, is_map: bool) -> Element | None:
    named = SETS.get(set_name)
    if named is None:
        return None
    key, value = (raw[0], raw[1]) if is_map and isinstance(raw, list) else (raw, None)
    comment = ""
    if isinstance(key, dict) and "elem" in key:  # an element with a comment (or a timeout) of its own
        comment = key["elem"].get("comment", "")
        key = key["elem"]["val"]
    fields = _fields(key)
    if named.interval:  # nft shows a /32 prefix as a bare address
        fields = tuple(_prefix(f) if t == "ipv4_addr" else f for t, f in zip(named.key, fields))
    return Element(set_name, fields, _fields(value) if value is not None else (), comment)


def _prefix(text: str) -> str:
    try:
        return str(IPv4Network(text))
    except ValueError:
        return text  # a range we never write: compares unequal, so it is replaced


def _fields(raw: Any) -> tuple[str, ...]:
    parts = raw["concat"] if isinstance(raw, dict) and "concat" in raw else [raw]
    return tuple(_scalar(part) for part in parts)


def _scalar(part: Any) -> str:
    if isinstance(part, dict):
        if "prefix" in part:
            return str(IPv4Network(f"{part['prefix']['addr']}/{part['prefix']['len']}"))
        if "jump" in part:
            return f"jump {part['jump']['target']}"
        if "goto" in part:
            return f"goto {part['goto']['target']}"
        if len(part) == 1 and next(iter(part.values())) is None:  # {"accept": null}
            return next(iter(part))
        return repr(part)  # a shape we never write: compares unequal, so it is replaced
    return str(part)
