"""Container resources: dockerd's checks, the runtime's limits, and what `docker update` changes."""

from __future__ import annotations

import pytest

from muslin.engine.resources import check, resources_of, updated
from muslin.errors import InvalidArgument
from muslin.runtime import Resources


def test_checks_as_dockerd() -> None:
    check({"Memory": 64 << 20, "MemorySwap": 128 << 20, "CpuShares": 512, "NanoCpus": 500_000_000})
    for host, message in (({"Memory": 1 << 20}, "Minimum memory limit allowed is 6MB"),
                          ({"MemorySwap": 1 << 30}, "always set the Memory limit"),
                          ({"Memory": 64 << 20, "MemorySwap": 32 << 20}, "memoryswap limit should be larger"),
                          ({"Memory": 64 << 20, "MemoryReservation": 128 << 20}, "memory reservation"),
                          ({"NanoCpus": 1, "CpuQuota": 5000}, "Nano CPUs and CPU Quota"),
                          ({"CpuPeriod": 10}, "CPU cfs period"),
                          ({"CpuRealtimePeriod": 1000, "CpuRealtimeRuntime": 2000}, "cpu-rt-runtime"),
                          ({"BlkioWeight": 5}, "blkio weight")):
        with pytest.raises(InvalidArgument, match=message):
            check(host)


def test_limits_for_the_runtime() -> None:
    r = resources_of({"NanoCpus": 1_500_000_000, "Memory": 64 << 20, "CpuShares": 1, "PidsLimit": -5})
    assert (r.cpu_period, r.cpu_quota, r.memory, r.cpu_shares, r.pids_limit) == (100_000, 150_000, 64 << 20, 2, -1)
    assert resources_of({}) == Resources() and Resources().to_oci() == {}
    assert Resources(memory=1, pids_limit=3).to_oci() == {"memory": {"limit": 1}, "pids": {"limit": 3}}


def test_update_keeps_what_is_not_given() -> None:
    host = {"Memory": 64 << 20, "CpuQuota": 5000, "CpuPeriod": 10000, "AutoRemove": False}
    new = updated(host, {"Memory": 0, "NanoCpus": 1_000_000_000})
    assert new == {"Memory": 64 << 20, "CpuQuota": 0, "CpuPeriod": 0, "NanoCpus": 1_000_000_000, "AutoRemove": False}
