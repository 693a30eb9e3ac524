"""Fixtures for the runtime: a busybox image store shared by the session, a runtime per test with a
leak check at teardown (no shim, runc state, cgroup, mount or directory may outlive its container)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from muslin.runtime import ImageStore, Runtime, Stream
from muslin.kernel import netns


@pytest.fixture(scope="session")
def busybox_store(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    store = ImageStore(tmp_path_factory.mktemp("images"))
    store.ensure_busybox()
    return store


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry), cmdline))
    return found


def assert_no_leaks(base: Path, ids: list[str]) -> None:
    assert processes_mentioning(str(base)) == [], "processes outlived their containers"
    with open("/proc/self/mountinfo") as f:
        mounts = [line for line in f if str(base) in line]
    assert mounts == [], "mounts left on the host"
    assert list((base / "state" / "runc").iterdir()) == [], "runc state left"
    assert [p.name for p in (base / "state").iterdir()] == ["runc"], "shim state dirs left"
    assert list((base / "root" / "containers").iterdir()) == [], "container dirs left"
    for cid in ids:
        left = [c for c in os.listdir("/sys/fs/cgroup") if os.path.isdir(f"/sys/fs/cgroup/{c}/muslin-{cid}")]
        assert left == [], f"cgroups left for {cid}: {left}"


@pytest.fixture
def runtime(tmp_path: Path, busybox_store: ImageStore) -> Iterator[Runtime]:
    rt = Runtime(tmp_path / "root", tmp_path / "state", busybox_store)
    try:
        yield rt
    finally:
        ids = [s.id for s in rt.list()]
        for cid in ids:
            rt.delete(cid, force=True)
        rt.close()
        assert_no_leaks(tmp_path, ids)


@pytest.fixture
def netns_path(make_netns) -> str:
    return netns.path_for(make_netns("mrt-"))


async def collect(stream: Stream, timeout: float = 10.0) -> tuple[bytes, bytes]:
    """Everything a stream gives until it ends: (stdout, stderr)."""
    out = {"stdout": b"", "stderr": b""}

    async def read_all() -> None:
        while (chunk := await stream.read()) is not None:
            out[chunk[0]] += chunk[1]

    try:
        await asyncio.wait_for(read_all(), timeout)
    finally:
        stream.close()
    return out["stdout"], out["stderr"]


async def read_until(stream: Stream, marker: bytes, timeout: float = 10.0) -> bytes:
    seen = b""

    async def read() -> None:
        nonlocal seen
        while marker not in seen:
            chunk = await stream.read()
            if chunk is None:
                raise AssertionError(f"stream ended before {marker!r}; got {seen!r}")
            seen += chunk[1]

    await asyncio.wait_for(read(), timeout)
    return seen
