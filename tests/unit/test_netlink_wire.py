"""Netlink's wire format as the hand-written readers use it: messages split out of a datagram, attributes
padded and walked, error bodies."""

import struct

from muslin.kernel import netlink


def test_messages_of_a_datagram_are_split_at_their_padded_lengths() -> None:
    first = netlink.header(5, 16, netlink.NLM_F_MULTI, 7) + b"abcde" + b"\0" * 3
    second = netlink.header(4, netlink.NLMSG_DONE, netlink.NLM_F_MULTI, 7) + struct.pack("=i", 0)
    assert list(netlink.messages(first + second)) == [
        (16, netlink.NLM_F_MULTI, 7, b"abcde"),
        (netlink.NLMSG_DONE, netlink.NLM_F_MULTI, 7, b"\0\0\0\0"),
    ]


def test_a_truncated_or_corrupt_datagram_yields_what_is_whole() -> None:
    whole = netlink.header(0, 16, 0, 1)
    assert list(netlink.messages(whole + b"\x02\0\0\0")) == [(16, 0, 1, b"")]  # a header cut short
    assert list(netlink.messages(struct.pack("=IHHII", 3, 16, 0, 1, 0))) == []  # a length below the header


def test_attributes_round_trip_with_padding_and_without_the_nested_flag() -> None:
    data = netlink.attribute(1, b"eth0\0") + netlink.attribute(0x8000 | 2, b"\x01\x02\x03\x04")
    assert len(netlink.attribute(1, b"eth0\0")) == 12  # 4 + 5, padded to 8 + 4
    assert list(netlink.attributes(data)) == [(1, b"eth0\0"), (2, b"\x01\x02\x03\x04")]
    assert list(netlink.attributes(b"\0" * 4 + data, offset=4)) == [(1, b"eth0\0"), (2, b"\x01\x02\x03\x04")]


def test_an_error_body_gives_a_positive_errno_and_an_ack_zero() -> None:
    assert netlink.error_code(struct.pack("=i", -17) + b"request copy") == 17
    assert netlink.error_code(struct.pack("=i", 0)) == 0
