"""The choice of a container's gateway endpoint, as libnetwork orders a sandbox's endpoints."""

from ipaddress import IPv4Address, IPv4Interface

from muslin.engine.gateway import GatewayCandidate, gateway_endpoint
from muslin.engine.model import Endpoint, Network


def _candidate(name: str, internal: bool = False, priority: int = 0, gateway: bool = True) -> GatewayCandidate:
    net = Network(id=name + "-id", name=name, driver="bridge", created="", internal=internal)
    ep = Endpoint(id="ep-" + name, network_id=net.id, container_id="c", container_name="c",
                  address=IPv4Interface("10.0.0.2/24"), mac="", ifname="eth0",
                  gateway=None if internal or not gateway else IPv4Address("10.0.0.1"))
    return GatewayCandidate(net, ep, priority)


def _chosen(*candidates: GatewayCandidate) -> str | None:
    found = gateway_endpoint(list(candidates))
    return found.network.name if found else None


def test_network_name_order_decides_between_equals() -> None:
    assert _chosen(_candidate("zzz"), _candidate("aaa")) == "aaa"
    assert _chosen(_candidate("web"), _candidate("bridge")) == "bridge"
    assert _chosen(_candidate("zzz")) == "zzz"


def test_an_internal_network_never_gives_the_gateway() -> None:
    assert _chosen(_candidate("aaa", internal=True), _candidate("zzz")) == "zzz"
    assert _chosen(_candidate("aaa", internal=True)) is None
    assert _chosen() is None


def test_an_endpoint_without_a_gateway_does_not_give_one() -> None:
    assert _chosen(_candidate("aaa", gateway=False), _candidate("zzz")) == "zzz"


def test_a_higher_priority_wins_over_the_name() -> None:
    assert _chosen(_candidate("aaa"), _candidate("zzz", priority=10)) == "zzz"
    assert _chosen(_candidate("aaa", priority=-1), _candidate("zzz")) == "zzz"
    # Priority never makes an internal network a gateway.
    assert _chosen(_candidate("aaa", internal=True, priority=10), _candidate("zzz")) == "zzz"
