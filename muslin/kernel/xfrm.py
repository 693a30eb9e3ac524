"""IPsec in the kernel (XFRM) over netlink: security associations (states), security policies, and a probe
of what the running kernel can do.

pyroute2 has no NETLINK_XFRM family, so the messages are written and read here by hand, over the same
pipelined socket as ``rtnl`` (``RtnlSocket`` with ``protocol=NETLINK_XFRM``). The layouts are the kernel's
``include/uapi/linux/xfrm.h`` on 64-bit Linux: ``xfrm_selector`` 56 bytes, ``xfrm_usersa_info`` 224,
``xfrm_userpolicy_info`` 168, ``xfrm_user_tmpl`` 64. Only what an IPv4 ESP transport-mode setup needs is
modelled: the overlay encrypts the VXLAN packets between two hosts' underlay addresses as libnetwork's
overlay does (``rfc4106(gcm(aes))``, a 64-bit ICV, SAs and policies told apart from others by a reqid
and a mark of the caller's).
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from .netlink import NLM_F_CREATE, attribute, attributes
from .rtnl import MISSING, Request, RtnlError, RtnlSocket

NETLINK_XFRM = 6
XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_DELPOLICY = 0x14
XFRM_MSG_GETPOLICY = 0x15
XFRMA_ALG_CRYPT = 2
XFRMA_TMPL = 5
XFRMA_SRCADDR = 13
XFRMA_ALG_AEAD = 18
XFRMA_MARK = 21
XFRM_MODE_TRANSPORT = 0
XFRM_POLICY_IN = 0
XFRM_POLICY_OUT = 1
XFRM_INF = (1 << 64) - 1  # no byte or packet limit
IPPROTO_UDP = 17
IPPROTO_ESP = 50
AEAD = "rfc4106(gcm(aes))"  # libnetwork's: AES-GCM, the key's last 4 bytes the salt
ICV_BITS = 64

SELECTOR_SIZE = 56
USERSA_INFO_SIZE = 224
USERPOLICY_INFO_SIZE = 168
USER_TMPL_SIZE = 64
ALGO_NAME_SIZE = 64


class XfrmUnsupported(OSError):
    """The kernel cannot hold what was asked for (no XFRM netlink, no ESP, or no such algorithm)."""


@dataclass(frozen=True, order=True)
class Mark:
    value: int
    mask: int = 0xFFFFFFFF


@dataclass(frozen=True, order=True)
class StateId:
    """What names a security association in the kernel (with the protocol, ESP here)."""

    src: IPv4Address
    dst: IPv4Address
    spi: int


@dataclass(frozen=True)
class EspState:
    """An ESP transport-mode security association between two hosts, with its AEAD key (key + 4-byte salt)."""

    id: StateId
    reqid: int
    key: bytes  # as rfc4106 takes it: the AES key followed by the 4-byte salt


@dataclass(frozen=True, order=True)
class UdpPolicy:
    """An outbound (or inbound) policy: UDP from ``src`` to ``dst``:``dport`` (host addresses), on packets
    carrying ``mark``, goes through the ESP transport SA ``spi`` between the same two hosts."""

    src: IPv4Address
    dst: IPv4Address
    dport: int
    direction: int
    mark: Mark
    spi: int
    reqid: int


@dataclass(frozen=True)
class DumpedState:
    id: StateId
    protocol: int
    reqid: int
    mark: Mark | None


# -- encoding -----------------------------------------------------------------------------------------
def _address(ip: IPv4Address) -> bytes:
    """``xfrm_address_t``: 16 bytes, an IPv4 address in the first four."""
    return ip.packed + b"\0" * 12


def _selector(src: IPv4Address | None, dst: IPv4Address | None, proto: int = 0, dport: int = 0) -> bytes:
    """``xfrm_selector``: the host pair (/32 each, or anything when None), a protocol and a destination port."""
    any_address = IPv4Address(0)
    ports = struct.pack(">HHHH", dport, 0xFFFF if dport else 0, 0, 0)
    rest = struct.pack("=HBBB3xiI", socket.AF_INET, 32 if dst else 0, 32 if src else 0, proto, 0, 0)
    return _address(dst or any_address) + _address(src or any_address) + ports + rest


def _xfrm_id(dst: IPv4Address, spi: int, proto: int) -> bytes:
    return _address(dst) + struct.pack(">I", spi) + struct.pack("=B3x", proto)


LIFETIME_CFG = struct.pack("=8Q", XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0)
LIFETIME_CUR = b"\0" * 32
STATS = b"\0" * 12


def _aead(key: bytes) -> bytes:
    return attribute(XFRMA_ALG_AEAD, AEAD.encode().ljust(ALGO_NAME_SIZE, b"\0")
                     + struct.pack("=II", len(key) * 8, ICV_BITS) + key)


def _mark(mark: Mark) -> bytes:
    return attribute(XFRMA_MARK, struct.pack("=II", mark.value, mark.mask))


def _usersa_info(sa: StateId, reqid: int) -> bytes:
    """An ESP transport-mode SA's ``xfrm_usersa_info`` (an XFRM_MSG_NEWSA body's head)."""
    info = (_selector(None, None) + _xfrm_id(sa.dst, sa.spi, IPPROTO_ESP) + _address(sa.src) + LIFETIME_CFG
            + LIFETIME_CUR + STATS + struct.pack("=IIHBBB7x", 0, reqid, socket.AF_INET, XFRM_MODE_TRANSPORT, 0, 0))
    assert len(info) == USERSA_INFO_SIZE
    return info


def state_body(state: EspState) -> bytes:
    """An XFRM_MSG_NEWSA body: ``xfrm_usersa_info`` and the AEAD."""
    return _usersa_info(state.id, state.reqid) + _aead(state.key)


def state_id_body(sa: StateId) -> bytes:
    """An XFRM_MSG_DELSA body: ``xfrm_usersa_id`` and the source address."""
    return (_address(sa.dst) + struct.pack(">I", sa.spi) + struct.pack("=HB1x", socket.AF_INET, IPPROTO_ESP)
            + attribute(XFRMA_SRCADDR, _address(sa.src)))


def _template(policy: UdpPolicy) -> bytes:
    tmpl = (_xfrm_id(policy.dst, policy.spi, IPPROTO_ESP)
            + struct.pack("=H2x", socket.AF_INET) + _address(policy.src)
            + struct.pack("=IBBBxIII", policy.reqid, XFRM_MODE_TRANSPORT, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF))
    assert len(tmpl) == USER_TMPL_SIZE
    return tmpl


def policy_body(policy: UdpPolicy) -> bytes:
    """An XFRM_MSG_NEWPOLICY body: ``xfrm_userpolicy_info``, its one ESP template and its mark."""
    info = (_selector(policy.src, policy.dst, IPPROTO_UDP, policy.dport) + LIFETIME_CFG + LIFETIME_CUR
            + struct.pack("=IIBBBB4x", 0, 0, policy.direction, 0, 0, 0))
    assert len(info) == USERPOLICY_INFO_SIZE
    return info + attribute(XFRMA_TMPL, _template(policy)) + _mark(policy.mark)


def policy_id_body(policy: UdpPolicy) -> bytes:
    """An XFRM_MSG_DELPOLICY body: ``xfrm_userpolicy_id`` (selector and direction) and the mark."""
    return (_selector(policy.src, policy.dst, IPPROTO_UDP, policy.dport) + struct.pack("=IB3x", 0, policy.direction)
            + _mark(policy.mark))


# -- decoding -----------------------------------------------------------------------------------------
def _ipv4(data: bytes, offset: int) -> IPv4Address:
    return IPv4Address(data[offset:offset + 4])


def _mark_of(body: bytes, offset: int) -> Mark | None:
    for kind, payload in attributes(body, offset):
        if kind == XFRMA_MARK:
            return Mark(*struct.unpack_from("=II", payload))
    return None


def parse_state(body: bytes) -> DumpedState | None:
    """A dumped ``xfrm_usersa_info`` (IPv4 only; others None)."""
    if len(body) < USERSA_INFO_SIZE:
        return None
    family = struct.unpack_from("=H", body, 212)[0]
    if family != socket.AF_INET:
        return None
    spi = struct.unpack_from(">I", body, SELECTOR_SIZE + 16)[0]
    state_id = StateId(src=_ipv4(body, SELECTOR_SIZE + 24), dst=_ipv4(body, SELECTOR_SIZE), spi=spi)
    return DumpedState(id=state_id, protocol=body[SELECTOR_SIZE + 20], reqid=struct.unpack_from("=I", body, 208)[0],
                       mark=_mark_of(body, USERSA_INFO_SIZE))


def parse_policy(body: bytes) -> UdpPolicy | None:
    """A dumped ``xfrm_userpolicy_info`` if it has the shape ``UdpPolicy`` models (one template, a mark);
    None for any other policy."""
    if len(body) < USERPOLICY_INFO_SIZE or struct.unpack_from("=H", body, 40)[0] != socket.AF_INET:
        return None
    templates = [p for kind, p in attributes(body, USERPOLICY_INFO_SIZE) if kind == XFRMA_TMPL]
    mark = _mark_of(body, USERPOLICY_INFO_SIZE)
    if len(templates) != 1 or len(templates[0]) != USER_TMPL_SIZE or mark is None or body[44] != IPPROTO_UDP:
        return None
    tmpl = templates[0]
    return UdpPolicy(src=_ipv4(body, 16), dst=_ipv4(body, 0), dport=struct.unpack_from(">H", body, 32)[0],
                     direction=body[160], mark=mark, spi=struct.unpack_from(">I", tmpl, 16)[0],
                     reqid=struct.unpack_from("=I", tmpl, 44)[0])


# -- the socket ---------------------------------------------------------------------------------------
class XfrmSocket(RtnlSocket):
    """A NETLINK_XFRM socket in one namespace (the calling thread's, or ``namespace``); XfrmUnsupported when
    the kernel has no XFRM netlink."""

    def __init__(self, namespace: str | None = None) -> None:
        try:
            super().__init__(namespace, NETLINK_XFRM)
        except OSError as exc:
            if exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT):
                raise XfrmUnsupported(exc.errno, "the kernel has no XFRM netlink (CONFIG_XFRM_USER)") from None
            raise

    def states(self) -> list[DumpedState]:
        found = (parse_state(body) for kind, body in self.dump(XFRM_MSG_GETSA, b"")
                 if kind == XFRM_MSG_NEWSA)
        return [s for s in found if s is not None]

    def policies(self) -> list[UdpPolicy]:
        found = (parse_policy(body) for kind, body in self.dump(XFRM_MSG_GETPOLICY, b"")
                 if kind == XFRM_MSG_NEWPOLICY)
        return [p for p in found if p is not None]

    def add_states(self, states: list[EspState]) -> None:
        """Raises XfrmUnsupported when the kernel lacks ESP or the AEAD, RtnlError for other refusals;
        the states of the batch that the kernel took stay (the caller removes them)."""
        self._execute([Request(XFRM_MSG_NEWSA, NLM_F_CREATE, state_body(s), "xfrm state add", s.id) for s in states])

    def add_policies(self, policies: list[UdpPolicy]) -> None:
        self._execute([Request(XFRM_MSG_NEWPOLICY, NLM_F_CREATE, policy_body(p), "xfrm policy add", p)
                       for p in policies])

    def remove_policies(self, policies: list[UdpPolicy]) -> None:
        """Those already gone are no failure."""
        self._execute([Request(XFRM_MSG_DELPOLICY, 0, policy_id_body(p), "xfrm policy delete", p, MISSING)
                       for p in policies])

    def remove_states(self, states: list[StateId]) -> None:
        """Those already gone are no failure."""
        self._execute([Request(XFRM_MSG_DELSA, 0, state_id_body(s), "xfrm state delete", s, MISSING) for s in states])

    def _execute(self, requests: list[Request]) -> None:
        if not requests:
            return
        try:
            self.execute(requests)
        except RtnlError as exc:
            reason = unsupported_reason(exc.errno)
            if reason:
                raise XfrmUnsupported(exc.errno, f"{exc.strerror}: {reason}") from None
            raise


def unsupported_reason(code: int | None) -> str:
    """What a refused state add says about the kernel ("" when it is not about the kernel's abilities)."""
    if code == errno.ENOSYS:
        return f"the kernel has no {AEAD} AEAD (CONFIG_CRYPTO_GCM)"
    if code == errno.EPROTONOSUPPORT:
        return "the kernel has no ESP (CONFIG_INET_ESP)"
    return ""


# -- the probe ----------------------------------------------------------------------------------------
PROBE_SRC = IPv4Address("192.0.2.1")  # TEST-NET-1: an SA between these carries nothing
PROBE_DST = IPv4Address("192.0.2.2")
PROBE_SPI = 0x00000FFF
PROBE_KEY = bytes(20)


def probe_esp(reqid: int) -> list[str]:
    """What the kernel lacks for ESP with libnetwork's AEAD, [] when it has it all: an XFRM netlink socket,
    an ``rfc4106(gcm(aes))`` ESP state added and removed at once in the calling thread's namespace
    (between TEST-NET-1 addresses, with ``reqid`` so that a crash between the two leaves one the caller
    recognises), and when the AEAD is missing, a ``cipher_null`` ESP state to tell whether ESP is too."""
    try:
        sock = XfrmSocket()
    except XfrmUnsupported as exc:
        return [str(exc.strerror)]
    missing: list[str] = []
    with sock:
        probe = EspState(StateId(PROBE_SRC, PROBE_DST, PROBE_SPI), reqid, PROBE_KEY)
        try:
            sock.add_states([probe])
            sock.remove_states([probe.id])
        except XfrmUnsupported as exc:
            missing.append(unsupported_reason(exc.errno))
            if exc.errno == errno.ENOSYS and not _esp_type_present(sock, reqid):
                missing.append(unsupported_reason(errno.EPROTONOSUPPORT))
    return missing


def _esp_type_present(sock: XfrmSocket, reqid: int) -> bool:
    """Whether an ESP state with the null cipher (always in the kernel's crypto) can be added."""
    sa = StateId(PROBE_SRC, PROBE_DST, PROBE_SPI)
    null_cipher = attribute(XFRMA_ALG_CRYPT, b"ecb(cipher_null)".ljust(ALGO_NAME_SIZE, b"\0") + struct.pack("=I", 0))
    try:
        sock.execute([Request(XFRM_MSG_NEWSA, NLM_F_CREATE, _usersa_info(sa, reqid) + null_cipher, "xfrm state add", sa),
                      Request(XFRM_MSG_DELSA, 0, state_id_body(sa), "xfrm state delete", sa, MISSING)])
    except RtnlError as exc:
        return exc.errno != errno.EPROTONOSUPPORT
    return True
