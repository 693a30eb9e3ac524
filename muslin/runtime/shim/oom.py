"""Whether the kernel's OOM killer struck in a container's memory cgroup during its run (Docker's
State.OOMKilled): the cgroup's oom_kill counter, read before `runc run` (runc makes the cgroup for
the run, so usually there is none yet: 0) and at exit (before `runc delete`). The cgroup is found from
the bundle's cgroupsPath, not from the process: one killed before `runc run` returns is in no cgroup
any more by the time the shim could look."""

from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"


def oom_counter_path(cgroups_path: str | None) -> str | None:
    """The file holding the oom_kill count of the memory cgroup at ``cgroups_path`` (the OCI config's
    linux.cgroupsPath): v1 memory.oom_control, or v2 memory.events; None if there is neither (or no
    path: never the root cgroup's, which counts the whole machine)."""
    if not cgroups_path:
        return None
    for candidate in (f"{CGROUP_ROOT}/memory{cgroups_path}/memory.oom_control",
                      f"{CGROUP_ROOT}{cgroups_path}/memory.events"):
        if os.path.exists(candidate):
            return candidate
    return None


def oom_kills(path: str | None) -> int:
    if path is None:
        return 0
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0
