"""Whether a process runs, read from /proc: shared by the fabric (its BIRD) and the lab (its daemons)."""

from __future__ import annotations


def running(pid: int) -> bool:
    """Alive and not a zombie (dead and waiting for its parent to reap it, which may come late: the lab's
    daemons are reparented when `up` exits)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
