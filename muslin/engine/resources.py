"""A container's cgroup limits (HostConfig's resources): dockerd's checks, and what runc is given.

HostConfig keeps the fields as Docker names them (what inspect shows and `docker update` changes);
``resources_of`` turns them into the runtime's ``Resources``, ``check`` refuses what dockerd refuses.
"""

from __future__ import annotations

import os
from typing import Any

from muslin.errors import InvalidArgument
from muslin.runtime import Resources

# Integer fields of Docker's container.Resources that runc can apply (and update on a running container).
INT_FIELDS = ("CpuShares", "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime", "NanoCpus",
              "Memory", "MemorySwap", "MemoryReservation", "PidsLimit", "BlkioWeight", "KernelMemory")
STR_FIELDS = ("CpusetCpus", "CpusetMems")
MIN_MEMORY = 6 * 1024 * 1024  # dockerd's linuxMinMemory
CFS_PERIOD = 100_000  # microseconds: what NanoCpus is measured against, as dockerd's
MIN_SHARES, MAX_SHARES = 2, 262144  # the kernel's bounds, to which dockerd clamps


def check(host: dict[str, Any]) -> None:
    """dockerd's verifyPlatformContainerResources, for the limits muslind applies."""
    memory, swap = host.get("Memory") or 0, host.get("MemorySwap") or 0
    reservation = host.get("MemoryReservation") or 0
    if 0 < memory < MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if swap > 0 and memory == 0:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap limit, see usage")
    if swap > 0 and swap < memory:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, see usage")
    if 0 < reservation < MIN_MEMORY:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    if memory > 0 and reservation > memory:
        raise InvalidArgument("Minimum memory limit can not be less than memory reservation limit, see usage")
    nano, period, quota = host.get("NanoCpus") or 0, host.get("CpuPeriod") or 0, host.get("CpuQuota") or 0
    if nano and period:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano and quota:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    cpus = os.cpu_count() or 1
    if nano < 0 or nano > cpus * 1_000_000_000:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available")
    if period and not 1000 <= period <= 1_000_000:
        raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
    if 0 < quota < 1000:
        raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    rt_period, rt_runtime = host.get("CpuRealtimePeriod") or 0, host.get("CpuRealtimeRuntime") or 0
    if rt_period and rt_runtime > rt_period:
        raise InvalidArgument("cpu-rt-runtime cannot be higher than cpu-rt-period")
    weight = host.get("BlkioWeight") or 0
    if weight and not 10 <= weight <= 1000:
        raise InvalidArgument("Range of blkio weight is from 10 to 1000")


def resources_of(host: dict[str, Any]) -> Resources:
    """The runtime's limits for a HostConfig (checked by ``check``)."""
    shares = host.get("CpuShares") or 0
    nano = host.get("NanoCpus") or 0
    period, quota = host.get("CpuPeriod") or 0, host.get("CpuQuota") or 0
    if nano:
        period, quota = CFS_PERIOD, nano * CFS_PERIOD // 1_000_000_000
    pids = host.get("PidsLimit") or 0
    return Resources(
        cpu_shares=min(max(shares, MIN_SHARES), MAX_SHARES) if shares else 0,
        cpu_period=period, cpu_quota=quota,
        cpu_rt_period=host.get("CpuRealtimePeriod") or 0, cpu_rt_runtime=host.get("CpuRealtimeRuntime") or 0,
        cpuset_cpus=host.get("CpusetCpus") or "", cpuset_mems=host.get("CpusetMems") or "",
        memory=host.get("Memory") or 0, memory_swap=host.get("MemorySwap") or 0,
        memory_reservation=host.get("MemoryReservation") or 0,
        pids_limit=-1 if pids < 0 else pids, blkio_weight=host.get("BlkioWeight") or 0)


def with_defaults(host: dict[str, Any]) -> dict[str, Any]:
    """dockerd's adaptContainerSettings: a memory limit without a swap limit gets as much swap again."""
    if (host.get("Memory") or 0) > 0 and not host.get("MemorySwap"):
        return {**host, "MemorySwap": host["Memory"] * 2}
    return host


def updated(host: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """HostConfig after `docker update`: as dockerd, a field given as 0 or "" keeps its value (except
    that a new NanoCpus clears CpuPeriod/CpuQuota and the other way round)."""
    new = dict(host)
    for key, value in changes.items():
        if value:
            new[key] = value
    if changes.get("NanoCpus"):
        new["CpuPeriod"], new["CpuQuota"] = 0, 0
    elif changes.get("CpuPeriod") or changes.get("CpuQuota"):
        new["NanoCpus"] = 0
    return new
