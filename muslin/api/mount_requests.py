"""HostConfig.Binds, HostConfig.Mounts, HostConfig.Tmpfs and Config.Volumes to the engine's MountRequests.

Checked for form as dockerd's mount parser checks them (with its messages, as a 400): absolute paths,
known modes and propagations, fields that do not belong to a mount's type, one mount per destination.
Whether a host path or a volume exists is the engine's to decide.
"""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING, Any

from muslin.engine.mounts import MountRequest

from .http import HTTPError

if TYPE_CHECKING:
    from .requests import Fields

PROPAGATIONS = ("shared", "rshared", "slave", "rslave", "private", "rprivate")
ACCESS_MODES = ("rw", "ro")
LABEL_MODES = ("z", "Z")
CONSISTENCY_MODES = ("consistent", "cached", "delegated")
VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
TMPFS_VALUE_OPTIONS = ("size", "mode", "nr_inodes", "nr_blocks", "uid", "gid")
TMPFS_FLAGS = ("ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync", "async", "atime",
               "noatime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime")


def bad(message: str) -> HTTPError:
    return HTTPError(400, message)


def clean(path: str) -> str:
    """Go's filepath.Clean of an absolute path (no path holds a NUL byte)."""
    if "\x00" in path:
        raise bad(f"invalid mount path: {path!r}")
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def volume_name(name: str, context: str = "") -> str:
    """A local volume's name as dockerd's local driver takes it (``context``: the name in the message)."""
    prefix = f"create {context or name}: "
    if len(name) == 1:
        raise bad(prefix + "volume name is too short, names should be at least two alphanumeric characters")
    if not VOLUME_NAME.fullmatch(name):
        raise bad(prefix + f'"{name}" includes invalid characters for a local volume name, only '
                  '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path')
    return name


# -- Binds ------------------------------------------------------------------------------------------
def _mode_parts(mode: str) -> list[str] | None:
    """The parts of a Binds mode, or None when dockerd's validMode refuses it."""
    parts = mode.split(",")
    counts = {"access": 0, "propagation": 0, "nocopy": 0, "label": 0, "consistency": 0}
    for part in parts:
        kind = ("access" if part in ACCESS_MODES else "propagation" if part in PROPAGATIONS
                else "nocopy" if part == "nocopy" else "label" if part in LABEL_MODES
                else "consistency" if part in CONSISTENCY_MODES else None)
        if kind is None:
            return None
        counts[kind] += 1
        if counts[kind] > 1:
            return None
    return parts


def bind(spec: str) -> MountRequest:
    """One Binds entry: ``/host:/ctr[:mode]``, ``volume:/ctr[:mode]``, or ``/ctr[:mode]`` (anonymous)."""
    fields = spec.split(":")
    if len(fields) > 3 or any(not f for f in fields):
        raise bad(f"invalid volume specification: '{spec}'")
    source, target, mode = "", fields[0], ""
    if len(fields) == 2 and _mode_parts(fields[1]) is not None:
        mode = fields[1]
    elif len(fields) >= 2:
        source, target = fields[0], fields[1]
        mode = fields[2] if len(fields) == 3 else ""
    parts = _mode_parts(mode) if mode else []
    if parts is None:
        raise bad(f"invalid mode: {mode}")
    kind = "bind" if source.startswith("/") else "volume"
    problem = f"invalid volume specification: '{spec}': invalid mount config for type \"{kind}\": "
    if not target.startswith("/"):
        raise bad(problem + f"invalid mount path: '{target}' mount path must be absolute")
    if clean(target) == "/":
        raise bad(problem + "invalid specification: destination can't be '/'")
    if kind == "bind" and "nocopy" in parts:
        raise bad(problem + "field VolumeOptions must not be specified")
    if kind == "volume" and source:
        volume_name(source)
    propagation = next((p for p in parts if p in PROPAGATIONS), "")
    return MountRequest(type=kind, target=clean(target), source=clean(source) if kind == "bind" else source,
                        read_only="ro" in parts, propagation=propagation if kind == "bind" else "",
                        mode=mode, from_binds=True, no_copy="nocopy" in parts)


