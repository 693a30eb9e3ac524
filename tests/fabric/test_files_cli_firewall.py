"""File formats, flags/environment handling and firewall rule text (no kernel)."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from muslin.fabric import cli, firewall
from muslin.fabric.files import (SubnetEnv, docker_opts_path_for, parse_subnet_env, read_subnet_env,
                                 write_subnet_files)
from muslin.kernel import iptables

ENV = SubnetEnv(IPv4Network("172.21.0.0/16"), IPv4Interface("172.21.31.1/24"), 1450, True)


def test_subnet_env_and_docker_options_as_flannel_writes_them(tmp_path) -> None:
    subnet_file = str(tmp_path / "flannel" / "subnet.env")
    write_subnet_files(ENV, subnet_file, docker_opts_path_for(subnet_file))
    assert open(subnet_file).read() == ("FLANNEL_NETWORK=172.21.0.0/16\nFLANNEL_SUBNET=172.21.31.1/24\n"
                                        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    assert open(tmp_path / "flannel" / "docker").read() == (
        'DOCKER_OPT_BIP="--bip=172.21.31.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=false"\n'
        'DOCKER_OPT_MTU="--mtu=1450"\nDOCKER_NETWORK_OPTIONS=" --bip=172.21.31.1/24 --ip-masq=false --mtu=1450"\n')
    assert sorted(os.listdir(tmp_path / "flannel")) == ["docker", "subnet.env"]  # no temp files left
    values = read_subnet_env(str(tmp_path / "flannel" / "docker"))
    assert values["DOCKER_NETWORK_OPTIONS"] == " --bip=172.21.31.1/24 --ip-masq=false --mtu=1450"
    assert parse_subnet_env(read_subnet_env(subnet_file)) == ENV


def test_seed_subnet_env_without_masquerading_reads_back(tmp_path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text("FLANNEL_NETWORK=172.21.0.0/16\nFLANNEL_SUBNET=172.21.31.1/24\nFLANNEL_MTU=1472\n"
                    "FLANNEL_IPMASQ=false\n")
    env = parse_subnet_env(read_subnet_env(str(path)))
    assert env.mtu == 1472 and not env.ipmasq
    assert env.docker_options()["DOCKER_OPT_IPMASQ"] == "--ip-masq=true"


def test_bad_subnet_files_are_refused(tmp_path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text("FLANNEL_NETWORK 172.21.0.0/16\n")
    with pytest.raises(ValueError, match="subnet.env:1"):
        read_subnet_env(str(path))
    with pytest.raises(ValueError, match="lacks FLANNEL_SUBNET"):
        parse_subnet_env({"FLANNEL_NETWORK": "172.21.0.0/16"})


def test_flags_environment_and_sysconfig_precedence() -> None:
    env = {
        "FLANNEL_ETCD_ENDPOINTS": "http://192.168.255.154:2379,http://192.168.255.155:2379",
        "FLANNEL_ETCD_PREFIX": "/atomic.io/network",
        "FLANNEL_OPTIONS": "--logtostderr=false --log_dir=/var/log/ --iface=ens33",
        "FLANNELD_IP_MASQ": "true",
        "FLANNELD_SUBNET_FILE": "/tmp/x/subnet.env",
        "FLANNELD_IFACE": "eth9",
    }
    args = cli.parse(["-public-ip=10.0.0.7", "--iface", "eth1"], env)
    options = cli.options_from(args)
    assert [str(e) for e in options.endpoints] == ["http://192.168.255.154:2379", "http://192.168.255.155:2379"]
    assert options.prefix == "/atomic.io/network"
    assert options.ifaces == ["ens33", "eth1"]  # flags given replace the FLANNELD_IFACE default
    assert options.ip_masq is True and options.subnet_file == "/tmp/x/subnet.env"
    assert options.public_ip == IPv4Address("10.0.0.7")
    assert options.renew_margin_minutes == 60 and options.iptables_resync == 5.0


def test_flanneld_defaults() -> None:
    options = cli.options_from(cli.parse([], {}))
    assert [str(e) for e in options.endpoints] == ["http://127.0.0.1:4001", "http://127.0.0.1:2379"]
    assert options.prefix == "/coreos.com/network" and options.subnet_file == "/run/flannel/subnet.env"
    assert options.ip_masq is False and options.healthz_port == 0 and options.etcd_api == "auto"


@pytest.mark.parametrize("margin", ["0", "1440", "-5"])
def test_renew_margin_outside_the_lease_is_refused_as_flanneld_does(margin: str) -> None:
    with pytest.raises(ValueError, match="out of range 1..1439"):
        cli.options_from(cli.parse([f"--subnet-lease-renew-margin={margin}"], {}))


def test_bad_endpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        cli.options_from(cli.parse(["--etcd-endpoints=192.168.255.154:2379"], {}))


def test_version_flag(capsys) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("muslin-flanneld ")


def test_firewall_rules_follow_flannels_postrouting_logic() -> None:
    spec = firewall.FirewallSpec(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.55.0/24"), ip_masq=True)
    filter_ = iptables.Ruleset({"FORWARD", "MUSLIN-FLANNEL-FWD"}, [
        "-A FORWARD -j MUSLIN-FLANNEL-FWD", "-A MUSLIN-FLANNEL-FWD -s 10.5.0.0/16 -j ACCEPT",
        "-A MUSLIN-FLANNEL-FWD -d 10.5.0.0/16 -j ACCEPT"])
    text = firewall.sync_batch(spec, iptables.Ruleset(), filter_).render()
    assert text == (  # the filter part is in place already: only nat is written
        "*nat\n:MUSLIN-FLANNEL-POSTRTG - [0:0]\n"
        "-A MUSLIN-FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN\n"
        "-A MUSLIN-FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.0.0/16 -j RETURN\n"
        "-A MUSLIN-FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully\n"
        "-A MUSLIN-FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.55.0/24 -j RETURN\n"
        "-A MUSLIN-FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -j MASQUERADE --random-fully\n"
        "-I POSTROUTING 1 -j MUSLIN-FLANNEL-POSTRTG\nCOMMIT\n")


def test_firewall_drops_the_nat_chain_when_masquerading_is_switched_off() -> None:
    spec = firewall.FirewallSpec(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.55.0/24"), ip_masq=False)
    nat = iptables.Ruleset({"POSTROUTING", "MUSLIN-FLANNEL-POSTRTG"}, ["-A POSTROUTING -j MUSLIN-FLANNEL-POSTRTG"])
    text = firewall.sync_batch(spec, nat, iptables.Ruleset()).render()
    assert text == (
        "*filter\n:MUSLIN-FLANNEL-FWD - [0:0]\n-A MUSLIN-FLANNEL-FWD -s 10.5.0.0/16 -j ACCEPT\n"
        "-A MUSLIN-FLANNEL-FWD -d 10.5.0.0/16 -j ACCEPT\n-I FORWARD 1 -j MUSLIN-FLANNEL-FWD\nCOMMIT\n"
        "*nat\n-D POSTROUTING -j MUSLIN-FLANNEL-POSTRTG\n-F MUSLIN-FLANNEL-POSTRTG\n-X MUSLIN-FLANNEL-POSTRTG\n"
        "COMMIT\n")


def test_firewall_teardown_removes_jumps_and_chains() -> None:
    nat = iptables.Ruleset({"POSTROUTING", "MUSLIN-FLANNEL-POSTRTG"},
                           ["-A POSTROUTING -j MUSLIN-FLANNEL-POSTRTG", "-A MUSLIN-FLANNEL-POSTRTG -j RETURN"])
    filter_ = iptables.Ruleset({"FORWARD"}, [])
    assert firewall.teardown_batch(nat, filter_).render() == (
        "*nat\n-D POSTROUTING -j MUSLIN-FLANNEL-POSTRTG\n-F MUSLIN-FLANNEL-POSTRTG\n-X MUSLIN-FLANNEL-POSTRTG\n"
        "COMMIT\n")


def test_glog_flags_are_accepted_with_or_without_values() -> None:
    args = cli.parse(["-logtostderr", "-v", "2", "--log_dir=/var/log/", "-alsologtostderr=false", "-iface=eth0"], {})
    assert (args.logtostderr, args.v, args.log_dir, args.alsologtostderr) == ("true", "2", "/var/log/", "false")
    assert cli.options_from(args).ifaces == ["eth0"]
    assert cli.parse(["-v=3"], {}).v == "3"


def test_etcd_credentials_from_flags_and_environment() -> None:
    options = cli.options_from(cli.parse(["-etcd-username=flannel"], {"FLANNELD_ETCD_PASSWORD": "s3cret"}))
    assert (options.auth.username, options.auth.password) == ("flannel", "s3cret")
    assert "s3cret" not in repr(options)
    assert not cli.options_from(cli.parse([], {})).auth
    with pytest.raises(ValueError, match="--etcd-username and --etcd-password must be given together"):
        cli.options_from(cli.parse(["--etcd-username=flannel"], {}))
