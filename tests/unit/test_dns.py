import struct
from ipaddress import IPv4Address

import pytest

from muslin.engine import dns


def query(name: str, qtype: int = dns.TYPE_A, ident: int = 0x1234) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, dns.CLASS_IN)


def test_parse_query_and_answer_with_a_records() -> None:
    packet = query("DB.example")
    ident, flags, q = dns.parse_query(packet)
    assert (ident, q.name, q.qtype) == (0x1234, "db.example", dns.TYPE_A)
    answer = dns.build_response(ident, flags, q, [IPv4Address("10.81.0.2"), IPv4Address("10.81.0.3")])
    rid, rflags, qd, an, _, _ = struct.unpack_from(">HHHHHH", answer)
    assert rid == 0x1234 and rflags & 0x8000 and rflags & 0x0100 and (qd, an) == (1, 2)
    assert answer.endswith(IPv4Address("10.81.0.3").packed)
    assert answer[12:12 + len(q.raw)] == q.raw


def test_nxdomain_and_malformed_queries() -> None:
    ident, flags, q = dns.parse_query(query("nothing"))
    nx = dns.build_response(ident, flags, q, [], dns.RCODE_NXDOMAIN)
    assert struct.unpack_from(">H", nx, 2)[0] & 0xF == dns.RCODE_NXDOMAIN
    for bad in (b"", b"\x00" * 11, query("x")[:-3], struct.pack(">HHHHHH", 1, 0x8000, 1, 0, 0, 0)):
        with pytest.raises(ValueError):
            dns.parse_query(bad)
    assert struct.unpack_from(">H", dns.error_response(b"\x12\x34", dns.RCODE_FORMERR), 2)[0] & 0xF == dns.RCODE_FORMERR


def test_an_answer_too_large_for_udp_is_truncated_and_whole_over_tcp() -> None:
    many = [IPv4Address(f"10.81.1.{i}") for i in range(1, 41)]  # 40 records: 640 bytes and more
    server = dns.EmbeddedDNS(lambda name: many if name == "web" else None, upstreams=[])
    packet = query("web")
    udp = server.local_answer(packet, limit=dns.UDP_LIMIT)
    tcp = server.local_answer(packet)
    assert udp is not None and tcp is not None
    assert len(udp) <= dns.UDP_LIMIT
    _, flags, _, an, _, _ = struct.unpack_from(">HHHHHH", udp)
    assert flags & dns.FLAG_TC and an == 0
    _, flags, _, an, _, _ = struct.unpack_from(">HHHHHH", tcp)
    assert not flags & dns.FLAG_TC and an == 40
    assert server.local_answer(query("elsewhere.example")) is None  # not ours: upstream answers
    _, flags, *_ = struct.unpack_from(">HHHHHH", server.local_answer(b"\x00\x01junk"))
    assert flags & 0xF == dns.RCODE_FORMERR

