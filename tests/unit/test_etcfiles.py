from ipaddress import IPv4Address

from muslin.engine import etcfiles

HOST = etcfiles.HostResolvConf.parse("# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n"
                                     "search corp.example lab.example\noptions edns0\n")


def test_host_resolv_conf_parsing_and_loopback_resolvers_kept_from_containers() -> None:
    assert HOST.nameservers == ("127.0.0.53", "10.0.0.2")
    assert HOST.search == ("corp.example", "lab.example")
    assert HOST.nameservers_for_containers() == ["10.0.0.2"]
    assert etcfiles.HostResolvConf.parse("") == etcfiles.HostResolvConf()


def test_resolv_conf_on_the_default_bridge_takes_dns_flags_or_the_hosts_resolvers() -> None:
    assert etcfiles.resolv_conf([], [], [], None, HOST) == "nameserver 10.0.0.2\nsearch corp.example lab.example\n"
    assert etcfiles.resolv_conf(["10.9.9.9", "10.9.9.8"], ["a.example"], ["ndots:2"], None, HOST) == (
        "nameserver 10.9.9.9\nnameserver 10.9.9.8\nsearch a.example\noptions ndots:2\n")


def test_resolv_conf_behind_the_embedded_dns_names_only_it_and_defaults_to_ndots_0() -> None:
    # --dns goes to the embedded server's upstreams, not into the file.
    assert etcfiles.resolv_conf(["10.9.9.9"], [], [], "127.0.0.11", HOST) == (
        "nameserver 127.0.0.11\nsearch corp.example lab.example\noptions ndots:0\n")
    assert etcfiles.resolv_conf([], [], ["timeout:1"], "127.0.0.11", etcfiles.HostResolvConf()) == (
        "nameserver 127.0.0.11\noptions timeout:1\n")


def test_hosts_file_has_local_names_extra_hosts_then_a_line_per_network() -> None:
    extra = etcfiles.extra_hosts(["db:10.1.2.3", "gw:host-gateway"], IPv4Address("172.17.0.1"))
    assert extra == ["10.1.2.3\tdb", "172.17.0.1\tgw"]
    text = etcfiles.hosts_file("web", "", [IPv4Address("172.17.0.2"), IPv4Address("10.20.0.5")], extra)
    lines = text.splitlines()
    assert text.endswith("\n")
    assert lines[:len(etcfiles.LOCAL_HOSTS)] == list(etcfiles.LOCAL_HOSTS)
    assert lines[len(etcfiles.LOCAL_HOSTS):] == ["10.1.2.3\tdb", "172.17.0.1\tgw", "172.17.0.2\tweb", "10.20.0.5\tweb"]


def test_hosts_file_with_a_domain_names_the_fqdn_first() -> None:
    text = etcfiles.hosts_file("web", "lab.example", [IPv4Address("172.17.0.2")], [])
    assert text.splitlines()[-1] == "172.17.0.2\tweb.lab.example web"
    assert "web" not in etcfiles.hosts_file("web", "", [], [])  # not on any network yet: no own line


def test_host_network_hosts_file_is_the_hosts_own_then_extra_hosts() -> None:
    assert etcfiles.host_network_hosts_file("127.0.0.1\tlocalhost", ["10.1.2.3\tdb"]) == "127.0.0.1\tlocalhost\n10.1.2.3\tdb\n"
    assert etcfiles.host_network_hosts_file("127.0.0.1\tlocalhost\n", []) == "127.0.0.1\tlocalhost\n"
    assert etcfiles.host_network_hosts_file("", ["10.1.2.3\tdb"]) == "10.1.2.3\tdb\n"


def test_container_hostname_is_the_configured_one_or_the_short_id() -> None:
    cid = "0123456789abcdef" * 4
    assert etcfiles.container_hostname("", cid) == "0123456789ab"
    assert etcfiles.container_hostname("router1", cid) == "router1"
