"""Local named volumes: directories under ``<data root>/volumes/<name>/_data``, their records in the store.

Only Docker's ``local`` driver, in its plain-directory form and its bind form (``type=none,o=bind,
device=/host/dir``, which compose files use for a named volume kept in a chosen directory: containers
bind the device directory itself); options that mount a filesystem (tmpfs, nfs, a block device) are
refused, so no mount is ever made on the host. A volume is in use while a container (running or not) has it among its mounts; such a
volume is never removed, as with dockerd. This service also turns a container's mount requests into
its mount points (``mount_points``), creating the volumes they name as dockerd does.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from muslin.errors import Conflict, InvalidArgument, NotFound
from muslin.runtime import copy_image_path

from .locks import EngineLocks
from .mounts import MountPoint, MountRequest
from .model import new_id
from .store import Store

log = logging.getLogger(__name__)
LOCAL_DRIVER = "local"
# The local driver's options (dockerd's), and the mount options of its bind form that muslind takes.
LOCAL_OPTIONS = ("type", "device", "o", "size")
BIND_MOUNT_OPTIONS = {"bind", "rbind", "ro", "rw"}


@dataclass
class Volume:
    name: str
    created_at: str  # RFC 3339, seconds, as dockerd shows it
    driver: str = LOCAL_DRIVER
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False  # made for one container, without a name from the client

    @property
    def bind_device(self) -> str:
        """The host directory of a ``type=none,o=bind,device=DIR`` volume, else ""."""
        return self.options.get("device", "") if self.options else ""

    @property
    def read_only(self) -> bool:
        return "ro" in self.options.get("o", "").split(",")


def check_options(name: str, options: dict[str, str]) -> None:
    """dockerd's local driver checks option names; of the mounting forms muslind takes the bind one."""
    for key in options:
        if key not in LOCAL_OPTIONS:
            raise InvalidArgument(f'create {name}: invalid option: "{key}"')
    if not options:
        return
    mount_options = set(options.get("o", "").split(","))
    device = options.get("device", "")
    if (options.get("type", "none") != "none" or not mount_options & {"bind", "rbind"}
            or not mount_options <= BIND_MOUNT_OPTIONS or not device.startswith("/") or "size" in options):
        raise InvalidArgument(f"create {name}: muslind's local volumes mount no filesystem: of the options "
                              "type/device/o only the bind form is supported (type=none,o=bind,device=/host/dir)")


