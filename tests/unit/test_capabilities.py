import pytest

from muslin.errors import InvalidArgument
from muslin.runtime.spec import (CAPABILITY_NAMES, DEFAULT_CAPABILITIES, bounding_capabilities,
                                        capabilities, check_sysctls)


def test_dockers_rules_for_adding_and_dropping() -> None:
    assert set(capabilities([], [])) == set(DEFAULT_CAPABILITIES) & set(bounding_capabilities())
    assert "CAP_NET_ADMIN" in capabilities(["net_admin"], [])
    assert "CAP_MKNOD" not in capabilities([], ["MKNOD"])
    assert capabilities(["NET_ADMIN"], ["ALL"]) == ["CAP_NET_ADMIN"]  # added wins over dropped
    assert capabilities(["ALL"], []) == bounding_capabilities() == capabilities([], [], privileged=True)
    assert capabilities(["ALL"], [])[0] == CAPABILITY_NAMES[0]  # in the kernel's order
    every_but = capabilities(["ALL"], ["SYS_ADMIN", "net_admin"])  # dropped stay dropped
    assert "CAP_SYS_ADMIN" not in every_but and "CAP_NET_ADMIN" not in every_but and "CAP_CHOWN" in every_but
    with pytest.raises(InvalidArgument, match='invalid CapDrop: unknown capability: "CAP_NOPE"'):
        capabilities([], ["nope"])


def test_only_namespaced_sysctls_and_none_of_the_hosts_network() -> None:
    check_sysctls({"net.ipv4.ip_forward": "1", "kernel.shmmax": "1", "fs.mqueue.msg_max": "5"}, host_network=False)
    for bad in ("vm.swappiness", "kernel.hostname", "net"):
        with pytest.raises(InvalidArgument, match="is not allowed"):
            check_sysctls({bad: "1"}, host_network=False)
    with pytest.raises(InvalidArgument, match="host network namespace"):
        check_sysctls({"net.ipv4.ip_forward": "1"}, host_network=True)
    check_sysctls({"kernel.sem": "1 2 3 4"}, host_network=True)  # IPC stays the container's own


def test_a_capability_muslind_does_not_hold_is_refused_by_name(monkeypatch) -> None:
    import muslin.runtime.spec as spec

    monkeypatch.setattr(spec, "bounding_capabilities", lambda: [c for c in CAPABILITY_NAMES if c != "CAP_SYS_RESOURCE"])
    with pytest.raises(InvalidArgument, match="CAP_SYS_RESOURCE cannot be granted"):
        spec.capabilities(["SYS_RESOURCE"], [])
    assert "CAP_SYS_RESOURCE" not in spec.capabilities(["ALL"], [])
