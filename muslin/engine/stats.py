"""`docker stats`: a running container's resource use, read from its cgroups and its sandbox's links.

``sample`` reads one ``StatsSample`` (cgroup v1 files, the v2 ones where the hierarchy is unified);
the API renders samples as dockerd's stats JSON, each with the one before it as ``precpu_stats``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from muslin.kernel import link, netns
from muslin.runtime import Cgroups

NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    total_usage: int = 0  # ns of CPU time used by the container
    percpu_usage: tuple[int, ...] = ()
    usage_in_kernelmode: int = 0
    usage_in_usermode: int = 0
    system_cpu_usage: int = 0  # ns of CPU time of the whole machine (what CPU % is measured against)
    online_cpus: int = 0
    periods: int = 0
    throttled_periods: int = 0
    throttled_time: int = 0


@dataclass(frozen=True)
class MemorySample:
    usage: int = 0
    max_usage: int = 0
    limit: int = 0
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BlkioEntry:
    major: int
    minor: int
    op: str
    value: int


@dataclass(frozen=True)
class StatsSample:
    read: int  # ns since the epoch
    cpu: CpuSample
    memory: MemorySample
    pids_current: int
    pids_limit: int  # 0: none
    io_service_bytes: tuple[BlkioEntry, ...]
    io_serviced: tuple[BlkioEntry, ...]
    networks: dict[str, link.LinkCounters]


def _int(text: str | None) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        return 0


def _pairs(text: str | None) -> dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def system_cpu_usage() -> int:
    """The machine's CPU time in ns, as dockerd counts it (/proc/stat's first seven fields)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                return sum(int(v) for v in line.split()[1:8]) * NS_PER_TICK
    return 0


def machine_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu(cg: Cgroups) -> CpuSample:
    throttling = _pairs(cg.read("cpu", "cpu.stat"))  # v2: the usage too, in microseconds
    online = os.sysconf("SC_NPROCESSORS_ONLN")
    if cg.unified:
        usec = throttling
        return CpuSample(total_usage=usec.get("usage_usec", 0) * 1000,
                         usage_in_kernelmode=usec.get("system_usec", 0) * 1000,
                         usage_in_usermode=usec.get("user_usec", 0) * 1000, system_cpu_usage=system_cpu_usage(),
                         online_cpus=online, periods=usec.get("nr_periods", 0),
                         throttled_periods=usec.get("nr_throttled", 0), throttled_time=usec.get("throttled_usec", 0) * 1000)
    ticks = _pairs(cg.read("cpuacct", "cpuacct.stat"))
    percpu = tuple(int(v) for v in (cg.read("cpuacct", "cpuacct.usage_percpu") or "").split())
    return CpuSample(total_usage=_int(cg.read("cpuacct", "cpuacct.usage")), percpu_usage=percpu,
                     usage_in_kernelmode=ticks.get("system", 0) * NS_PER_TICK,
                     usage_in_usermode=ticks.get("user", 0) * NS_PER_TICK, system_cpu_usage=system_cpu_usage(),
                     online_cpus=online, periods=throttling.get("nr_periods", 0),
                     throttled_periods=throttling.get("nr_throttled", 0),
                     throttled_time=throttling.get("throttled_time", 0))


def _memory(cg: Cgroups) -> MemorySample:
    host = machine_memory()
    if cg.unified:
        limit_text = (cg.read("memory", "memory.max") or "").strip()
        limit = host if limit_text in ("", "max") else _int(limit_text)
        return MemorySample(usage=_int(cg.read("memory", "memory.current")), limit=min(limit, host) or host,
                            stats=_pairs(cg.read("memory", "memory.stat")))
    limit = _int(cg.read("memory", "memory.limit_in_bytes"))
    return MemorySample(usage=_int(cg.read("memory", "memory.usage_in_bytes")),
                        max_usage=_int(cg.read("memory", "memory.max_usage_in_bytes")),
                        limit=min(limit, host) if limit else host, stats=_pairs(cg.read("memory", "memory.stat")))


def _blkio(text: str | None) -> tuple[BlkioEntry, ...]:
    out = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, _, minor = parts[0].partition(":")
            out.append(BlkioEntry(int(major), int(minor), parts[1], int(parts[2])))
    return tuple(out)


def sample(cg: Cgroups, sandbox: str | None) -> StatsSample:
    """One reading of a running container (blocking: files and a netlink dump)."""
    pids_max = (cg.read("pids", "pids.max") or "").strip()
    networks: dict[str, link.LinkCounters] = {}
    if sandbox and netns.exists(sandbox):
        with netns.iproute(sandbox) as ipr:
            networks = link.counters(ipr)
    return StatsSample(
        read=time.time_ns(), cpu=_cpu(cg), memory=_memory(cg), pids_current=_int(cg.read("pids", "pids.current")),
        pids_limit=_int(pids_max) if pids_max.isdigit() else 0,
        io_service_bytes=_blkio(cg.read("blkio", "blkio.throttle.io_service_bytes_recursive", "io.stat")),
        io_serviced=_blkio(cg.read("blkio", "blkio.throttle.io_serviced_recursive", "io.stat")),
        networks=networks)
