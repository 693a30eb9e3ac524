"""The routed underlay's top of rack: BIRD in the router namespace as every node's BGP peer.

It speaks eBGP (AS 65000) with every node from its address on the node's segment, installs the routes it
learns, and passes each node's subnet on to all the others, so container subnets route across the two
segments with no encapsulation. The nodes learn of it from BGPPeer entries in etcd, one per node (its
address differs per segment), as Calico's per-node BGPPeer resources do.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from pathlib import Path

from muslin.fabric.bird import Bird, BirdConfig, BgpNeighbor, protocol_name, render_config
from muslin.kernel import netns
from muslin.lab.topology import Underlay

TOR_AS = 65000


def tor_config(underlay: Underlay, network: IPv4Network, subnet_len: int, node_as: int, log_file: str) -> BirdConfig:
    neighbors = tuple(BgpNeighbor(protocol_name("node", str(h.address)), h.address, node_as, True)
                      for h in underlay.hosts)
    return BirdConfig(router_id=underlay.router_addresses[0], as_number=TOR_AS, network=network,
                      subnet_len=subnet_len, own_subnet=None, neighbors=neighbors, export_all=True,
                      log_file=log_file)


def start_tor(underlay: Underlay, state_dir: str, network: IPv4Network, subnet_len: int, node_as: int) -> Bird:
    assert underlay.router, "the underlay has no router (create it with routed=True)"
    bird = Bird(Path(state_dir), "tor", netns.path_for(underlay.router))
    bird.write_config(render_config(tor_config(underlay, network, subnet_len, node_as, str(bird.log_path))))
    bird.start()
    return bird


def node_peers(underlay: Underlay, etcd_prefix: str) -> dict[str, str]:
    """The BGPPeer entries (key -> JSON) that make every node peer with the router on its own segment."""
    peers = {}
    for host in underlay.hosts:
        assert host.gateway is not None
        name = host.name[len(underlay.prefix):]
        peers[f"{etcd_prefix.rstrip('/')}/bgp/peers/tor-{name}"] = json.dumps(
            {"PeerIP": str(host.gateway), "ASNumber": TOR_AS, "Node": str(host.address)})
    return peers
