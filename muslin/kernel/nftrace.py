"""nf_tables packet tracing in a namespace: a temporary table that marks one probe's packets for
tracing, a netlink listener for the trace events, and the iptables text of the rules they name.

The table (``table ip muslin-trace-<pid>-<tag>``) only sets ``meta nftrace`` on packets that carry the
probe's source port (or ICMP echo id): the probe itself, and its copies inside vxlan or flannel-udp
outer packets, found at a fixed offset behind the outer UDP header. Its other chains only accept, at a
priority after every other table, so their (policy) trace events say the packet got through that hook.
The tag and our pid in the name let a later run remove the table of a run that was killed outright.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nftsocket import NFT_MSG_GETRULE, NFTSocket, nft_rule_msg

from . import iptables, netns
from .netlink import messages
from .nfnetlink import NETLINK_NETFILTER, NFPROTO_IPV4

TABLE_PREFIX = "muslin-trace-"
NFNLGRP_NFTRACE = 9
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFT_MSG_TRACE = (10 << 8) | 17  # NFNL_SUBSYS_NFTABLES, NFT_MSG_TRACE
NFT_TIMEOUT = 10.0
# the probe's transport header inside the outer packets: behind UDP (8) + VXLAN (8) + Ethernet (14) +
# IPv4 (20) for vxlan, behind UDP (8) + IPv4 (20) for flannel's udp backend
VXLAN_INNER_L4 = 8 + 8 + 14 + 20
FLANNEL_UDP_INNER_L4 = 8 + 20

# enum nft_trace_attributes
A_TABLE, A_CHAIN, A_RULE_HANDLE, A_TYPE, A_VERDICT, A_ID = 1, 2, 3, 4, 5, 6
A_NETWORK_HEADER, A_TRANSPORT_HEADER, A_IIF, A_OIF, A_POLICY = 8, 9, 10, 12, 16
TRACE_TYPES = {1: "policy", 2: "return", 3: "rule"}
VERDICTS = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat", 5: "stop",
            -1: "continue", -2: "break", -3: "jump", -4: "goto", -5: "return"}
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")  # our chains are named after them


@dataclass(frozen=True)
class Probe:
    """What marks the probe: its protocol and source port (ICMP: echo id); tunnels to look inside."""
    protocol: str  # tcp, udp, icmp
    ident: int
    vxlan_ports: tuple[int, ...] = ()
    flannel_udp_ports: tuple[int, ...] = ()

    def matches(self) -> list[str]:
        # TCP: the SYN only; the handshake's ACK and the closing reset carry the same port
        out = [f"icmp type echo-request icmp id {self.ident}" if self.protocol == "icmp"
               else f"tcp sport {self.ident} tcp flags & (syn | ack) == syn" if self.protocol == "tcp"
               else f"udp sport {self.ident}"]
        for port, inner in [(p, VXLAN_INNER_L4) for p in self.vxlan_ports] + \
                           [(p, FLANNEL_UDP_INNER_L4) for p in self.flannel_udp_ports]:
            if self.protocol == "icmp":  # an echo request (type 8) with our id, not its reply
                out.append(f"udp dport {port} @th,{inner * 8},8 8 @th,{(inner + 4) * 8},16 {self.ident}")
            elif self.protocol == "tcp":
                out.append(f"udp dport {port} @th,{inner * 8},16 {self.ident} @th,{(inner + 13) * 8},8 & 0x12 == 0x02")
            else:
                out.append(f"udp dport {port} @th,{inner * 8},16 {self.ident}")
        return out


def table_name(tag: str) -> str:
    return f"{TABLE_PREFIX}{os.getpid()}-{tag}"


def ruleset(name: str, probe: Probe) -> str:
    marks = "".join(f"    {m} meta nftrace set 1\n" for m in probe.matches())
    return (f"table ip {name} {{\n"
            f"  chain prerouting {{\n    type filter hook prerouting priority -350; policy accept;\n{marks}  }}\n"
            f"  chain output {{\n    type filter hook output priority -350; policy accept;\n{marks}  }}\n"
            "  chain forward { type filter hook forward priority 500; policy accept; }\n"
            "  chain input { type filter hook input priority 500; policy accept; }\n"
            "  chain postrouting { type filter hook postrouting priority 500; policy accept; }\n"
            "}\n")


def _nft(ns: str, script: str) -> subprocess.CompletedProcess:
    # The child is forked from a thread inside the namespace, so nft works on that namespace.
    with netns.entered(ns):
        return subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True, timeout=NFT_TIMEOUT)


def add_table(ns: str, name: str, probe: Probe) -> None:
    proc = _nft(ns, ruleset(name, probe))
    if proc.returncode != 0:
        raise RuntimeError(f"nft could not add the trace table in {ns}: {proc.stderr.strip()}")


def delete_table(ns: str, name: str) -> None:
    """Remove the table if it is there (idempotent)."""
    _nft(ns, f"destroy table ip {name}\n" if _has_destroy() else f"delete table ip {name}\n")


_DESTROY: list[bool] = []


def _has_destroy() -> bool:
    # `destroy` (no error when absent) came with nftables 1.0.8; older ones only know `delete`.
    if not _DESTROY:
        out = subprocess.run(["nft", "--version"], capture_output=True, text=True).stdout
        found = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
        _DESTROY.append(bool(found) and tuple(int(x) for x in found.groups()) >= (1, 0, 8))
    return _DESTROY[0]


def trace_tables(ns: str) -> list[str]:
    """Names of trace tables present in the namespace (ours and those of other runs)."""
    with netns.entered(ns):
        proc = subprocess.run(["nft", "list", "tables", "ip"], capture_output=True, text=True, timeout=NFT_TIMEOUT)
    return [line.split()[-1] for line in proc.stdout.splitlines() if line.split()[-1:] and
            line.split()[-1].startswith(TABLE_PREFIX)]


def remove_orphans(ns: str) -> list[str]:
    """Remove trace tables whose run is gone (killed with SIGKILL before it could clean up)."""
    removed = []
    for name in trace_tables(ns):
        pid = name[len(TABLE_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            delete_table(ns, name)
            removed.append(name)
    return removed


@dataclass(frozen=True)
class Packet:
    """The headers of a traced packet as the hook saw them."""
    saddr: str
    daddr: str
    protocol: int  # IP protocol number
    ttl: int
    sport: int | None = None
    dport: int | None = None
    icmp_id: int | None = None
    vni: int | None = None  # when the packet is vxlan (UDP to a vxlan port; set by the caller's port list)
    transport: bytes = b""

    @property
    def proto_name(self) -> str:
        return {1: "icmp", 6: "tcp", 17: "udp"}.get(self.protocol, str(self.protocol))

    def describe(self) -> str:
        if self.protocol in (6, 17):
            return f"{self.proto_name} {self.saddr}:{self.sport} → {self.daddr}:{self.dport} ttl {self.ttl}"
        if self.protocol == 1:
            return f"icmp {self.saddr} → {self.daddr} id {self.icmp_id} ttl {self.ttl}"
        return f"proto {self.protocol} {self.saddr} → {self.daddr} ttl {self.ttl}"


def parse_packet(network: bytes, transport: bytes) -> Packet | None:
    if len(network) < 20 or network[0] >> 4 != 4:
        return None
    ttl, proto = network[8], network[9]
    saddr, daddr = str(IPv4Address(network[12:16])), str(IPv4Address(network[16:20]))
    sport = dport = icmp_id = None
    if proto in (6, 17) and len(transport) >= 4:
        sport, dport = struct.unpack_from(">HH", transport)
    elif proto == 1 and len(transport) >= 6:
        icmp_id = struct.unpack_from(">H", transport, 4)[0]
    return Packet(saddr, daddr, proto, ttl, sport, dport, icmp_id, transport=bytes(transport))


@dataclass(frozen=True)
class TraceEvent:
    """One nf_tables trace event: a packet met a rule, a chain's end (policy), or a return."""
    trace_id: int
    table: str
    chain: str
    kind: str  # rule, policy, return
    handle: int | None
    verdict: str | None
    target: str | None  # the chain of a jump or goto
    iif: int | None
    oif: int | None
    packet: Packet | None


