"""Legacy links as text: parsing ``name:alias``, the parent's variables and /etc/hosts line, and the
endpoint links' DNS aliases (dockerd's links.Link.ToEnv and opts.ParseLink, checked output for output)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from muslin.engine import link_text
from muslin.engine.link_text import LinkRef
from muslin.errors import InvalidArgument


def test_parse_link_takes_the_three_forms_docker_does() -> None:
    assert link_text.parse_link("db:data") == LinkRef("db", "data")
    assert link_text.parse_link("db") == LinkRef("db", "db")
    # What inspect shows, sent back by a client that copies a HostConfig.
    assert link_text.parse_link("/db:/web/data") == LinkRef("db", "data")


@pytest.mark.parametrize("value, message", [("", "empty string specified for links"),
                                            ("a:b:c", "bad format for links: a:b:c"),
                                            ("a:", "bad format for links: a:"),
                                            (":b", "bad format for links: :b")])
def test_parse_link_refuses_what_docker_refuses(value: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        link_text.parse_link(value)
    assert info.value.message == message


def test_env_of_a_child_without_ports_names_it_and_copies_its_environment_but_home_and_path() -> None:
    env = link_text.link_env("/web/db-1", IPv4Address("172.17.0.2"),
                         ["PATH=/bin", "HOME=/root", "FOO=1", "EQ=a=b", "NOVALUE"], [])
    assert env == ["DB_1_NAME=/web/db-1", "DB_1_ENV_FOO=1", "DB_1_ENV_EQ=a=b"]


def test_env_of_ports_lowest_first_tcp_before_udp() -> None:
    env = link_text.link_env("/p/al", "10.0.0.2", [], ["90/udp", "80/tcp", "90/tcp"])
    assert env[0] == "AL_PORT=tcp://10.0.0.2:80"
    assert env[1:13] == [
        "AL_PORT_80_TCP=tcp://10.0.0.2:80", "AL_PORT_80_TCP_ADDR=10.0.0.2", "AL_PORT_80_TCP_PORT=80",
        "AL_PORT_80_TCP_PROTO=tcp",
        "AL_PORT_90_TCP=tcp://10.0.0.2:90", "AL_PORT_90_TCP_ADDR=10.0.0.2", "AL_PORT_90_TCP_PORT=90",
        "AL_PORT_90_TCP_PROTO=tcp",
        "AL_PORT_90_UDP=udp://10.0.0.2:90", "AL_PORT_90_UDP_ADDR=10.0.0.2", "AL_PORT_90_UDP_PORT=90",
        "AL_PORT_90_UDP_PROTO=udp"]
    assert env[-1] == "AL_NAME=/p/al"


def test_env_of_three_consecutive_ports_has_a_range_and_two_do_not() -> None:
    three = link_text.link_env("/p/r", "10.0.0.3", [], ["8000/tcp", "8001/tcp", "8002/tcp"])
    assert three[1:7] == ["R_PORT_8000_TCP_START=tcp://10.0.0.3:8000", "R_PORT_8000_TCP_ADDR=10.0.0.3",
                          "R_PORT_8000_TCP_PROTO=tcp", "R_PORT_8000_TCP_PORT_START=8000",
                          "R_PORT_8000_TCP_END=tcp://10.0.0.3:8002", "R_PORT_8000_TCP_PORT_END=8002"]
    two = link_text.link_env("/p/r", "10.0.0.3", [], ["8000/tcp", "8001/tcp"])
    assert not any("_START" in e for e in two)


def test_hosts_line_names_alias_hostname_and_name_once_each() -> None:
    assert link_text.hosts_line("172.17.0.2", "db", "mydb", "abc123") == "172.17.0.2\tdb abc123 mydb"
    assert link_text.hosts_line("172.17.0.2", "mydb", "mydb", "abc123") == "172.17.0.2\tmydb abc123"


def test_endpoint_links_become_aliases_for_the_embedded_dns() -> None:
    assert link_text.endpoint_aliases(["Upstream:Bar", "db"]) == {"bar": "upstream", "db": "db"}
