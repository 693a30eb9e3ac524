from ipaddress import IPv4Address, IPv4Network

from muslin.engine.firewall import (BridgeSpec, DNSRedirect, PortSpec, bridge_rules, dns_redirect_batch,
                                    dns_redirect_ports, port_rules)


def specs(rules):
    return {(t, c, s) for t, c, s, _ in rules}


def test_bridge_rules_mirror_docker() -> None:
    rules = specs(bridge_rules(BridgeSpec("docker1", IPv4Network("192.168.100.0/24"), True, True, False)))
    assert ("nat", "POSTROUTING", "-s 192.168.100.0/24 ! -o docker1 -j MASQUERADE") in rules
    assert ("filter", "MUSLIN-ISOLATION-STAGE-2", "-o docker1 -j DROP") in rules
    assert ("filter", "MUSLIN-FORWARD", "-i docker1 -o docker1 -j ACCEPT") in rules


def test_no_masquerade_when_off_and_internal_has_no_way_out() -> None:
    off = specs(bridge_rules(BridgeSpec("b", IPv4Network("10.0.0.0/24"), False, True, False)))
    assert not any("-s 10.0.0.0/24 ! -o b -j MASQUERADE" in s for _, _, s in off)
    internal = specs(bridge_rules(BridgeSpec("b", IPv4Network("10.0.0.0/24"), True, False, True)))
    assert ("filter", "MUSLIN-ISOLATION-STAGE-1", "! -d 10.0.0.0/24 -i b -j DROP") in internal
    assert ("filter", "MUSLIN-FORWARD", "-i b -o b -j DROP") in internal
    assert not any(t == "nat" for t, _, _ in internal)


def test_port_rules_dnat_hairpin_and_accept() -> None:
    rules = specs(port_rules(PortSpec("muslin0", "tcp", "127.0.0.1", 8081, IPv4Address("172.17.0.2"), 80)))
    assert ("nat", "MUSLIN", "-d 127.0.0.1/32 -p tcp -m tcp --dport 8081 -j DNAT --to-destination 172.17.0.2:80") in rules
    assert ("nat", "POSTROUTING", "-s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE") in rules


def test_legacy_rules_are_the_forwarding_rules_muslind_once_put_in_forward() -> None:
    from muslin.engine.firewall import legacy_rules

    spec = BridgeSpec("br1", IPv4Network("10.0.0.0/24"), True, False, False)
    legacy = specs(legacy_rules([spec]))
    assert ("filter", "FORWARD", "-j MUSLIN-ISOLATION-STAGE-1") in legacy
    assert ("filter", "FORWARD", "-i br1 -o br1 -j DROP") in legacy
    assert all(chain == "FORWARD" for _, chain, _ in legacy)
    assert {s for _, c, s in specs(bridge_rules(spec)) if c == "MUSLIN-FORWARD"} <= {s for _, _, s in legacy}


def test_dns_redirect_refills_its_chain_and_jumps_once() -> None:
    first = dns_redirect_batch(DNSRedirect("127.0.0.11", 40001, 40002), add_jump=True).render().splitlines()
    again = dns_redirect_batch(DNSRedirect("127.0.0.11", 40003, 40004), add_jump=False).render().splitlines()
    assert first[:3] == ["*nat", ":MUSLIN-DNS - [0:0]", "-A OUTPUT -d 127.0.0.11/32 -j MUSLIN-DNS"]
    assert "-A MUSLIN-DNS -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.11:40001" in first
    assert "-A MUSLIN-DNS -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.11:40002" in first
    assert first[-1] == "COMMIT"
    assert not any(line.startswith("-A OUTPUT") for line in again)
    assert again[1] == ":MUSLIN-DNS - [0:0]"  # declaring the chain empties it: the old ports go


def test_dns_redirect_ports_read_back_what_the_redirect_wrote() -> None:
    rules = [line for line in dns_redirect_batch(DNSRedirect("127.0.0.11", 40001, 40002), True).render().splitlines()
             if line.startswith("-A MUSLIN-DNS")]
    assert dns_redirect_ports(rules, "127.0.0.11") == (40001, 40002)
    assert dns_redirect_ports(rules, "127.0.0.12") == (0, 0)  # another address's redirect is not ours
    assert dns_redirect_ports([], "127.0.0.11") == (0, 0)
