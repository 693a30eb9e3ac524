"""Which networks GlobalNetworks' encryption sync counts (pure logic, with the store, the cluster and
the kernel faked): a join under way counts as joined for every sync until its local endpoint record is
written, so a sync for another network cannot take away what that join added; a failed join and a
removed network leave nothing of theirs programmed; each sync runs under the one encryption lock."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from types import SimpleNamespace

import pytest

from muslin.engine.global_networks import GlobalNetworks, RemoteEndpoint
from muslin.engine.model import Endpoint, IPAMPool, Network
from muslin.engine.overlay_encryption import ClusterKey
from muslin.engine.settings import OverlaySettings

HERE, PEER_X, PEER_Y = IPv4Address("192.168.255.1"), IPv4Address("192.168.255.2"), IPv4Address("192.168.255.3")


def encrypted(net_id: str, vni: int) -> Network:
    return Network(id=net_id, name=net_id, driver="overlay", created="", options={"encrypted": ""},
                   pools=[IPAMPool(subnet=IPv4Network(f"10.0.{vni % 256}.0/24"))], settings=OverlaySettings(vni=vni),
                   scope="global")


def endpoint(net: Network, ep_id: str) -> Endpoint:
    return Endpoint(id=ep_id, network_id=net.id, container_id=ep_id, container_name=ep_id,
                    address=IPv4Interface("10.0.0.2/24"), mac="", ifname="eth0")


def remote(net: Network, vtep: IPv4Address) -> dict[str, RemoteEndpoint]:
    return {"r" + net.id: RemoteEndpoint(engine="other", vtep=vtep, endpoint_id="r" + net.id, container_id="c",
                                         name="c", aliases=(), hostname="", address=IPv4Interface("10.0.0.9/24"),
                                         mac="")}


@dataclass
class FakeStore:
    nets: list[Network] = field(default_factory=list)
    eps: list[Endpoint] = field(default_factory=list)

    def networks(self) -> list[Network]:
        return list(self.nets)

    def endpoints(self, network_id: str) -> list[Endpoint]:
        return [ep for ep in self.eps if ep.network_id == network_id]


class RecordingEncryption:
    """What each sync asked the kernel for, and whether the sync held the lock meanwhile."""

    def __init__(self, owner: GlobalNetworks) -> None:
        self.owner = owner
        self.calls: list[tuple[set[IPv4Address], set[int]]] = []
        self.active = True

    def sync(self, local: IPv4Address, remotes: set[IPv4Address], vnis: set[int], key: ClusterKey) -> None:
        assert local == HERE and self.owner._encryption_lock.locked()
        self.calls.append((set(remotes), set(vnis)))
        self.active = bool(remotes or vnis)


X, Y = encrypted("x", 4096), encrypted("y", 4097)


@pytest.fixture
def engine() -> tuple[GlobalNetworks, FakeStore, RecordingEncryption]:
    store = FakeStore(nets=[X, Y])
    driver = SimpleNamespace(underlay=SimpleNamespace(ip=HERE))
    networks = GlobalNetworks(SimpleNamespace(root="/muslin/network/v1.0/"), store, driver,  # type: ignore[arg-type]
                              "me", lambda fn: None)
    networks._key = ClusterKey(bytes(16), 1)
    networks._remote = {X.id: remote(X, PEER_X), Y.id: remote(Y, PEER_Y)}
    recorder = RecordingEncryption(networks)
    networks.encryption = recorder  # type: ignore[assignment]
    return networks, store, recorder


def test_a_sync_for_another_network_keeps_a_join_under_way(engine) -> None:
    networks, store, recorder = engine
    with networks.joining(X):
        networks._sync_encryption()  # the join's own sync (its endpoint is in the cluster store only)
        store.eps.append(endpoint(Y, "on-y"))
        networks._sync_encryption()  # a join of Y meanwhile: X's SAs and marks stay
        store.eps.append(endpoint(X, "on-x"))  # the join's local record
    networks._sync_encryption()
    assert recorder.calls == [({PEER_X}, {4096}), ({PEER_X, PEER_Y}, {4096, 4097}), ({PEER_X, PEER_Y}, {4096, 4097})]
    assert not networks._joining


def test_a_failed_join_takes_its_network_out(engine) -> None:
    networks, store, recorder = engine
    store.eps.append(endpoint(Y, "on-y"))
    with pytest.raises(RuntimeError), networks.joining(X):
        networks._sync_encryption()
        raise RuntimeError("wiring failed")
    assert recorder.calls == [({PEER_X, PEER_Y}, {4096, 4097}), ({PEER_Y}, {4097})]
    assert not networks._joining


def test_a_leaving_endpoint_is_left_out(engine) -> None:
    networks, store, recorder = engine
    store.eps += [endpoint(X, "on-x"), endpoint(Y, "on-y")]
    networks._sync_encryption(leaving="on-x")
    assert recorder.calls == [({PEER_Y}, {4097})]


def test_removing_an_encrypted_network_syncs_without_it(engine) -> None:
    networks, store, recorder = engine
    networks.cluster.transaction = lambda compares, changes: True
    networks.driver.delete_network = lambda net: None
    store.transaction = contextlib.nullcontext
    store.delete_network = lambda db, net_id: store.nets.remove(next(n for n in store.nets if n.id == net_id))
    networks.delete(X)
    assert recorder.calls == [(set(), set())]  # whatever an earlier sync left for X goes
    plain = Network(id="plain", name="plain", driver="overlay", created="", scope="global",
                    pools=[IPAMPool(subnet=IPv4Network("10.0.9.0/24"))], settings=OverlaySettings(vni=4099))
    store.nets.append(plain)
    networks.delete(plain)
    assert recorder.calls == [(set(), set())]  # a plain network's removal changes nothing of the encryption