# -- Mounts -----------------------------------------------------------------------------------------
def mount(fields: Fields) -> MountRequest:
    """One HostConfig.Mounts entry (Docker's mount.Mount)."""
    kind = fields.str("Type")
    target, source = fields.str("Target"), fields.str("Source")
    read_only = fields.bool("ReadOnly")
    fields.str("Consistency")
    bind_options = fields.obj("BindOptions", "mount.BindOptions")
    volume_options = fields.obj("VolumeOptions", "mount.VolumeOptions")
    tmpfs_options = fields.obj("TmpfsOptions", "mount.TmpfsOptions")
    problem = f'invalid mount config for type "{kind}": '
    if kind not in ("bind", "volume", "tmpfs"):
        raise bad(problem + "mount type unknown")
    if not target:
        raise bad(problem + "field Target must not be empty")
    if not target.startswith("/"):
        raise bad(problem + f"invalid mount path: '{target}' mount path must be absolute")
    if clean(target) == "/":
        raise bad(problem + "invalid specification: destination can't be '/'")
    given = {"BindOptions": fields.raw("BindOptions") is not None,
             "VolumeOptions": fields.raw("VolumeOptions") is not None,
             "TmpfsOptions": fields.raw("TmpfsOptions") is not None}
    own = {"bind": "BindOptions", "volume": "VolumeOptions", "tmpfs": "TmpfsOptions"}[kind]
    for key, present in given.items():
        if present and key != own:
            raise bad(problem + f"field {key} must not be specified")
    if kind == "bind":
        if not source:
            raise bad(problem + "field Source must not be empty")
        if not source.startswith("/"):
            raise bad(problem + f"invalid mount path: '{source}' mount path must be absolute")
        propagation = bind_options.str("Propagation")
        bind_options.bool("NonRecursive")
        if propagation and propagation not in PROPAGATIONS:
            raise bad(problem + f"invalid propagation mode: {propagation}")
        return MountRequest(type="bind", target=clean(target), source=clean(source), read_only=read_only,
                            propagation=propagation)
    if kind == "tmpfs":
        if source:
            raise bad(problem + "field Source must not be specified")
        size = tmpfs_options.int("SizeBytes", "int64")
        mode = tmpfs_options.int("Mode", "fs.FileMode")
        if size is not None and size < 0:
            raise bad(problem + "invalid tmpfs size: negative")
        options = [*([f"size={size}"] if size else []), *([f"mode={mode:o}"] if mode else [])]
        return MountRequest(type="tmpfs", target=clean(target), read_only=read_only, tmpfs_options=tuple(options))
    if source:
        volume_name(source)
    driver = volume_options.obj("DriverConfig", "mount.Driver")
    return MountRequest(type="volume", target=clean(target), source=source, read_only=read_only,
                        no_copy=volume_options.bool("NoCopy"), volume_driver=driver.str("Name") or "local",
                        volume_labels=volume_options.str_map("Labels"), volume_options=driver.str_map("Options"))


def volumes_from(spec: str) -> tuple[str, str]:
    """One VolumesFrom entry: ``container[:ro|rw]`` (dockerd's parseVolumesFrom)."""
    ref, _, mode = spec.partition(":")
    if not ref:
        raise bad(f"invalid volumes-from specification: '{spec}'")
    parts = _mode_parts(mode) if mode else []
    if parts is None or any(p not in (*ACCESS_MODES, *LABEL_MODES) for p in parts):
        raise bad(f"invalid mode: {mode}")
    return ref, mode


# -- Tmpfs and Config.Volumes -------------------------------------------------------------------------
def tmpfs(target: str, options: str) -> MountRequest:
    """One HostConfig.Tmpfs entry: ``{"/run": "size=64m,mode=1777"}``."""
    if not target.startswith("/"):
        raise bad(f'invalid mount config for type "tmpfs": invalid mount path: \'{target}\' mount path must be absolute')
    parts = [p for p in options.split(",") if p]
    for part in parts:
        key, has_value, _ = part.partition("=")
        if not (key in TMPFS_VALUE_OPTIONS and has_value) and part not in TMPFS_FLAGS:
            raise bad(f'invalid tmpfs option ["{part}"]')
    return MountRequest(type="tmpfs", target=clean(target), read_only="ro" in parts,
                        tmpfs_options=tuple(p for p in parts if p not in ("ro", "rw")), from_tmpfs_map=True)


def container_mounts(host: Fields, fields_type: type[Fields]) -> list[MountRequest]:
    """Every mount a create asks for, in dockerd's order: Binds, Mounts, Tmpfs; one per destination.
    (``fields_type`` is requests.Fields, which imports this module.)"""
    requests = [bind(spec) for spec in host.str_list("Binds") or []]
    raw_mounts = host.raw("Mounts")
    if raw_mounts is not None and not isinstance(raw_mounts, list):
        raise host._wrong("Mounts", raw_mounts, "[]mount.Mount")
    requests += [mount(fields_type(item, "mount.Mount")) for item in raw_mounts or []]
    requests += [tmpfs(target, options) for target, options in host.str_map("Tmpfs").items()]
    seen: set[str] = set()
    for req in requests:
        if req.target in seen:
            raise bad(f"Duplicate mount point: {req.target}")
        seen.add(req.target)
    return requests


def volume_targets(value: Any, body: Fields) -> list[str]:
    """Config.Volumes: {"/path": {}}, each an anonymous volume unless a mount covers it."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise body._wrong("Volumes", value, "map[string]struct {}")
    targets = []
    for target in value:
        if not str(target).startswith("/"):
            raise bad(f'invalid mount config for type "volume": invalid mount path: \'{target}\' mount path must be absolute')
        if clean(str(target)) == "/":
            raise bad("invalid mount config for type \"volume\": invalid specification: destination can't be '/'")
        targets.append(clean(str(target)))
    return targets
