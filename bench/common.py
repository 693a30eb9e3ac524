"""Shared pieces of the benchmarks: a muslind in its own namespace, the reference dockerd, timing."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from muslin.kernel import netns
from muslin.lab.lab import unmount_under

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "reference-dockerd.sh"
REFERENCE_SOCK = "/tmp/ref-docker/docker.sock"
REFERENCE_NS = "ref-dockerd"  # the namespace reference-dockerd.sh runs dockerd in (and removes on down)


def bench_namespace() -> str:
    """The namespace ``muslind()`` runs its daemon in, for tools that run clients beside it."""
    return f"mb-{os.getpid()}"


@contextmanager
def muslind(*args: str, prepare: Callable[[str], None] | None = None,
            command: list[str] | None = None) -> Iterator[str]:
    """A muslind in a fresh namespace; yields its DOCKER_HOST and removes everything after.
    ``prepare(namespace)`` runs before the daemon starts (to give the host links of its own);
    ``command``: what runs muslind (a profiler around it), instead of the muslind script."""
    name = bench_namespace()
    netns.create(name)
    if prepare:
        prepare(name)
    root = Path(tempfile.mkdtemp(prefix="muslin-bench-"))
    sock = root / "docker.sock"
    proc = subprocess.Popen(["nsenter", f"--net={netns.path_for(name)}",
                             *(command or [str(Path(sys.executable).with_name("muslind"))]), "-H", f"unix://{sock}",
                             "--data-root", str(root / "data"), "--exec-root", str(root / "run"), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = f"unix://{sock}"
    try:
        for _ in range(300):
            if sock.exists() and docker(host, "version").returncode == 0:
                break
            time.sleep(0.05)
        yield host
    finally:
        ids = docker(host, "ps", "-aq").stdout.split()
        if ids:
            docker(host, "rm", "-f", *ids)
        proc.terminate()
        proc.wait(10)
        unmount_under(root)
        netns.remove(name)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def reference_dockerd() -> Iterator[str | None]:
    """The real Docker Engine from ../shared/reference, or None when it cannot start here."""
    if not REFERENCE.exists():
        yield None
        return
    up = subprocess.run(["bash", str(REFERENCE), "up"], capture_output=True, text=True)
    try:
        yield f"unix://{REFERENCE_SOCK}" if up.returncode == 0 else None
    finally:
        subprocess.run(["bash", str(REFERENCE), "down"], capture_output=True, text=True)


def add_lan_parent(ns: str) -> None:
    """An ``eth0`` for macvlan networks inside the namespace: one end of a veth pair whose other end
    (``lan0``) stays there too, both up, so the parent has a carrier."""
    run = ["nsenter", f"--net={netns.path_for(ns)}", "ip", "link"]
    subprocess.run([*run, "add", "eth0", "type", "veth", "peer", "name", "lan0"], check=True)
    for ifname in ("eth0", "lan0"):
        subprocess.run([*run, "set", ifname, "up"], check=True)


def docker(host: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], env={**os.environ, "DOCKER_HOST": host},
                          capture_output=True, text=True, timeout=60)


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def report(label: str, ours: list[float], ref: list[float] | None, goal: float | None = None) -> None:
    m = statistics.median(ours) * 1000
    line = f"{label:40s} muslind median {m:8.1f} ms"
    if ref:
        r = statistics.median(ref) * 1000
        line += f" | docker {r:8.1f} ms | ratio {m / r:5.2f}"
        if goal is not None:
            line += f" (goal <= {goal})"
    else:
        line += " | docker: reference not available"
    print(line, flush=True)
