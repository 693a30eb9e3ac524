"""Runtime benchmark: the container start path below the HTTP layer, phase by phase, against runc alone.

    .venv/bin/python bench/bench_runtime.py [--runs 20]

Each run is what `docker run --rm busybox true` asks of the runtime: create, attach, wait, start,
read to the end, the exit code, delete. The same busybox bundle run by ``runc run`` (foreground,
which creates, starts, waits and deletes in one process) is the floor. Everything lives in a temp
dir and one network namespace, both removed at the end. Prints medians and 90th percentiles in ms.

Last, the shim's log writer alone: 64 KiB reads (what the shim reads from a pipe) of short lines,
the worst case for cutting records, written to a log file in the temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muslin.runtime import ContainerSpec, ImageStore, Runtime  # noqa: E402
from muslin.runtime.shim.log import Log  # noqa: E402
from muslin.kernel import netns  # noqa: E402

PHASES = ("create", "attach", "wait", "start", "exit", "delete", "total")


def summary(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{label:<22} median {statistics.median(ordered):7.1f} ms   p90 {p90:7.1f} ms"


async def one_run(rt: Runtime, netns_path: str) -> dict[str, float]:
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    marks = [time.perf_counter()]

    def mark() -> None:
        marks.append(time.perf_counter())

    await asyncio.to_thread(rt.create, ContainerSpec(id=cid, image="busybox", args=["true"], netns_path=netns_path))
    mark()
    stream = await rt.attach(cid)
    mark()
    waiter = await rt.exit_waiter(cid, next_run=True)
    mark()
    await asyncio.to_thread(rt.start, cid)
    mark()
    while await stream.read() is not None:
        pass
    stream.close()
    if await waiter.wait() != 0:
        raise RuntimeError("true did not exit 0")
    mark()
    await asyncio.to_thread(rt.delete, cid)
    mark()
    times = {phase: 1000 * (b - a) for phase, a, b in zip(PHASES, marks, marks[1:])}
    times["total"] = 1000 * (marks[-1] - marks[0])
    return times


def runc_alone(rt: Runtime, images: ImageStore, netns_path: str, base: Path) -> float:
    """``runc run`` of the same bundle: create, start, wait and delete in one runc process."""
    cid = uuid.uuid4().hex
    rt.create(ContainerSpec(id=cid, image="busybox", args=["true"], netns_path=netns_path))
    bundle = rt.root / "containers" / cid
    began = time.perf_counter()
    subprocess.run([rt.runc, "--root", str(base / "runc-alone"), "run", "--bundle", str(bundle), cid],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, timeout=30)
    elapsed = 1000 * (time.perf_counter() - began)
    rt.delete(cid)
    return elapsed


def runc_start_paths(rt: Runtime, netns_path: str, base: Path) -> tuple[float, float, float]:
    """The two ways to start with runc: (create, start) as two calls, or ``run -d`` as one."""
    runc = [rt.runc, "--root", str(base / "runc-alone")]
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "check": True, "timeout": 30}
    times = []
    for steps in (["create"], ["start"], ["run", "-d"]):
        cid = uuid.uuid4().hex
        rt.create(ContainerSpec(id=cid, image="busybox", args=["true"], netns_path=netns_path))
        bundle = str(rt.root / "containers" / cid)
        if steps == ["start"]:
            subprocess.run([*runc, "create", "--bundle", bundle, cid], **quiet)  # type: ignore[arg-type]
        began = time.perf_counter()
        subprocess.run([*runc, *steps, *(["--bundle", bundle] if steps != ["start"] else []), cid],
                       **quiet)  # type: ignore[arg-type]
        times.append(1000 * (time.perf_counter() - began))
        subprocess.run([*runc, "delete", "--force", cid], **quiet)  # type: ignore[arg-type]
        rt.delete(cid)
    return times[0], times[1], times[2]


def log_reads(base: Path, reads: int = 64) -> list[float]:
    """ms per 64 KiB read of 6-byte lines turned into json-file records and written."""
    chunk = b"12345\n" * (65536 // 6)
    log = Log(str(base / "bench.log"))
    times = []
    try:
        for _ in range(reads):
            began = time.perf_counter()
            log.add("stdout", chunk)
            times.append(1000 * (time.perf_counter() - began))
    finally:
        os.close(log.fd)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    runs = max(1, min(args.runs, 200))
    base = Path(tempfile.mkdtemp(prefix="muslin-bench-runtime-"))
    name = f"mbr-{os.getpid()}"
    path = netns.create(name)
    images = ImageStore(base / "images")
    images.ensure_busybox()
    rt = Runtime(base / "root", base / "state", images)
    try:
        asyncio.run(one_run(rt, path))  # warm up: the shim spawner starts once per daemon
        samples: dict[str, list[float]] = {phase: [] for phase in PHASES}
        for _ in range(runs):
            for phase, ms in asyncio.run(one_run(rt, path)).items():
                samples[phase].append(ms)
        cold = []  # attach when the spawner must start first: what a shim costs as its own Python
        for _ in range(min(runs, 5)):
            rt.close()
            cold.append(asyncio.run(one_run(rt, path))["attach"])
        floor = [runc_alone(rt, images, path, base) for _ in range(runs)]
        print(f"runtime phases of `docker run --rm busybox true`, {runs} runs:")
        for phase in PHASES:
            print("  " + summary(phase, samples[phase]))
        paths = [runc_start_paths(rt, path, base) for _ in range(runs)]
        print("  " + summary("attach, cold spawner", cold))
        print("  " + summary("runc create", [p[0] for p in paths]))
        print("  " + summary("runc start", [p[1] for p in paths]))
        print("  " + summary("runc run -d", [p[2] for p in paths]))
        print("  " + summary("runc run", floor))
        ratio = statistics.median(samples["total"]) / statistics.median(floor)
        print(f"  runtime total / runc alone: {ratio:.2f}")
        print("  " + summary("log, 64 KiB of lines", log_reads(base)))
    finally:
        for state in rt.list():
            rt.delete(state.id, force=True)
        rt.close()
        netns.remove(name)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
