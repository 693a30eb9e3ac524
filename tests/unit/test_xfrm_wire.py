"""XFRM messages as muslin writes them: the kernel's struct sizes, and a policy or state read back from the
bytes it was written as (a dump answers in the same layouts)."""

from ipaddress import IPv4Address

from muslin.kernel import xfrm


def test_struct_sizes_are_the_kernels() -> None:
    assert len(xfrm._selector(None, None)) == xfrm.SELECTOR_SIZE == 56
    assert len(xfrm._xfrm_id(IPv4Address("10.0.0.1"), 1, xfrm.IPPROTO_ESP)) == 24
    assert len(xfrm.state_id_body(xfrm.StateId(IPv4Address("1.1.1.1"), IPv4Address("2.2.2.2"), 7))) == 24 + 4 + 16


def test_a_policy_reads_back_as_written() -> None:
    policy = xfrm.UdpPolicy(src=IPv4Address("192.168.255.154"), dst=IPv4Address("192.168.255.155"), dport=4789,
                            direction=xfrm.XFRM_POLICY_OUT, mark=xfrm.Mark(0x4D534C), spi=0xDEADBEEF, reqid=0x4D534C)
    body = xfrm.policy_body(policy)
    assert xfrm.parse_policy(body) == policy
    # the selector: /32 each way, UDP, destination port 4789 with a full mask, big-endian
    assert body[32:36] == bytes.fromhex("12b5ffff") and body[42:45] == bytes([32, 32, 17])


def test_a_state_reads_back_as_written_with_its_aead() -> None:
    state = xfrm.EspState(xfrm.StateId(IPv4Address("10.1.1.1"), IPv4Address("10.1.1.2"), 0x1234), 0x4D534C,
                          bytes(range(20)))
    body = xfrm.state_body(state)
    dumped = xfrm.parse_state(body)
    assert dumped == xfrm.DumpedState(id=state.id, protocol=xfrm.IPPROTO_ESP, reqid=0x4D534C, mark=None)
    aead = dict(xfrm.attributes(body, xfrm.USERSA_INFO_SIZE))[xfrm.XFRMA_ALG_AEAD]
    assert aead[:17] == b"rfc4106(gcm(aes))" and aead[64:72] == (160).to_bytes(4, "little") + (64).to_bytes(4, "little")
    assert aead[72:] == bytes(range(20))


def test_other_policies_are_not_mistaken_for_ours() -> None:
    policy = xfrm.UdpPolicy(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), 4789, xfrm.XFRM_POLICY_OUT,
                            xfrm.Mark(1), 5, 6)
    without_mark = xfrm.policy_body(policy)[:-12]  # the mark attribute is the last 12 bytes
    assert xfrm.parse_policy(without_mark) is None
    assert xfrm.parse_policy(b"\0" * 10) is None
