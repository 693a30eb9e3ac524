"""IPsec ESP between engines for encrypted overlay networks (``docker network create -d overlay --opt encrypted``),
as libnetwork's overlay driver does it, with keys of muslind's own.

What goes on the wire, as in libnetwork: the VXLAN packets of an encrypted network (UDP 4789 between two
engines' underlay addresses) in ESP, transport mode, AES-GCM (``rfc4106(gcm(aes))``, a 128-bit key, the
SA's SPI as the 4-byte salt, a 64-bit ICV). In the engine's own (underlay) namespace:
- per remote engine, two security associations (to it and from it; the SPIs are a hash of the two
  addresses and the key's tag, so both ends compute the same ones without talking) and one outbound
  policy: UDP to its port 4789 that carries MARK goes through the outbound SA;
- an iptables mangle rule per encrypted VNI marks the VXLAN packets of that VNI with MARK (a u32 match on
  the VXLAN header's VNI), so the networks that are not encrypted stay plain beside them; a filter rule
  per VNI accepts that VNI's packets only when they came in through IPsec and drops them otherwise.
SAs and the policy towards an engine exist while this engine has an endpoint on an encrypted network on
which that engine has one too (libnetwork's rule: the first such endpoint programs them, the last one
to go removes them); the marks while this engine has endpoints on that network. Everything is kept by
difference with the kernel's own listing (states by REQID, policies by MARK, the two chains as a whole),
so a restart after a crash removes what is stale and adds what is missing. An engine that stops leaves
them (its containers keep running and keep talking, as they do on any overlay); removing its last
endpoint removes them.

Keys: dockerd gets its keys only from swarm (in classic ``--cluster-store`` mode it has none, and every
container's join fails with "encryption keys not present"). muslind makes one cluster key itself, the
first time an encrypted network is created, and keeps it in the cluster store (``<root>encryption/key``,
a random 128-bit AES key and a tag), where every engine reads it. So the key is exactly as secret as the
cluster store: anyone who can read the store can decrypt every encrypted overlay's captured traffic, and
anyone who can write it can replace the key. Use etcd with TLS (``--cluster-store-opt kv.cacertfile=,
kv.certfile=,kv.keyfile=``) and client-certificate or user access control, readable only by the
engines. There is no rotation (swarm rotates its keys every 12 hours): a new key means removing the
key from the store once no encrypted network is left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from muslin.errors import EngineError
from muslin.kernel import iptables, xfrm

log = logging.getLogger(__name__)

REQID = 0x4D534C  # every SA muslind adds carries it (libnetwork's carry 0xD0C4E3)
MARK = xfrm.Mark(0x4D534C)  # on the VXLAN packets of encrypted networks; the policies match it
VXLAN_PORT = 4789
KEY_BYTES = 16
ESP_OVERHEAD = 26  # SPI 4 + sequence 4 + IV 8 + pad length 1 + next header 1 + ICV 8, as libnetwork counts
CHAIN = "MUSLIN-OVERLAY-ESP"  # in mangle (from OUTPUT) and in filter (from INPUT)


def encrypted_mtu(plain_mtu: int) -> int:
    """A veth's MTU on an encrypted network: room for ESP too, rounded down to 4 bytes (libnetwork's)."""
    mtu = plain_mtu - ESP_OVERHEAD
    return mtu - mtu % 4


@dataclass(frozen=True)
class ClusterKey:
    key: bytes
    tag: int

    @classmethod
    def generate(cls) -> ClusterKey:
        return cls(secrets.token_bytes(KEY_BYTES), secrets.randbits(32))

    def to_doc(self) -> bytes:
        return json.dumps({"key": self.key.hex(), "tag": self.tag}).encode()

    @classmethod
    def from_doc(cls, value: bytes) -> ClusterKey:
        """The record's key; ValueError (or KeyError, TypeError) when it is not a well-formed one, so that
        a bad record is no key at all rather than an error later (an SPI of a tag beyond 32 bits)."""
        doc = json.loads(value)
        key, tag = bytes.fromhex(doc["key"]), doc["tag"]
        if len(key) != KEY_BYTES:
            raise ValueError(f"the cluster's encryption key has {len(key)} bytes, not {KEY_BYTES}")
        if type(tag) is not int or not 0 <= tag < 1 << 32:
            raise ValueError(f"the cluster's encryption key's tag {tag!r} is not a 32-bit unsigned integer")
        return cls(key, tag)


def spi(src: IPv4Address, dst: IPv4Address, tag: int) -> int:
    """The SPI of the SA from src to dst: the same on both engines, never one of the reserved 0-255."""
    digest = hashlib.blake2s(src.packed + tag.to_bytes(4, "big") + dst.packed, digest_size=4).digest()
    value = int.from_bytes(digest, "big")
    return value if value > 255 else value + 256


def wanted_xfrm(local: IPv4Address, remotes: set[IPv4Address], key: ClusterKey
                ) -> tuple[list[xfrm.EspState], list[xfrm.UdpPolicy]]:
    """The SAs and policies towards these engines."""
    states: list[xfrm.EspState] = []
    policies: list[xfrm.UdpPolicy] = []
    for remote in sorted(remotes):
        out_spi, in_spi = spi(local, remote, key.tag), spi(remote, local, key.tag)
        states.append(xfrm.EspState(xfrm.StateId(local, remote, out_spi), REQID, key.key + out_spi.to_bytes(4, "big")))
        states.append(xfrm.EspState(xfrm.StateId(remote, local, in_spi), REQID, key.key + in_spi.to_bytes(4, "big")))
        policies.append(xfrm.UdpPolicy(local, remote, VXLAN_PORT, xfrm.XFRM_POLICY_OUT, MARK, out_spi, REQID))
    return states, policies


def vni_match(vni: int) -> str:
    """iptables' u32 test for a VXLAN packet's VNI: the UDP header starts at the IP header's length
    (``0>>22&0x3C``), the VNI is the 3 bytes at 12 after it (UDP 8 + VXLAN flags 4)."""
    return f"0>>22&0x3C@12&0xFFFFFF00={vni << 8}"


def rules(vnis: set[int]) -> dict[str, list[str]]:
    """The two chains' rules (table → lines) for these encrypted VNIs."""
    mangle, filtering = [], []
    for vni in sorted(vnis):
        match = f"-p udp --dport {VXLAN_PORT} -m u32 --u32 {vni_match(vni)}"
        mangle.append(f"-A {CHAIN} {match} -j MARK --set-xmark {MARK.value:#x}/{MARK.mask:#x}")
        filtering.append(f"-A {CHAIN} {match} -m policy --dir in --pol ipsec -j ACCEPT")
        filtering.append(f"-A {CHAIN} {match} -j DROP")
    return {"mangle": mangle, "filter": filtering}


