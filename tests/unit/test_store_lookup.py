from ipaddress import IPv4Address, IPv4Network

from muslin.engine.model import IPAMPool, Network
from muslin.engine.store import Store


def _net(id_: str, name: str) -> Network:
    return Network(id=id_, name=name, driver="bridge", created="now",
                   pools=[IPAMPool(IPv4Network("10.0.0.0/24"), IPv4Address("10.0.0.1"))])


def test_references_resolve_as_docker_does_id_then_name_then_prefix(tmp_path) -> None:
    store = Store(tmp_path)
    try:
        a, b = "ab12" + "0" * 60, "ab34" + "0" * 60
        # A network named like another's id prefix: the exact name wins over the prefix.
        with store.transaction() as db:
            store.put_network(db, _net(a, "front"))
            store.put_network(db, _net(b, "ab12"))
        assert [n.name for n in store.find_networks(a)] == ["front"]
        assert [n.name for n in store.find_networks("front")] == ["front"]
        assert [n.name for n in store.find_networks("ab12")] == ["ab12"]
        assert [n.name for n in store.find_networks("ab3")] == ["ab12"]
        assert sorted(n.name for n in store.find_networks("ab")) == ["ab12", "front"]  # ambiguous
        assert store.find_networks("") == [] and store.find_networks("zz") == []
        assert store.find_networks("a%") == [] and store.find_networks("_b") == []  # no SQL patterns
        with store.transaction() as db:
            store.put_container(db, a, "web", {"id": a})
        assert store.find_containers("web") == [{"id": a}] and store.find_containers("ab1") == [{"id": a}]
    finally:
        store.close()
