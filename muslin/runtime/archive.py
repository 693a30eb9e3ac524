"""docker cp and docker diff underneath: a container's files through ``rootfs_helper`` (one process per
request, so it may chroot and unshare), and its changes from the overlay's upper directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from .errors import EngineError, InvalidArgument, NotFound
from .layers import is_opaque, is_whiteout, merged

HELPER_PATH = str(Path(__file__).with_name("rootfs_helper.py"))
CHUNK = 1 << 16
# What dockerd's init layer holds (mount points and files it makes for every container): runc makes
# them in our upper directory instead, and they are no change of the container's, as with dockerd.
INIT_PATHS = frozenset({"/dev", "/dev/pts", "/dev/shm", "/dev/console", "/proc", "/sys", "/.dockerenv",
                        "/etc/resolv.conf", "/etc/hosts", "/etc/hostname", "/etc/mtab"})


@dataclass(frozen=True)
class PathStat:
    """X-Docker-Container-Path-Stat (mode in Go's os.FileMode bits, mtime RFC 3339)."""

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str

    def to_json(self) -> dict:
        return {"name": self.name, "size": self.size, "mode": self.mode, "mtime": self.mtime,
                "linkTarget": self.link_target}


class Kind(IntEnum):
    MODIFIED = 0
    ADDED = 1
    DELETED = 2


@dataclass(frozen=True)
class Change:
    path: str
    kind: Kind


# -- files: through the helper -----------------------------------------------------------------------
async def _start(python: str, request: dict, stdin: bool) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        python, "-I", "-S", HELPER_PATH, json.dumps(request), stdin=asyncio.subprocess.PIPE if stdin else
        asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        limit=CHUNK * 4)


async def _answer(proc: asyncio.subprocess.Process, path: str, ref: str) -> dict:
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if not line:
        await proc.wait()
        assert proc.stderr is not None
        detail = (await proc.stderr.read()).decode(errors="replace").strip().splitlines()
        raise EngineError(f"could not read the container's files: {detail[-1] if detail else 'no answer'}")
    answer = json.loads(line)
    if "error" in answer:
        await _finish(proc)
        if answer["kind"] == "notfound":
            raise NotFound(f"Could not find the file {path} in container {ref}")
        if answer["kind"] == "invalid":
            raise InvalidArgument(answer["error"])
        raise EngineError(answer["error"])
    return answer


async def _finish(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


def _stat(answer: dict) -> PathStat:
    s = answer["stat"]
    return PathStat(name=s["name"], size=s["size"], mode=s["mode"], mtime=s["mtime"], link_target=s["linkTarget"])


async def stat_path(python: str, where: dict, path: str, ref: str) -> PathStat:
    proc = await _start(python, {**where, "op": "stat", "path": path}, stdin=False)
    try:
        return _stat(await _answer(proc, path, ref))
    finally:
        await _finish(proc)


async def get_archive(python: str, where: dict, path: str, ref: str) -> tuple[PathStat, AsyncIterator[bytes]]:
    """The path's stat and its tar stream (the helper is stopped when the stream is closed or ends)."""
    proc = await _start(python, {**where, "op": "get", "path": path}, stdin=False)
    try:
        info = _stat(await _answer(proc, path, ref))
    except BaseException:
        await _finish(proc)
        raise

    async def chunks() -> AsyncIterator[bytes]:
        assert proc.stdout is not None
        try:
            while data := await proc.stdout.read(CHUNK):
                yield data
        finally:
            await _finish(proc)

    return info, chunks()


async def put_archive(python: str, where: dict, path: str, ref: str, data: bytes,
                      no_overwrite_dir_non_dir: bool) -> None:
    proc = await _start(python, {**where, "op": "put", "path": path,
                                 "no_overwrite_dir_non_dir": no_overwrite_dir_non_dir}, stdin=True)
    assert proc.stdin is not None
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(data)
            await proc.stdin.drain()
            proc.stdin.close()
        await _answer(proc, path, ref)
    finally:
        await _finish(proc)


# -- changes: the upper directory against the image's layers -----------------------------------------
def _lower_stat(lower_dirs: list[str], rel: str) -> os.stat_result | None:
    """The path as the image has it (the topmost layer's entry; a whiteout there means it is gone)."""
    parts = rel.split("/")
    found = merged(lower_dirs, parts)
    return os.lstat(os.path.join(found[0], *parts)) if found else None


def _lower_names(lower_dirs: list[str], rel: str) -> set[str]:
    parts = rel.split("/")
    names: set[str] = set()
    for layer in merged(lower_dirs, parts):
        with contextlib.suppress(OSError):
            names.update(os.listdir(os.path.join(layer, *parts)))
    return names


def changes(upper: str, lower_dirs: list[str]) -> list[Change]:
    """dockerd's `docker diff` of an overlay container: added (1), deleted (2, a whiteout), modified (0:
    a file or link replaced, a directory whose owner or mode changed, or the parent of an added,
    deleted or replaced entry). What runc makes for every container (INIT_PATHS) is no change, as in dockerd."""
    found: dict[str, Kind] = {}

    def parent_changed(path: str) -> None:
        parent = os.path.dirname(path)
        if parent != "/" and parent not in found:
            found[parent] = Kind.MODIFIED

    for dirpath, dirnames, filenames in os.walk(upper):
        rel_dir = os.path.relpath(dirpath, upper)
        for name in sorted([*dirnames, *filenames]):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            path = "/" + rel
            if path in INIT_PATHS:
                continue
            st = os.lstat(os.path.join(upper, rel))
            before = _lower_stat(lower_dirs, rel)
            if is_whiteout(st):
                if before is not None:
                    found[path] = Kind.DELETED
                    parent_changed(path)
                continue
            if before is None:
                found[path] = Kind.ADDED
                parent_changed(path)
            elif not stat.S_ISDIR(st.st_mode) or not stat.S_ISDIR(before.st_mode):
                found[path] = Kind.MODIFIED
                parent_changed(path)
            elif (st.st_mode, st.st_uid, st.st_gid) != (before.st_mode, before.st_uid, before.st_gid):
                found.setdefault(path, Kind.MODIFIED)
            if stat.S_ISDIR(st.st_mode) and before is not None and is_opaque(os.path.join(upper, rel)):
                present = set(os.listdir(os.path.join(upper, rel)))
                for gone in sorted(_lower_names(lower_dirs, rel) - present):
                    found[os.path.join(path, gone)] = Kind.DELETED
                found.setdefault(path, Kind.MODIFIED)
    return [Change(path, kind) for path, kind in sorted(found.items())]