JUMPS = {"mangle": f"-A OUTPUT -j {CHAIN}", "filter": f"-A INPUT -j {CHAIN}"}


class OverlayEncryption:
    """The engine's IPsec state in its own (underlay) namespace: ``sync`` makes it exactly what it is
    given (from the calling thread, which must be in that namespace, as the engine's worker is)."""

    def __init__(self, commit: Callable[[Callable[[], object], int], None] | None = None) -> None:
        """``commit(apply, transactions)`` runs the chains' iptables-restore: the engine's firewall's
        ``commit_beside`` (under its lock, so its commit tracking knows the rules it guards are untouched
        and the firewall guard skips its full check); None: at once (no firewall, tests)."""
        self._commit = commit or (lambda apply, transactions: apply())
        self._vnis: set[int] | None = None  # the VNIs the chains hold (None: not read yet)
        self._active = True  # until a first sync has found out

    @property
    def active(self) -> bool:
        """Whether anything may be programmed (so a change of peers must be looked at)."""
        return self._active

    def sync(self, local: IPv4Address, remotes: set[IPv4Address], vnis: set[int], key: ClusterKey) -> None:
        """SAs and policies towards exactly ``remotes``, marks for exactly ``vnis``.
        Order: marks that go are removed first, SAs then policies are added, marks added, and only then
        stale policies and SAs removed, so a marked packet always meets its policy and a policy its SA:
        no packet of an encrypted network leaves in plain. SAs that cannot be added are removed again
        with what this call added, and EngineError says why."""
        states, policies = wanted_xfrm(local, remotes, key)
        self.write_marks(vnis & self._rules_now())
        try:
            with xfrm.XfrmSocket() as sock:
                have_states = {s.id for s in sock.states() if s.reqid == REQID and s.protocol == xfrm.IPPROTO_ESP}
                have_policies = {p for p in sock.policies() if p.mark == MARK and p.reqid == REQID}
                new_states = [s for s in states if s.id not in have_states]
                try:
                    sock.add_states(new_states)
                except OSError:
                    sock.remove_states([s.id for s in new_states])
                    raise
                sock.add_policies([p for p in policies if p not in have_policies])
                self.write_marks(vnis)
                sock.remove_policies(sorted(have_policies - set(policies)))
                sock.remove_states(sorted(have_states - {s.id for s in states}))
        except xfrm.XfrmUnsupported as exc:
            raise EngineError(f"cannot program network encryption: {exc.strerror}") from None
        except OSError as exc:
            raise EngineError(f"cannot program network encryption: {exc}") from None
        self._active = bool(remotes or vnis)

    def _rules_now(self) -> set[int]:
        if self._vnis is None:
            self._vnis = self._present_vnis()
        return self._vnis

    def write_marks(self, vnis: set[int]) -> None:
        """The two chains for exactly these VNIs (and no chain, no jump at all for none); ``sync`` calls it."""
        if vnis == self._rules_now():
            return
        batch = iptables.Batch()
        wanted = rules(vnis)
        for table, lines in wanted.items():
            saved = iptables.read(table)
            if vnis:
                batch.add(table, f":{CHAIN} - [0:0]")  # declared again: emptied, then filled
                for line in lines:
                    batch.add(table, line)
                if not saved.has(JUMPS[table]):
                    batch.add(table, JUMPS[table])
            elif CHAIN in saved.chains:
                if saved.has(JUMPS[table]):
                    batch.add(table, JUMPS[table].replace("-A ", "-D ", 1))
                batch.add(table, f":{CHAIN} - [0:0]")
                batch.add(table, f"-X {CHAIN}")
        self._commit(batch.apply, len(batch.tables()))
        self._vnis = set(vnis)

    @staticmethod
    def _present_vnis() -> set[int]:
        """The VNIs the mangle chain marks now (left by an earlier run, or none)."""
        found: set[int] = set()
        for line in iptables.read("mangle").rules_in(CHAIN):
            words = line.split()
            if "--u32" in words:  # iptables-save prints the test in hex: "0x0>>0x16&0x3c@0xc&0xffffff00=0x100000"
                test = words[words.index("--u32") + 1].strip('"')
                found.add(int(test.rpartition("=")[2], 0) >> 8)
        return found
