"""Engines sharing overlay networks: hosts on an underlay (muslin.lab.topology), an etcd cluster on them
(muslin.lab.etcd) and a muslind per host started with --cluster-store on it; all removed at the end,
also when a test fails. The etcd serves v3 (its JSON gateway on) or, for the scenarios where the store's
API makes a difference (the ``etcd_api`` fixture), only v2 over HTTP (its gateway off). Tests that leave the
engines as they found them borrow a two-engine cluster shared across the package (``shared_cluster``,
``shared_cluster_on``); those that stop etcd or an engine, or need three, make their own (``make_cluster``)."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from muslin.kernel import netns
from muslin.lab import topology
from muslin.lab.etcd import EtcdCluster
from muslin.lab.lab import unmount_under
from muslin.lab.rig import in_ns, wait_for
from muslin.lab.topology import Underlay

from ..conftest import kept_across_tests
from ..e2e.conftest import Daemon, daemon, daemon_factory, remove_containers  # noqa: F401 - fixtures for a muslind without a store
from ..fabric.conftest import processes_naming

TTL = 4  # seconds: a dead engine's endpoints expire after this (--cluster-store-opt discovery.ttl)


@dataclass
class Cluster:
    underlay: Underlay
    workdir: Path
    etcd: EtcdCluster
    engines: list[Daemon] = field(default_factory=list)

    @property
    def store_url(self) -> str:
        return "etcd://" + ",".join(e.removeprefix("http://") for e in self.etcd.endpoints)

    def start_engine(self, i: int) -> Daemon:
        host = self.underlay.hosts[i]
        root = self.workdir / f"engine{i + 1}"
        root.mkdir(exist_ok=True)
        d = Daemon(ns=host.name, root=root, sock=str(root / "docker.sock"),
                   args=["--cluster-store", self.store_url, "--cluster-advertise", f"{host.iface}:2376",
                         "--cluster-store-opt", f"discovery.ttl={TTL}", "--cluster-store-opt", "discovery.heartbeat=1"])
        # registered before it starts: a start that fails half-way is still stopped at cleanup
        if i < len(self.engines):
            self.engines[i] = d
        else:
            self.engines.append(d)
        d.start()
        return d

    @property
    def api(self) -> str:
        return "v3" if self.etcd.v3_gateway else "v2"

    def etcdctl(self, *args: str) -> str:
        proc = in_ns(self.underlay.hosts[0].name, "etcdctl", f"--endpoints={','.join(self.etcd.endpoints)}", *args,
                     env={"ETCDCTL_API": "3"})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def records(self, prefix: str) -> dict[str, str]:
        """Every key under prefix (a directory: ends in "/") and its value, from the keyspace the engines
        use: v3's through etcdctl, v2's through its HTTP API (its nodes also say which keys have a TTL)."""
        if self.api == "v3":
            lines = self.etcdctl("get", "--prefix", prefix).splitlines()
            return dict(zip(lines[0::2], lines[1::2]))
        return {node["key"]: node["value"] for node in self.v2_nodes(prefix)}

    def v2_nodes(self, prefix: str) -> list[dict]:
        """The v2 keyspace's nodes (not directories) under prefix, as etcd answers them."""
        url = f"{self.etcd.endpoints[0]}/v2/keys{urllib.parse.quote(prefix.rstrip('/'))}?recursive=true"
        try:
            with netns.entered(self.underlay.hosts[0].netns), urllib.request.urlopen(url, timeout=5) as resp:
                stack = [json.load(resp)["node"]]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise
        nodes = []
        while stack:
            node = stack.pop()
            if node.get("dir"):
                stack.extend(node.get("nodes", []))
            else:
                nodes.append(node)
        return nodes


@dataclass
class Made:
    """What one make() has built so far: registered before anything is built, so that cleanup also finds
    an underlay or a workdir whose cluster never came to be."""

    prefix: str
    workdir: Path | None = None
    cluster: Cluster | None = None


def attempt(failures: list[str], what: str, step: Callable[[], object]) -> None:
    """Run one cleanup step; a failure is recorded, and the steps after it still run."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - every failure is reported after the whole cleanup
        failures.append(f"{what}: {exc!r}")


def remove(made: Made, failures: list[str], tracebacks: list[str]) -> None:
    engines = made.cluster.engines if made.cluster else []
    for d in engines:
        attempt(failures, f"containers of {d.root}", lambda d=d: remove_containers(d))
    for d in engines:
        attempt(failures, f"stopping {d.root}", d.stop)
        if "Traceback" in d.log():
            tracebacks.append(d.log())
        attempt(failures, f"unmounting under {d.root}", lambda d=d: unmount_under(d.root))
    if made.cluster:
        attempt(failures, "stopping etcd", made.cluster.etcd.stop)
    attempt(failures, f"underlay {made.prefix}", lambda: topology.teardown(made.prefix))
    if topology.names(made.prefix):
        failures.append(f"underlay namespaces left behind: {topology.names(made.prefix)}")
    if made.workdir:
        workdir = str(made.workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        attempt(failures, "the cluster's processes",
                lambda: wait_for(lambda: not processes_naming(workdir), 5, "the cluster's processes to go"))


@pytest.fixture(params=["v3", "v2"])
def etcd_api(request: pytest.FixtureRequest) -> str:
    """For a scenario that runs against both: etcd's v3 (JSON gateway), then a v2-only etcd."""
    return request.param


