"""Volumes in use: the containers that mount each volume are read once per request, not once per volume."""

from __future__ import annotations

from pathlib import Path

import pytest

from muslin.engine.store import Store
from muslin.engine.volumes import VolumeService
from muslin.errors import Conflict


def test_prune_and_remove_read_the_users_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def users() -> dict[str, list[str]]:
        calls.append(1)
        return {"used": ["c1", "c2"]}

    store = Store(tmp_path)
    try:
        volumes = VolumeService(store, tmp_path, users)
        for name in ("used", "free1", "free2", "kept"):
            volumes.create(name)
        assert sorted(volumes.prune(lambda v: v.name == "kept")) == ["free1", "free2"]
        assert len(calls) == 1
        assert sorted(v.name for v in volumes.all()) == ["kept", "used"]
        with pytest.raises(Conflict, match=r"remove used: volume is in use - \[c1, c2\]"):
            volumes.remove("used")
        assert (tmp_path / "volumes" / "used" / "_data").is_dir()
        volumes.remove("kept")
        assert [v.name for v in volumes.all()] == ["used"]
    finally:
        store.close()
