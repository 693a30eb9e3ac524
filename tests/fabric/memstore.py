"""An in-memory KeyValueStore for unit tests of pure logic (the subnet manager's and the agent's decisions)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from muslin.etcd import Entry, Event


class MemoryStore:
    """A dict with revisions: enough of KeyValueStore to exercise the manager's decisions."""

    api = "memory"

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int, bool]] = {}
        self.revision = 1
        self.steal_next_create: str | None = None  # simulate another node winning a race
        self.steal_next_put: str | None = None  # another node writes the key just before our conditional put

    async def get(self, key: str) -> Entry | None:
        if key not in self.data:
            return None
        value, rev, expires = self.data[key]
        return Entry(key, value, rev, expires)

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        return [Entry(k, v, r, e) for k, (v, r, e) in self.data.items() if k.startswith(prefix)], self.revision

    async def create(self, key: str, value: bytes, ttl: int | None) -> bool:
        if self.steal_next_create is not None:
            self.revision += 1
            self.data[key] = (self.steal_next_create.encode(), self.revision, True)
            self.steal_next_create = None
        if key in self.data:
            return False
        await self.put(key, value, ttl)
        return True

    async def put(self, key: str, value: bytes, ttl: int | None, prev_revision: int | None = None) -> bool:
        if self.steal_next_put is not None:
            self.revision += 1
            self.data[key] = (self.steal_next_put.encode(), self.revision, True)
            self.steal_next_put = None
        if prev_revision is not None and (key not in self.data or self.data[key][1] != prev_revision):
            return False
        self.revision += 1
        self.data[key] = (value, self.revision, bool(ttl))
        return True

    async def delete(self, key: str) -> None:
        self.revision += 1
        self.data.pop(key, None)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        raise NotImplementedError
        yield  # pragma: no cover

    async def close(self) -> None:
        return None
