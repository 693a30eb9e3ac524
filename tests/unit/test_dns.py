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
