"""`docker run --rm busybox true` through the CLI (bridge, none and macvlan), muslind vs the reference
dockerd, and the network attach/detach of one endpoint alone (engine level, no CLI).

Run: .venv/bin/python bench/bench_run.py [rounds]   (root; everything inside namespaces)
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REFERENCE_NS, add_lan_parent, docker, muslind, reference_dockerd, report, timed

from muslin.engine.config import DaemonConfig
from muslin.engine.containers import SANDBOX_SYSCTLS
from muslin.engine.firewall import IptablesFirewall
from muslin.engine.networks import NetworkService
from muslin.engine.store import Store
from muslin.kernel import link, netns


def run(host: str, network: str) -> None:
    proc = docker(host, "run", "--rm", "--network", network, "busybox", "true")
    if proc.returncode:
        raise RuntimeError(proc.stderr)


def attach_detach(rounds: int) -> tuple[list[float], list[float]]:
    host = f"mba-{os.getpid()}"
    netns.create(host)
    root = Path(tempfile.mkdtemp(prefix="muslin-bench-"))
    sandbox = str(root / "sandbox")
    attach, detach = [], []
    unused_executor = ThreadPoolExecutor(max_workers=1)
    try:
        with netns.entered(host):
            store = Store(root / "data")
            # No cluster store here, so nothing is ever submitted: the executor only fills the slot.
            service = NetworkService(store, DaemonConfig(root / "data", root / "run"), IptablesFirewall(),
                                     unused_executor.submit)
            service.start()
            net = service.get("bridge")
            netns.create(sandbox, SANDBOX_SYSCTLS)  # as the engine makes a container's sandbox
            for i in range(rounds):
                t0 = time.perf_counter()
                ep = service.allocate_endpoint(net, f"c{i}", f"c{i}", "eth0")
                service.wire_endpoint(net, ep, sandbox)
                t1 = time.perf_counter()
                service.release_endpoint(net, ep, sandbox)
                t2 = time.perf_counter()
                attach.append(t1 - t0)
                detach.append(t2 - t1)
                # Let the deferred link deletion of this round finish outside the timed window, as it
                # does between a real container's stop and the next start.
                link.wait_for_reaper()
            link.wait_for_reaper()
            service.close_thread_handles()
            store.close()
    finally:
        unused_executor.shutdown()
        netns.remove(sandbox)
        netns.remove(host)
        shutil.rmtree(root, ignore_errors=True)
    return attach, detach


NETWORKS = ("bridge", "none", "mvbench")


def time_runs(host: str, rounds: int) -> dict[str, list[float]]:
    proc = docker(host, "network", "create", "-d", "macvlan", "--subnet", "192.168.90.0/24", "-o", "parent=eth0",
                  "mvbench")
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    out = {}
    for network in NETWORKS:
        run(host, network)
        out[network] = timed(lambda n=network: run(host, n), rounds)
    docker(host, "network", "rm", "mvbench")
    return out


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with muslind(prepare=add_lan_parent) as host:
        ours = time_runs(host, rounds)
    ref: dict[str, list[float] | None] = dict.fromkeys(NETWORKS)
    with reference_dockerd() as ref_host:
        if ref_host:
            add_lan_parent(REFERENCE_NS)  # removed with the namespace when the reference goes down
            ref.update(time_runs(ref_host, rounds))
    report("run --rm busybox true (bridge)", ours["bridge"], ref["bridge"], goal=0.35)
    report("run --rm busybox true (none)", ours["none"], ref["none"])
    report("run --rm busybox true (macvlan)", ours["mvbench"], ref["mvbench"])
    attach, detach = attach_detach(rounds * 5)
    print(f"{'network attach (veth+addr+route)':40s} median {statistics.median(attach) * 1000:6.2f} ms (goal <= 5)")
    print(f"{'network detach':40s} median {statistics.median(detach) * 1000:6.2f} ms (goal <= 25)")


if __name__ == "__main__":
    main()
