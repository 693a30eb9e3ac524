"""The host's mount table, for what a bind's propagation needs of its source (Docker checks it at start).

A bind mounted ``rshared`` only propagates if the mount its source lives on is shared itself, and
``rslave`` needs it shared or a slave; otherwise runc would silently give a private mount. dockerd
refuses such a start with the messages used here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import InvalidArgument
from .spec import SHARED_PROPAGATIONS, SLAVE_PROPAGATIONS, Mount


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    shared: bool
    slave: bool
    root: str = "/"  # the filesystem's directory seen at the mount point
    fstype: str = ""
    super_options: tuple[str, ...] = ()  # the filesystem's own (a v1 cgroup's controllers among them)


def _unescape(field: str) -> str:
    """mountinfo octal-escapes space, tab, newline and backslash."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields:
            continue
        sep = fields.index("-")
        optional = fields[6:sep]
        after = fields[sep + 1:]
        entries.append(MountEntry(mount_point=_unescape(fields[4]),
                                  shared=any(f.startswith("shared:") for f in optional),
                                  slave=any(f.startswith("master:") for f in optional),
                                  root=_unescape(fields[3]), fstype=after[0] if after else "",
                                  super_options=tuple(after[2].split(",")) if len(after) > 2 else ()))
    return entries


def mount_of(path: str, entries: list[MountEntry]) -> MountEntry | None:
    """The mount ``path`` lives on: the last-mounted entry with the longest matching mount point."""
    best: MountEntry | None = None
    for entry in entries:
        point = entry.mount_point
        inside = path == point or point == "/" or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = entry
    return best


def check_propagation(mounts: list[Mount], table: str | None = None) -> None:
    """Refuse a shared or slave bind whose source's mount does not propagate (Docker's messages)."""
    wanted = [m for m in mounts if m.type == "bind" and set(m.options) & {*SHARED_PROPAGATIONS, *SLAVE_PROPAGATIONS}]
    if not wanted:
        return
    if table is None:
        with open("/proc/self/mountinfo") as f:
            table = f.read()
    entries = parse(table)
    for m in wanted:
        source = os.path.realpath(m.source)
        entry = mount_of(source, entries)
        if entry is None:
            continue
        if set(m.options) & set(SHARED_PROPAGATIONS) and not entry.shared:
            raise InvalidArgument(f"path {m.source} is mounted on {entry.mount_point} but it is not a shared mount")
        if set(m.options) & set(SLAVE_PROPAGATIONS) and not (entry.shared or entry.slave):
            raise InvalidArgument(f"path {m.source} is mounted on {entry.mount_point} "
                                  "but it is not a shared or slave mount")