def build(made: list[Made], engines: int, api: str) -> Cluster:
    """An underlay of `engines` hosts, etcd on them (v3, or v2 only) and a muslind per host; recorded in made
    before anything is built, so that remove() also finds what a failed build left."""
    record = Made(prefix=f"ov{uuid.uuid4().hex[:5]}")
    made.append(record)
    underlay = topology.create(record.prefix, engines)
    record.workdir = Path(tempfile.mkdtemp(prefix=f"muslin-{record.prefix}-"))
    cluster = Cluster(underlay, record.workdir, EtcdCluster(underlay.hosts, str(record.workdir / "etcd"),
                                                            v3_gateway=api == "v3"))
    record.cluster = cluster
    cluster.etcd.start()
    for i in range(engines):
        cluster.start_engine(i)
    return cluster


def remove_all(made: list[Made]) -> None:
    failures: list[str] = []
    tracebacks: list[str] = []
    for record in made:
        remove(record, failures, tracebacks)
    assert not failures, "cleanup failed:\n" + "\n".join(failures)
    assert not tracebacks, "an engine logged a traceback:\n" + "\n".join(tracebacks)


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., Cluster]]:
    """A cluster of its own, for a test that stops etcd or an engine, or needs other than two engines."""
    made: list[Made] = []

    def make(engines: int = 2, api: str = "v3") -> Cluster:
        return build(made, engines, api)

    yield make
    remove_all(made)


DEFAULT_NETWORKS = {"bridge", "host", "none", "docker_gwbridge"}


def restore(cluster: Cluster) -> list[str]:
    """Put a lent cluster back as it was made (containers and networks removed, nothing in the store);
    what could not be, as text."""
    problems: list[str] = []
    for d in cluster.engines:
        if d.proc is None or d.proc.poll() is not None:
            return [f"engine {d.root} is not running"]
        attempt(problems, f"containers of {d.root}", lambda d=d: remove_containers(d))
    for d in cluster.engines:
        names = d.docker("network", "ls", "--format", "{{.Name}}", check=False).stdout.split()
        for name in set(names) - DEFAULT_NETWORKS:
            d.docker("network", "rm", name, check=False)
    attempt(problems, "the store's records", lambda: wait_for(lambda: not left_in_store(cluster), 10,
                                                              "no network, endpoint or address records left"))
    return problems


def left_in_store(cluster: Cluster) -> list[str]:
    """Records of networks and endpoints (those of the engines themselves and the cluster key stay)."""
    return [key for key in cluster.records("/muslin/network/v1.0/")
            if key.split("/")[4] not in ("engine", "encryption")]


class ClusterPool:
    """Two-engine clusters, one per etcd API, lent to tests that leave the engines and the store as they
    found them: each is made once (about 6 s: underlay, etcd, two engines) instead of once per test. After
    each test its leftovers are removed; a cluster that cannot be put back is replaced for the next test."""

    def __init__(self) -> None:
        self.made: list[Made] = []
        self.clusters: dict[str, Cluster] = {}

    def lend(self, api: str) -> Iterator[Cluster]:
        cluster = self.clusters.get(api)
        if cluster is None:
            with kept_across_tests():
                cluster = self.clusters[api] = build(self.made, 2, api)
        yield cluster
        problems = restore(cluster)
        if problems:
            del self.clusters[api]  # the next test gets a fresh one; this one is removed at the end
        assert not problems, "the shared cluster could not be put back:\n" + "\n".join(problems)


@pytest.fixture(scope="package")
def cluster_pool() -> Iterator[ClusterPool]:
    pool = ClusterPool()
    yield pool
    remove_all(pool.made)


@pytest.fixture
def shared_cluster(cluster_pool: ClusterPool) -> Iterator[Cluster]:
    """Two engines on a v3 etcd, shared with the package's other tests (see ClusterPool)."""
    yield from cluster_pool.lend("v3")


@pytest.fixture
def shared_cluster_on(cluster_pool: ClusterPool, etcd_api: str) -> Iterator[Cluster]:
    """Two engines on etcd_api's etcd (v3, then v2 only), shared as shared_cluster is."""
    yield from cluster_pool.lend(etcd_api)
