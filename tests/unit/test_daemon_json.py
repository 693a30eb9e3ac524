"""muslind's daemon.json: dockerd's keys, its refusals (unknown keys, keys also given as flags) and
the flags' own checks of the values."""

from __future__ import annotations

import json
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from muslin import daemon, daemon_json
from muslin.listeners import TcpListener, UnixListener


def load(tmp_path: Path, content: object, *argv: str, explicit: bool = True) -> tuple[object, list[str]]:
    path = tmp_path / "daemon.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    parser = daemon.build_parser()
    args = parser.parse_args(list(argv))
    taken = daemon_json.merge(args, daemon_json.given_flags(parser, args, list(argv)), path, explicit,
                              daemon.parse_bip)
    return args, taken


def refused(tmp_path: Path, content: object, *argv: str) -> str:
    with pytest.raises(daemon_json.ConfigFileError) as caught:
        load(tmp_path, content, *argv)
    message = str(caught.value)
    assert message.startswith(f"unable to configure the Docker daemon with file {tmp_path / 'daemon.json'}: ")
    return message.split(": ", 1)[1]


def test_every_key_sets_its_flag(tmp_path: Path) -> None:
    args, taken = load(tmp_path, {
        "hosts": ["unix:///tmp/a.sock", "tcp://127.0.0.1:2376"], "group": "wheel", "tls": True, "tlsverify": True,
        "tlscacert": "/c/ca.pem", "tlscert": "/c/cert.pem", "tlskey": "/c/key.pem", "data-root": "/d",
        "exec-root": "/e", "pidfile": "/p.pid", "bridge": "br9", "bip": "172.21.31.1/24", "mtu": 1450,
        "ip-masq": False, "iptables": False, "ip-forward": False, "icc": False, "ip": "127.0.0.1",
        "firewall-backend": "nftables", "flannel-subnet-file": "/run/flannel/subnet.env", "cluster-store": "etcd://10.0.0.1:2379",
        "cluster-advertise": "eth0:2376", "cluster-store-opts": {"discovery.ttl": "20s", "kv.cacertfile": "/ca"},
        "debug": True})
    assert args.hosts == [UnixListener("/tmp/a.sock"), TcpListener("127.0.0.1", 2376)]
    assert (args.group, args.tls, args.tlsverify, args.tlscacert, args.tlscert, args.tlskey) == \
        ("wheel", True, True, "/c/ca.pem", "/c/cert.pem", "/c/key.pem")
    assert (args.data_root, args.exec_root, args.pidfile, args.bridge_name) == ("/d", "/e", "/p.pid", "br9")
    assert args.bip == IPv4Interface("172.21.31.1/24") and args.mtu == 1450
    assert (args.ip_masq, args.iptables, args.ip_forward, args.icc) == (False, False, False, False)
    assert args.firewall_backend == "nftables"
    assert (args.default_bind_ip, args.flannel_subnet_file, args.debug) == ("127.0.0.1", "/run/flannel/subnet.env", True)
    assert (args.cluster_store, args.cluster_advertise) == ("etcd://10.0.0.1:2379", "eth0:2376")
    assert args.cluster_store_opt == ["discovery.ttl=20s", "kv.cacertfile=/ca"]
    assert len(taken) == 24


def test_flags_and_the_file_combine_when_they_do_not_overlap(tmp_path: Path) -> None:
    args, _ = load(tmp_path, {"mtu": 1400, "cluster-store-opts": {"discovery.ttl": "9s"}},
                   "--bip", "10.9.0.1/16", "-D", "--cluster-store", "etcd://10.0.0.1:2379", "--cluster-advertise", "eth0:2376")
    assert args.mtu == 1400 and args.bip == IPv4Interface("10.9.0.1/16") and args.debug
    assert args.cluster_store_opt == ["discovery.ttl=9s"]
    config = daemon.config_from_args(args)
    assert config.mtu == 1400 and str(config.bip) == "10.9.0.1/16"
    assert config.cluster is not None and config.cluster.ttl == 9


def test_unknown_keys_are_refused_as_dockerd_does(tmp_path: Path) -> None:
    # dockerd's own keys that muslind does not honour are no option here either
    assert refused(tmp_path, {"mtu": 1400, "log-driver": "local", "bogus": 1}) == \
        "the following directives don't match any configuration option: bogus, log-driver"
    # the flag's name where the file wants dockerd's plural
    assert refused(tmp_path, {"cluster-store-opt": {"a": "b"}}).endswith("option: cluster-store-opt")


def test_a_key_also_given_as_a_flag_is_refused_whatever_the_values(tmp_path: Path) -> None:
    reason = refused(tmp_path, {"mtu": 1500, "hosts": ["unix:///tmp/f.sock"], "cluster-store-opts": {"k": "v"},
                                "bridge": "br1", "iptables": False},
                     "--mtu", "1500", "-H", "unix:///tmp/x.sock", "--cluster-store-opt", "k=w", "--bridge-name", "b",
                     "--iptables")
    assert reason == ("the following directives are specified both as a flag and in the configuration file: "
                      "bridge: (from flag: b, from file: br1), "
                      "cluster-store-opts: (from flag: map[k:w], from file: map[k:v]), "
                      "hosts: (from flag: [unix:///tmp/x.sock], from file: [unix:///tmp/f.sock]), "
                      "iptables: (from flag: true, from file: false), mtu: (from flag: 1500, from file: 1500)")


@pytest.mark.parametrize("content, reason", [
    ({"mtu": "1400"}, "invalid value for 'mtu': expected an integer, got a string (\"1400\")"),
    ('{"mtu": Infinity}', "invalid value for 'mtu': expected an integer, got a number"),
    ({"iptables": "false"}, "invalid value for 'iptables': expected true or false, got a string (\"false\")"),
    ({"hosts": "unix:///tmp/a.sock"}, "invalid value for 'hosts': expected a list of strings, got a string"),
    ({"hosts": ["udp://1.2.3.4:1"]}, "invalid value for 'hosts': unsupported -H 'udp://1.2.3.4:1'"),
    ({"bip": "10.1.0.0/16"}, "invalid value for 'bip': invalid --bip '10.1.0.0/16': the gateway cannot be"),
    ({"cluster-store-opts": ["discovery.ttl=20s"]}, "invalid value for 'cluster-store-opts': expected an object"),
    ('{"mtu": 1400,', "invalid JSON: "),
    ("[]", "the configuration must be a JSON object, not a list ([])"),
])
def test_bad_values_are_refused_clearly(tmp_path: Path, content: object, reason: str) -> None:
    assert refused(tmp_path, content).startswith(reason)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    parser = daemon.build_parser()
    args = parser.parse_args([])
    missing = tmp_path / "absent.json"
    assert daemon_json.merge(args, set(), missing, False, daemon.parse_bip) == []  # the default may be absent
    with pytest.raises(daemon_json.ConfigFileError, match="open .*absent.json: no such file or directory"):
        daemon_json.merge(args, set(), missing, True, daemon.parse_bip)
    assert load(tmp_path, " \n")[1] == []


def test_the_default_file_is_muslins_own() -> None:
    assert daemon_json.DEFAULT_PATH == Path("/etc/muslin/daemon.json")
    assert daemon.build_parser().parse_args([]).config_file is None