def _attrs(data: bytes) -> Iterable[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & 0x3FFF, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def parse_event(body: bytes) -> TraceEvent | None:
    attrs: dict[int, bytes] = {}
    for kind, value in _attrs(body[4:]):  # behind the nfgenmsg
        attrs[kind] = value
    if A_TABLE not in attrs or A_CHAIN not in attrs:
        return None
    verdict = target = None
    if A_VERDICT in attrs:
        for kind, value in _attrs(attrs[A_VERDICT]):
            if kind == 1:
                verdict = VERDICTS.get(struct.unpack(">i", value[:4])[0], "?")
            elif kind == 2:
                target = value.rstrip(b"\0").decode()
    if A_POLICY in attrs:
        verdict = VERDICTS.get(struct.unpack(">i", attrs[A_POLICY][:4])[0], "?")
    be32 = lambda key: struct.unpack(">I", attrs[key][:4])[0] if key in attrs else None  # noqa: E731
    return TraceEvent(
        trace_id=be32(A_ID) or 0, table=attrs[A_TABLE].rstrip(b"\0").decode(),
        chain=attrs[A_CHAIN].rstrip(b"\0").decode(), kind=TRACE_TYPES.get(be32(A_TYPE) or 0, "?"),
        handle=struct.unpack(">Q", attrs[A_RULE_HANDLE][:8])[0] if A_RULE_HANDLE in attrs else None,
        verdict=verdict, target=target, iif=be32(A_IIF), oif=be32(A_OIF),
        packet=parse_packet(attrs.get(A_NETWORK_HEADER, b""), attrs.get(A_TRANSPORT_HEADER, b"")))


class TraceListener:
    """The trace events of one namespace, from the moment it is created."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        with netns.entered(ns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.sock.bind((0, 0))
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.events: list[TraceEvent] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> int:
        """Read what is queued; returns how many events came."""
        count = 0
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return count
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # some events were lost; keep what comes
                    continue
                raise
            for kind, _, _, body in messages(data):
                if kind == NFT_MSG_TRACE:
                    event = parse_event(body)
                    if event is not None:
                        self.events.append(event)
                        count += 1

    def close(self) -> None:
        self.sock.close()


def iptables_rules(ns: str, table: str, chains: Iterable[str]) -> dict[tuple[str, int], str]:
    """(chain, handle) → the ``-A CHAIN ...`` text iptables shows for that rule, for rules that
    iptables-nft wrote (the n-th rule of a chain in nf_tables is the n-th line iptables-save prints)."""
    out: dict[tuple[str, int], str] = {}
    with netns.entered(ns):
        saved = iptables.read_all().get(table)
        if saved is None:
            return out
        with NFTSocket(nfgen_family=NFPROTO_IPV4) as nft:
            for chain in chains:
                msg = nft_rule_msg()
                msg["attrs"] = [("NFTA_RULE_TABLE", table), ("NFTA_RULE_CHAIN", chain)]
                try:
                    dump = nft.request_get(msg, NFT_MSG_GETRULE, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
                except NetlinkError:
                    continue
                handles = [int(r.get_attr("NFTA_RULE_HANDLE")) for r in dump]
                lines = saved.rules_in(chain)
                if len(handles) == len(lines):
                    out.update({(chain, h): line for h, line in zip(handles, lines)})
    return out


def nft_rules(ns: str, table: str) -> dict[tuple[str, int], str]:
    """(chain, handle) → the rule as ``nft -a list table ip TABLE`` prints it, for rules written with nft."""
    with netns.entered(ns):
        proc = subprocess.run(["nft", "-a", "list", "table", "ip", table], capture_output=True, text=True,
                              timeout=NFT_TIMEOUT)
    out: dict[tuple[str, int], str] = {}
    chain = None
    for line in proc.stdout.splitlines():
        words = line.split()
        if words[:1] == ["chain"]:
            chain = words[1]
        elif chain and "# handle " in line and not words[0] == "chain":
            text, _, handle = line.rpartition("# handle ")
            if handle.strip().isdigit():
                out[(chain, int(handle))] = text.strip()
    return out