class VolumeService:
    """Volumes' records and directories. State changes run on the engine's workers: create, rm and
    prune hold the ``volumes`` lock exclusive; a container's mount points and its anonymous volumes are
    handled under it shared, by the container service (``locks``)."""

    def __init__(self, store: Store, data_root: Path, users: Callable[[], dict[str, list[str]]],
                 locks: EngineLocks | None = None) -> None:
        self.store = store
        self.locks = locks or EngineLocks()
        self.root = data_root / "volumes"
        self.root.mkdir(parents=True, exist_ok=True)
        # Every volume in use -> ids of the containers that mount it: built once for a whole request
        # (a listing or a prune reads the containers once, not once per volume).
        self.users = users

    def directory(self, name: str) -> Path:
        return self.root / name / "_data"

    # -- lookups ----------------------------------------------------------------------------------------
    def get(self, name: str) -> Volume:
        doc = self.store.volume(name)
        if doc is None:
            raise NotFound(f"get {name}: no such volume")
        return Volume(**doc)

    def all(self) -> list[Volume]:
        return [Volume(**doc) for doc in self.store.volumes()]

    # -- changes (worker) -------------------------------------------------------------------------------
    def create(self, name: str = "", driver: str = LOCAL_DRIVER, labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None) -> Volume:
        """Create a volume (a name already taken returns that volume, as dockerd does)."""
        with self.locks.volumes.exclusive():
            return self._create(name, driver, labels, options)

    def _create(self, name: str, driver: str, labels: dict[str, str] | None,
                options: dict[str, str] | None) -> Volume:
        anonymous = not name
        name = name or new_id()
        driver = driver or LOCAL_DRIVER
        if driver != LOCAL_DRIVER:
            raise NotFound(f'create {name}: error looking up volume plugin {driver}: plugin "{driver}" not found')
        options = dict(options or {})
        check_options(name, options)
        existing = self.store.volume(name)
        if existing is not None:
            return Volume(**existing)
        volume = Volume(name=name, created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        driver=driver, labels=dict(labels or {}), options=options, anonymous=anonymous)
        directory = self.directory(name)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        try:
            with self.store.transaction() as db:
                self.store.put_volume(db, name, asdict(volume))
        except BaseException:
            shutil.rmtree(self.root / name, ignore_errors=True)
            raise
        log.info("created volume %s", name)
        return volume

    def remove(self, name: str, force: bool = False) -> None:
        """``force`` only forgives a missing volume; one in use is never removed."""
        with self.locks.volumes.exclusive():
            self._remove(name, force)

    def _remove(self, name: str, force: bool) -> None:
        doc = self.store.volume(name)
        if doc is None:
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        users = self.users().get(name)
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        self._delete(name)

    def _delete(self, name: str) -> None:
        with self.store.transaction() as db:
            self.store.delete_volume(db, name)
        shutil.rmtree(self.root / name, ignore_errors=True)
        log.info("removed volume %s", name)

    def prune(self, keep: Callable[[Volume], bool]) -> list[str]:
        """Remove every volume no container uses that ``keep`` lets go; their names."""
        with self.locks.volumes.exclusive():
            return self._prune(keep)

    def _prune(self, keep: Callable[[Volume], bool]) -> list[str]:
        removed = []
        users = self.users()
        for volume in self.all():
            if keep(volume) or volume.name in users:
                continue
            self._delete(volume.name)
            removed.append(volume.name)
        return removed

    def remove_anonymous(self, names: list[str]) -> None:
        """`docker rm -v`: a removed container's anonymous volumes that no other container uses."""
        users = self.users() if names else {}
        for name in names:
            doc = self.store.volume(name)
            if doc is not None and doc.get("anonymous") and name not in users:
                self._delete(name)

    # -- a container's mounts (worker) ------------------------------------------------------------------
    def mount_points(self, requests: list[MountRequest], anonymous_targets: list[str], image_dirs: list[str],
                     inherited: list[MountPoint] | None = None) -> list[MountPoint]:
        """The mount points of a new container: its Binds, Mounts and Tmpfs, then those ``inherited``
        (VolumesFrom) at other paths, then an anonymous volume for each Config.Volumes (or image VOLUME)
        path none of them covers. Volumes named are created when
        missing; the anonymous ones made here go again if a later step fails. An empty volume starts
        with what the image (``image_dirs``: its layers) has at the mount's path, unless nocopy."""
        made: list[str] = []
        try:
            points = [self._mount_point(req, made, image_dirs) for req in requests]
            covered = {p.destination for p in points}
            for point in inherited or []:
                if point.destination not in covered:
                    covered.add(point.destination)
                    points.append(point)
            for target in anonymous_targets:
                if target not in covered:
                    covered.add(target)
                    points.append(self._mount_point(MountRequest(type="volume", target=target), made, image_dirs))
        except BaseException:
            self.discard(made)
            raise
        return points

    def discard(self, names: list[str]) -> None:
        """Drop volumes made for a container whose create then failed."""
        for name in names:
            if self.store.volume(name) is not None:
                self._delete(name)

    def _mount_point(self, req: MountRequest, made: list[str], image_dirs: list[str]) -> MountPoint:
        if req.type == "tmpfs":
            return MountPoint(type="tmpfs", destination=req.target, rw=not req.read_only,
                              options=list(req.tmpfs_options), listed=not req.from_tmpfs_map)
        if req.type == "bind":
            if not os.path.exists(req.source):
                if not req.from_binds:
                    raise InvalidArgument('invalid mount config for type "bind": bind source path does not '
                                          f"exist: {req.source}")
                os.makedirs(req.source, 0o755, exist_ok=True)  # as dockerd does for a -v host path
            return MountPoint(type="bind", destination=req.target, source=req.source, mode=req.mode,
                              rw=not req.read_only, propagation=req.propagation or "rprivate")
        if not req.source:  # an anonymous volume: a name of its own, nobody else's to race for
            return self._volume_point(req, made, image_dirs)
        with self.locks.volume(req.source):
            return self._volume_point(req, made, image_dirs)

    def _volume_point(self, req: MountRequest, made: list[str], image_dirs: list[str]) -> MountPoint:
        """The mount point of a volume, created if it does not exist, the image's content at the target
        copied in if it is empty."""
        if req.source and self.store.volume(req.source) is not None:
            volume = self.get(req.source)
        else:
            try:
                volume = self._create(req.source, req.volume_driver, req.volume_labels, req.volume_options)
            except NotFound as exc:
                # Not a 404 from container create: the CLI takes that for a missing image and pulls.
                raise InvalidArgument(exc.message) from None
            if volume.anonymous:
                made.append(volume.name)
        mode = (req.mode or "z") if req.source else ""  # as dockerd labels a named volume's mount
        source = volume.bind_device or str(self.directory(volume.name))
        if volume.bind_device and not os.path.isdir(source):
            raise InvalidArgument(f"failed to mount local volume: mount {source}:{self.directory(volume.name)}, "
                                  "flags: 0x1000: no such file or directory")
        if not volume.bind_device and not req.no_copy and not any(os.scandir(source)):
            copy_image_path(image_dirs, req.target, source)
        return MountPoint(type="volume", destination=req.target, source=source, name=volume.name,
                          driver=volume.driver, mode=mode, rw=not (req.read_only or volume.read_only),
                          anonymous=volume.anonymous)
