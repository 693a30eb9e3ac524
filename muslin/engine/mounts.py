"""A container's mounts: what the client asked for (``MountRequest``, from HostConfig.Binds, Mounts,
Tmpfs and Config.Volumes) and what the container got (``MountPoint``: inspect's ``Mounts``, and the
runtime's bind or tmpfs mount).

Binds and volumes are bind mounts made by runc inside the container's mount namespace, so none of
them ever appears in the host's mount table; a volume is a directory under the data root.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from muslin.runtime import Mount

# The tmpfs options Docker starts from (noexec,nosuid,nodev), the client's own come after them.
TMPFS_DEFAULTS = ("nosuid", "nodev", "noexec")


@dataclass(frozen=True)
class MountRequest:
    """One mount as asked for, checked for form by the API (absolute paths, known modes)."""

    type: str  # "bind" | "volume" | "tmpfs"
    target: str
    source: str = ""  # bind: host path; volume: name ("" = anonymous); tmpfs: ""
    read_only: bool = False
    propagation: str = ""  # bind only; "" = rprivate
    mode: str = ""  # a Binds entry's mode as written, which inspect shows back
    from_binds: bool = False  # Binds create a missing host path; Mounts refuse it
    from_tmpfs_map: bool = False  # HostConfig.Tmpfs, which inspect does not list
    no_copy: bool = False
    volume_driver: str = "local"
    volume_labels: dict[str, str] = field(default_factory=dict)
    volume_options: dict[str, str] = field(default_factory=dict)
    tmpfs_options: tuple[str, ...] = ()  # size=..., mode=..., as mount(8) takes them


@dataclass
class MountPoint:
    """A mount of a container, as inspect shows it."""

    type: str  # "bind" | "volume" | "tmpfs"
    destination: str
    source: str = ""  # the host path (a volume's _data directory); "" for tmpfs
    name: str = ""  # the volume's name
    driver: str = ""  # the volume's driver
    mode: str = ""
    rw: bool = True
    propagation: str = ""
    anonymous: bool = False  # a volume made for this container alone (`docker rm -v` removes it)
    options: list[str] = field(default_factory=list)  # tmpfs mount options
    listed: bool = True  # in inspect's Mounts (dockerd leaves HostConfig.Tmpfs's out)

    def runtime_mount(self) -> Mount:
        access = "rw" if self.rw else "ro"
        if self.type == "tmpfs":
            return Mount(self.destination, "tmpfs", "tmpfs", (*TMPFS_DEFAULTS, *self.options, access))
        return Mount(self.destination, "bind", self.source, ("rbind", self.propagation or "rprivate", access))


def borrowed(mounts: list[MountPoint], mode: str) -> list[MountPoint]:
    """HostConfig.VolumesFrom: another container's binds and volumes (not its tmpfs), read-only or
    read-write as ``mode`` says, else as that container has them; never the borrower's to remove."""
    parts = mode.split(",") if mode else []
    return [replace(m, rw=m.rw if not {"ro", "rw"} & set(parts) else "rw" in parts, anonymous=False,
                    mode=mode or m.mode)
            for m in mounts if m.type != "tmpfs"]
