import pytest

from muslin.engine import ports
from muslin.errors import Conflict, InvalidArgument
from muslin.engine.ports import PortBinding


def test_port_keys_take_tcp_by_default_and_refuse_bad_ones() -> None:
    assert ports.parse_port_key("80") == (80, "tcp")
    assert ports.parse_port_key("53/udp") == (53, "udp")
    assert ports.parse_port_key("53/UDP") == (53, "udp")
    assert ports.parse_port_key("9/sctp") == (9, "sctp")
    for bad, message in (("80/icmp", "invalid proto"), ("http/tcp", 'invalid port specification: "http"'),
                         ("0/tcp", 'invalid port specification: "0"'), ("65536", 'invalid port specification: "65536"')):
        with pytest.raises(InvalidArgument, match=message):
            ports.parse_port_key(bad)


def test_an_images_exposed_ports_keep_only_the_well_formed_keys() -> None:
    assert ports.valid_port_keys({"80": {}, "53/udp": {}, "abc/tcp": {}, "80/icmp": {}}) == ["80/tcp", "53/udp"]


def test_publish_all_adds_every_exposed_port_not_bound_already() -> None:
    explicit = [PortBinding(80, "tcp", "", 8080)]
    assert ports.bindings_of(explicit, ["80/tcp", "443/tcp", "53/udp", "443/tcp"], True) == [
        PortBinding(80, "tcp", "", 8080), PortBinding(443, "tcp", "", 0), PortBinding(53, "udp", "", 0)]
    assert ports.bindings_of([], ["443/tcp"], False) == []  # exposed alone publishes nothing
    assert ports.bindings_of(explicit, ["443/tcp"], False) == explicit


def test_assign_keeps_given_ports_and_picks_free_ephemeral_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "EPHEMERAL", range(40000, 40004))  # a small range to fill up
    taken = [("tcp", "", port) for port in ports.EPHEMERAL[:-1]]  # all but the last ephemeral port
    assigned = ports.assign([PortBinding(80, "tcp", "", 8080), PortBinding(443, "tcp", "", 0)], taken)
    assert assigned == [PortBinding(80, "tcp", "", 8080), PortBinding(443, "tcp", "", ports.EPHEMERAL[-1])]
    # Two -P bindings in one container never get the same port.
    twice = ports.assign([PortBinding(80, "tcp", "", 0), PortBinding(81, "tcp", "", 0)], [])
    assert twice[0].host_port != twice[1].host_port
    assert all(b.host_port in ports.EPHEMERAL for b in twice)


def test_no_free_ephemeral_port_is_a_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "EPHEMERAL", range(40000, 40004))
    taken = [("udp", "0.0.0.0", port) for port in ports.EPHEMERAL]
    with pytest.raises(Conflict, match="no free host port"):
        ports.assign([PortBinding(53, "udp", "10.0.0.1", 0)], taken)
    assert ports.assign([PortBinding(53, "tcp", "", 0)], taken)[0].host_port in ports.EPHEMERAL  # tcp is free


def test_conflicts_by_protocol_and_address() -> None:
    with pytest.raises(Conflict, match="Bind for 0.0.0.0:8080 failed: port is already allocated"):
        ports.assign([PortBinding(80, "tcp", "", 8080)], [("tcp", "127.0.0.1", 8080)])  # everywhere vs one address
    with pytest.raises(Conflict, match="Bind for 127.0.0.1:8080 failed"):
        ports.assign([PortBinding(80, "tcp", "127.0.0.1", 8080)], [("tcp", "", 8080)])
    with pytest.raises(Conflict, match="Bind for 10.0.0.1:8080 failed"):  # one container asking twice
        ports.assign([PortBinding(80, "tcp", "10.0.0.1", 8080), PortBinding(81, "tcp", "10.0.0.1", 8080)], [])
    # Different addresses, or another protocol, share the port number.
    assert ports.assign([PortBinding(80, "tcp", "10.0.0.2", 8080), PortBinding(53, "udp", "", 8080)],
                        [("tcp", "10.0.0.1", 8080)]) == [PortBinding(80, "tcp", "10.0.0.2", 8080),
                                                         PortBinding(53, "udp", "", 8080)]


def test_ports_moving_to_another_endpoint_keep_the_host_ports_the_engine_chose() -> None:
    requested = [PortBinding(80, "tcp", "", 8080), PortBinding(80, "tcp", "", 0), PortBinding(53, "udp", "", 0),
                 PortBinding(22, "tcp", "", 0)]
    before = [PortBinding(80, "tcp", "", 8080), PortBinding(80, "tcp", "", 34567), PortBinding(53, "udp", "", 40000)]
    # The explicit 8080 is not handed to the "any port" binding of the same container port; one that was
    # never assigned (22) still asks for any.
    assert ports.keep_host_ports(requested, before) == [
        PortBinding(80, "tcp", "", 8080), PortBinding(80, "tcp", "", 34567), PortBinding(53, "udp", "", 40000),
        PortBinding(22, "tcp", "", 0)]
    assert ports.keep_host_ports(requested, []) == requested
