"""dockerd's --cluster-store, --cluster-advertise and --cluster-store-opt, parsed."""

from __future__ import annotations

import pytest

from muslin.engine.cluster_store import StoreAddress, parse_cluster_config


def test_members_prefix_and_opts():
    cfg = parse_cluster_config("etcd://192.168.255.154:2379,192.168.255.155:2379/lab", "eth0:2376",
                               ["discovery.ttl=10s", "discovery.heartbeat=2", "kv.cacertfile=/ca.pem"])
    assert cfg.members == (StoreAddress("192.168.255.154", 2379), StoreAddress("192.168.255.155", 2379))
    assert cfg.prefix == "lab" and cfg.advertise_host == "eth0"
    assert (cfg.ttl, cfg.heartbeat, cfg.cacertfile, cfg.tls) == (10, 2, "/ca.pem", True)


def test_defaults():
    cfg = parse_cluster_config("etcd://h:2379", "10.1.2.3:2376", [])
    assert cfg.prefix == "muslin" and not cfg.tls and cfg.advertise_host == "10.1.2.3"


@pytest.mark.parametrize("store, advertise, opts, words", [
    ("consul://h:8500", "eth0:2376", [], "only etcd"),
    ("etcd://h", "eth0:2376", [], "host:port"),
    ("etcd://h:2379", "", [], "required"),
    ("etcd://h:2379", "eth0", [], "IFACE:PORT"),
    ("etcd://h:2379", "eth0:2376", ["kv.path=/x"], "expected one of"),
    ("etcd://h:2379", "eth0:2376", ["discovery.ttl=abc"], "seconds"),
    ("etcd://h:2379", "eth0:2376", ["discovery.ttl=5", "discovery.heartbeat=5"], "shorter"),
])
def test_refused(store, advertise, opts, words):
    with pytest.raises(ValueError, match=words):
        parse_cluster_config(store, advertise, opts)
