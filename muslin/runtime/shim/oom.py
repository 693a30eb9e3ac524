"""Whether the kernel's OOM killer struck in a container's memory cgroup during its run (Docker's
State.OOMKilled): the cgroup's oom_kill counter, read at start and at exit (before `runc delete`)."""

from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"


def oom_counter_path(pid: int) -> str | None:
    """The file holding the oom_kill count of the process's memory cgroup (v1 memory.oom_control, or v2
    memory.events), or None."""
    unified = None
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, names, path = line.rstrip("\n").split(":", 2)
                if "memory" in names.split(","):
                    candidate = f"{CGROUP_ROOT}/memory{path}/memory.oom_control"
                    return candidate if os.path.exists(candidate) else None
                if names == "":
                    unified = f"{CGROUP_ROOT}{path}/memory.events"
    except (OSError, ValueError):
        return None
    return unified if unified and os.path.exists(unified) else None


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
