"""Records in the cluster store that muslind did not write (dockerd 20.10's libnetwork writes its own
``network/`` and ``endpoint/`` records under the same default prefix) are told apart from muslind's."""

from __future__ import annotations

import json
from ipaddress import IPv4Network

import pytest

from muslin.engine.global_networks import ForeignRecord, GlobalNetworks, _network_doc, _network_from_doc
from muslin.engine.model import IPAMPool, Network
from muslin.engine.settings import OverlaySettings

# as dockerd 20.10 wrote them on an etcd (keys and fields seen on a real one, values shortened)
DOCKERD_NETWORK = {"addrSpace": "GlobalDefault", "attachable": False, "configFrom": "", "created": "2026-12-01T20:50:10Z",
                   "driver": "overlay", "id": "4bdc0db91d8b", "name": "dov", "scope": "global"}
DOCKERD_ENDPOINT = {"anonymous": False, "disableResolution": False,
                    "ep_iface": {"addr": "10.0.9.2/24", "dstPrefix": "eth", "mac": "02:42:0a:00:09:02"}}


@pytest.mark.parametrize("raw", [json.dumps(DOCKERD_NETWORK).encode(), b"[]", b'"text"', b"not json"])
def test_a_network_record_not_muslinds_is_foreign(raw):
    with pytest.raises(ForeignRecord):
        _network_from_doc(raw)


def test_an_endpoint_record_not_muslinds_is_foreign():
    with pytest.raises(ForeignRecord):
        GlobalNetworks._remote_from_doc(json.dumps(DOCKERD_ENDPOINT).encode())


def test_muslinds_own_network_record_reads_back():
    net = Network(id="a" * 64, name="ov1", driver="overlay", created="2026-12-01T20:50:10Z",
                  pools=[IPAMPool(subnet=IPv4Network("10.0.9.0/24"))], settings=OverlaySettings(vni=4096),
                  scope="global")
    back = _network_from_doc(_network_doc(net))
    assert (back.id, back.name, back.pool.subnet, back.settings) == (net.id, "ov1", net.pool.subnet, net.settings)
