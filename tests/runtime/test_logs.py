"""Following a json-file log: pure file logic, no container needed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from muslin.runtime.logs import LogFilter, follow


def record(text: str) -> bytes:
    return json.dumps({"log": text, "stream": "stdout", "time": "2026-01-01T00:00:00.000000000Z"}).encode() + b"\n"


def test_follow_waits_out_an_unfinished_last_line_and_ends_with_the_container(tmp_path: Path) -> None:
    log = tmp_path / "container.log"
    second = record("two\n")
    log.write_bytes(record("one\n") + second[:10])  # the shim is mid-write
    polls = 0

    def running() -> bool:
        nonlocal polls
        polls += 1
        if polls == 3:
            with open(log, "ab") as f:
                f.write(second[10:])
        return polls < 6

    async def main() -> list[bytes]:
        return [e.data async for e in follow(str(log), LogFilter(), running)]

    assert asyncio.run(asyncio.wait_for(main(), 5)) == [b"one\n", b"two\n"]
    assert polls == 6  # the completed line came on the next poll, and the end after it


def test_follow_ends_when_the_container_stops_with_an_unfinished_line(tmp_path: Path) -> None:
    log = tmp_path / "container.log"
    log.write_bytes(record("one\n") + record("cut")[:7])  # cut short by a crash
    polls = 0

    def stopped() -> bool:
        nonlocal polls
        polls += 1
        if polls > 100:  # the loop re-reads the same bytes without ever looking at this answer
            raise AssertionError("follow spins over the unfinished line")
        return False

    async def main() -> list[bytes]:
        return [e.data async for e in follow(str(log), LogFilter(), stopped)]

    assert asyncio.run(asyncio.wait_for(main(), 5)) == [b"one\n"]
    assert polls == 1
