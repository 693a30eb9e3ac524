"""The udp forwarder's ICMP answer, checked byte by byte (pure logic)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from muslin.fabric.backends.udp import ip_checksum, net_unreachable


def ip_packet(proto: int, payload: bytes, src: str = "172.21.5.2", dst: str = "172.21.250.2",
              frag: int = 0) -> bytes:
    header = bytearray(struct.pack("!BBHHHBB2x4s4s", 0x45, 0, 20 + len(payload), 7, frag, 64, proto,
                                   IPv4Address(src).packed, IPv4Address(dst).packed))
    header[10:12] = ip_checksum(bytes(header)).to_bytes(2, "big")
    return bytes(header) + payload


def test_udp_to_nowhere_gets_net_unreachable_from_that_address() -> None:
    original = ip_packet(17, struct.pack("!HHHH", 40000, 9, 12, 0) + b"data")
    reply = net_unreachable(original)
    assert reply is not None
    assert reply[9] == 1 and reply[12:16] == IPv4Address("172.21.250.2").packed
    assert reply[16:20] == IPv4Address("172.21.5.2").packed
    assert ip_checksum(reply[:20]) == 0 and ip_checksum(reply[20:]) == 0  # both checksums verify
    assert reply[20:22] == b"\x03\x00" and reply[28:] == original[:28]
    assert struct.unpack("!H", reply[2:4])[0] == len(reply)


def test_icmp_errors_and_later_fragments_get_no_answer() -> None:
    for error_type in (3, 4, 5, 11, 12):
        assert net_unreachable(ip_packet(1, bytes([error_type, 0]) + b"\x00" * 30)) is None
    assert net_unreachable(ip_packet(17, b"\x00" * 16, frag=185)) is None
    assert net_unreachable(ip_packet(1, b"\x08\x00" + b"\x00" * 30)) is not None  # an echo request does
    assert net_unreachable(ip_packet(1, b"\x0e\x00" + b"\x00" * 30)) is not None  # a timestamp reply too
