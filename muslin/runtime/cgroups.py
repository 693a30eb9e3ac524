"""A running container's cgroups, found from its init process: where pause, top, stats and update read.

runc places the container in ``cgroupsPath`` under each hierarchy's root; rather than rebuild that path
(and guess where each controller is mounted, or whether the hierarchy is v1 or v2), the directories are
read from ``/proc/<pid>/cgroup`` and the machine's cgroup mounts, as the kernel reports them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from . import mountinfo

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CgroupMount:
    path: Path  # where the hierarchy is mounted
    root: str  # the hierarchy's directory shown at that mount point ("/" unless bind-mounted deeper)
    controllers: frozenset[str]  # empty for the v2 (unified) hierarchy


@functools.cache
def _mounts() -> tuple[CgroupMount, ...]:
    """The cgroup hierarchies mounted in this mount namespace (from /proc/self/mountinfo), read once:
    they stay as the machine mounted them, while the rest of mountinfo grows with every container's
    namespace pin, and the state of each container asks (a start of muslind with a thousand running
    spent seconds here)."""
    with open("/proc/self/mountinfo") as f:
        return cgroup_mounts(f.read())


def cgroup_mounts(table: str) -> tuple[CgroupMount, ...]:
    """The cgroup hierarchies of a mountinfo table."""
    found = []
    for entry in mountinfo.parse(table):
        if entry.fstype == "cgroup":
            found.append(CgroupMount(Path(entry.mount_point), entry.root, frozenset(
                o for o in entry.super_options if o not in ("rw", "ro", "nosuid", "nodev", "noexec", "relatime"))))
        elif entry.fstype == "cgroup2":
            found.append(CgroupMount(Path(entry.mount_point), entry.root, frozenset()))
    return tuple(found)


@dataclass(frozen=True)
class Cgroups:
    """The cgroup directories of one process, by controller ("" for the v2 hierarchy)."""

    dirs: dict[str, Path]

    @classmethod
    def of_pid(cls, pid: int) -> Cgroups:
        mounts = _mounts()
        dirs: dict[str, Path] = {}
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, names, path = line.rstrip("\n").split(":", 2)
                controllers = frozenset(n for n in names.split(",") if n)
                for mount in mounts:
                    if mount.controllers != controllers and not (controllers and controllers <= mount.controllers):
                        continue
                    relative = Path(path).relative_to(mount.root) if path.startswith(mount.root) else Path(path.lstrip("/"))
                    for name in controllers or {""}:
                        dirs.setdefault(name, mount.path / str(relative).lstrip("/"))
                    break
        return cls(dirs)

    @property
    def unified(self) -> bool:
        """A v2 hierarchy holds every controller (no v1 controller mounted for the process)."""
        return "" in self.dirs and len(self.dirs) == 1

    def dir(self, controller: str) -> Path | None:
        if self.unified:
            return self.dirs[""]
        return self.dirs.get(controller)

    def read(self, controller: str, v1_file: str, v2_file: str | None = None) -> str | None:
        """A file of the controller's directory (the v2 name when the hierarchy is unified), or None."""
        base = self.dir(controller)
        if base is None:
            return None
        name = (v2_file or v1_file) if self.unified else v1_file
        try:
            return (base / name).read_text()
        except OSError:
            return None

    def pids(self) -> list[int]:
        """Every process of the container (init, its children, execs)."""
        text = self.read("pids", "cgroup.procs") or self.read("freezer", "cgroup.procs") or ""
        return [int(p) for p in text.split()]

    def frozen(self) -> bool:
        if self.unified:
            return (self.read("", "cgroup.freeze") or "").strip() == "1"
        return (self.read("freezer", "freezer.state") or "").strip() in ("FROZEN", "FREEZING")
