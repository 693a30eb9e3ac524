"""A container's files for clients: docker cp (stat, get, put an archive) and docker diff.

The runtime reaches the files (a running container's root, or a stopped one's assembled for the
request); this service resolves the container the client named and keeps its name for the messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from muslin.errors import InvalidArgument
from muslin.runtime import Change, PathStat, Runtime

from .containers import ContainerService


def _checked(path: str) -> str:
    if not path:
        raise InvalidArgument("bad parameter: path cannot be empty")
    if "\x00" in path:
        raise InvalidArgument(f"invalid path: {path!r}")
    return path


class FileService:
    def __init__(self, containers: ContainerService, runtime: Runtime) -> None:
        self.containers = containers
        self.runtime = runtime

    async def stat(self, ref: str, path: str) -> PathStat:
        c = self.containers.get(ref)
        return await self.runtime.stat_path(c.id, _checked(path), ref)

    async def get(self, ref: str, path: str) -> tuple[PathStat, AsyncIterator[bytes]]:
        c = self.containers.get(ref)
        return await self.runtime.get_archive(c.id, _checked(path), ref)

    async def put(self, ref: str, path: str, tar: bytes, no_overwrite_dir_non_dir: bool) -> None:
        c = self.containers.get(ref)
        await self.runtime.put_archive(c.id, _checked(path), ref, tar, no_overwrite_dir_non_dir)

    def changes(self, ref: str) -> list[Change]:
        return self.runtime.changes(self.containers.get(ref).id)
