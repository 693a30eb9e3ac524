"""Shared fixtures: namespaces that tests create and always remove, and a leak check around each test."""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from muslin.kernel import netns

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root to create network namespaces")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


@pytest.fixture
def make_netns() -> Iterator:
    """Factory for fresh named namespaces (``/run/netns/mt-…``); all are removed at teardown."""
    made: list[str] = []

    def make(prefix: str = "mt-") -> str:
        name = unique(prefix)
        netns.create(name)
        made.append(name)
        return name

    yield make
    for name in made:
        netns.remove(name)


@pytest.fixture
def host_ns(make_netns) -> str:
    return make_netns()


def _container_cgroups() -> frozenset[str]:
    """cgroups runc made for our containers (cgroupsPath /muslin-<id>), in every hierarchy."""
    out = set()
    for hierarchy in glob.glob("/sys/fs/cgroup/*/"):
        out.update(os.path.basename(p) for p in glob.glob(os.path.join(hierarchy, "muslin-*")))
    return frozenset(out)


# What fixtures shared by several tests made (a module's daemon, a package's lab or cluster): it
# outlives the test during which it was made, so the per-test check leaves it out, and
# shared_fixtures_leave_nothing checks at the end of the run that it is gone.
SHARED_NAMESPACES: set[str] = set()
SHARED_CGROUPS: set[str] = set()


def _namespaces() -> frozenset[str]:
    return frozenset(os.listdir(netns.NETNS_RUN_DIR)) if os.path.isdir(netns.NETNS_RUN_DIR) else frozenset()


@contextlib.contextmanager
def kept_across_tests() -> Iterator[None]:
    """Around the making of a shared fixture: what it makes is the fixture's to remove, not the test's."""
    spaces, cgroups = _namespaces(), _container_cgroups()
    try:
        yield
    finally:
        SHARED_NAMESPACES.update(_namespaces() - spaces)
        SHARED_CGROUPS.update(_container_cgroups() - cgroups)


@pytest.fixture(scope="session", autouse=True)
def shared_fixtures_leave_nothing() -> Iterator[None]:
    yield
    if IS_ROOT and not os.environ.get("MUSLIN_SHARED_DEV_MACHINE"):
        assert not SHARED_NAMESPACES & _namespaces(), "shared fixtures left namespaces"
        assert not SHARED_CGROUPS & _container_cgroups(), "shared fixtures left container cgroups"


def _root_snapshot() -> tuple[frozenset[str], frozenset[str], str, int]:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = frozenset(line.split(": ")[1].split("@")[0] for line in links.splitlines() if ": " in line)
    spaces = _namespaces()
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        forward = f.read().strip()
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    # and nft's tables: muslind's nftables backend (its default) writes table ip muslin
    rules += subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    ours = sum(1 for line in rules.splitlines() if "MUSLIN" in line.upper() or "FLANNEL" in line.upper())
    return names, spaces, forward, ours


@pytest.fixture(autouse=True)
def root_namespace_untouched(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every root test must leave the machine's own namespace as it found it."""
    if not IS_ROOT or "root" not in request.keywords:
        yield
        return
    before, cgroups_before = _root_snapshot(), _container_cgroups()
    yield
    after, cgroups_after = _root_snapshot(), _container_cgroups()
    assert after[0] == before[0], f"links leaked into the root namespace: {after[0] - before[0]}"
    # MUSLIN_SHARED_DEV_MACHINE=1: other engineers' test runs come and go on this machine; their
    # namespaces are not this run's leaks. CI never sets it.
    if not os.environ.get("MUSLIN_SHARED_DEV_MACHINE"):
        ours_after, ours_before = after[1] - SHARED_NAMESPACES, before[1] - SHARED_NAMESPACES
        assert ours_after == ours_before, f"network namespaces leaked: {ours_after - ours_before}"
        leaked = cgroups_after - cgroups_before - SHARED_CGROUPS
        assert not leaked, f"container cgroups leaked: {leaked}"
    assert after[2] == before[2], "ip_forward changed in the root namespace"
    assert after[3] == before[3], "iptables rules or nft tables naming muslin/flannel changed in the root namespace"
