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


def test_containers_with_links_come_from_the_partial_index(tmp_path) -> None:
    store = Store(tmp_path)
    try:
        with store.transaction() as db:
            for i in range(50):
                store.put_container(db, f"{i:064x}", f"plain{i}", {"id": f"{i:064x}", "links": []})
            store.put_container(db, "f" * 64, "parent", {"id": "f" * 64, "links": [{"child_id": "0" * 64}]})
            store.put_container(db, "e" * 64, "old", {"id": "e" * 64})  # a doc from before links existed
        assert store.containers_with_links() == [{"id": "f" * 64, "links": [{"child_id": "0" * 64}]}]
        plan = store._rows("EXPLAIN QUERY PLAN SELECT doc FROM containers "
                           "WHERE json_array_length(doc, '$.links') > 0")
        assert any("containers_with_links" in str(row) for row in plan)  # the index, not a full scan
    finally:
        store.close()


def test_what_each_container_operation_asks_is_answered_by_an_index(tmp_path) -> None:
    """A start, an exit and a removal each look up the container's endpoints and ports: with a
    thousand containers a full scan per operation made their cost grow with the load (issue #11)."""
    store = Store(tmp_path)
    try:
        for sql in ("SELECT doc FROM endpoints WHERE 1=1 AND container_id = ? ORDER BY rowid",
                    "DELETE FROM ports WHERE container_id = ?",
                    "SELECT doc FROM containers WHERE id = ?",
                    "SELECT id FROM containers WHERE name = ?"):
            plan = " ".join(str(row) for row in store._rows(f"EXPLAIN QUERY PLAN {sql}", "x"))
            assert "USING" in plan and "INDEX" in plan and "SCAN" not in plan, (sql, plan)
    finally:
        store.close()
