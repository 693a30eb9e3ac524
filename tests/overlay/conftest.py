"""Engines sharing overlay networks: hosts on an underlay (muslin.lab.topology), an etcd cluster on them
(muslin.lab.etcd) and a muslind per host started with --cluster-store on it; all removed at the end,
also when a test fails."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from muslin.lab import topology
from muslin.lab.etcd import EtcdCluster
from muslin.lab.lab import unmount_under
from muslin.lab.rig import in_ns, wait_for
from muslin.lab.topology import Underlay

from ..e2e.conftest import Daemon, daemon, daemon_factory  # noqa: F401 - fixtures for a muslind without a store
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
        d.start()
        if i < len(self.engines):
            self.engines[i] = d
        else:
            self.engines.append(d)
        return d

    def etcdctl(self, *args: str) -> str:
        proc = in_ns(self.underlay.hosts[0].name, "etcdctl", f"--endpoints={','.join(self.etcd.endpoints)}", *args,
                     env={"ETCDCTL_API": "3"})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


@pytest.fixture
def make_cluster() -> Iterator[Callable[[int], Cluster]]:
    made: list[Cluster] = []

    def make(engines: int = 2) -> Cluster:
        prefix = f"ov{uuid.uuid4().hex[:5]}"
        underlay = topology.create(prefix, engines)
        workdir = Path(tempfile.mkdtemp(prefix=f"muslin-{prefix}-"))
        cluster = Cluster(underlay, workdir, EtcdCluster(underlay.hosts, str(workdir / "etcd")))
        made.append(cluster)
        cluster.etcd.start()
        for i in range(engines):
            cluster.start_engine(i)
        return cluster

    yield make
    tracebacks = []
    for cluster in made:
        try:
            for d in cluster.engines:
                if d.proc and d.proc.poll() is None:
                    ids = d.docker("ps", "-aq", check=False).stdout.split()
                    if ids:
                        d.docker("rm", "-f", *ids, check=False)
        finally:
            for d in cluster.engines:
                d.stop()
                if "Traceback" in d.log():
                    tracebacks.append(d.log())
                unmount_under(d.root)
            cluster.etcd.stop()
            topology.teardown(underlay_prefix := cluster.underlay.prefix)
            shutil.rmtree(cluster.workdir, ignore_errors=True)
            assert topology.names(underlay_prefix) == [], "underlay namespaces left behind"
            wait_for(lambda: not processes_naming(str(cluster.workdir)), 5, "the cluster's processes to go")
    assert not tracebacks, "an engine logged a traceback:\n" + "\n".join(tracebacks)
