"""Reading a container's log: the json-file lines its shim writes (``{"log", "stream", "time"}``)."""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

FOLLOW_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class LogEntry:
    stream: str  # "stdout" | "stderr"
    time: str  # RFC 3339 with nanoseconds, UTC, as Docker prints with --timestamps
    data: bytes

    @property
    def timestamp(self) -> float:
        """Seconds since the epoch (for since/until filters)."""
        whole, _, frac = self.time.rstrip("Z").partition(".")
        base = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
        return base + (float(f"0.{frac}") if frac else 0.0)


def _parse(line: bytes) -> LogEntry | None:
    try:
        record = json.loads(line)
        return LogEntry(record["stream"], record["time"], record["log"].encode("utf-8", "surrogateescape"))
    except (ValueError, KeyError, AttributeError):
        return None  # a line cut short by a crash


@dataclass(frozen=True)
class LogFilter:
    stdout: bool = True
    stderr: bool = True
    since: float | None = None  # seconds since the epoch, inclusive
    until: float | None = None  # exclusive
    tail: int | None = None  # the last N entries; None: all

    def wants(self, entry: LogEntry) -> bool:
        if entry.stream == "stdout" and not self.stdout or entry.stream == "stderr" and not self.stderr:
            return False
        if self.since is not None or self.until is not None:
            ts = entry.timestamp
            if self.since is not None and ts < self.since or self.until is not None and ts >= self.until:
                return False
        return True


def _entries(path: str, start: int = 0) -> tuple[list[LogEntry], int]:
    """Complete lines from ``start``; returns them and the offset after the last complete line."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return [], start
    end = data.rfind(b"\n") + 1
    entries = [e for e in (_parse(line) for line in data[:end].splitlines()) if e is not None]
    return entries, start + end


def read(path: str, flt: LogFilter) -> list[LogEntry]:
    entries, _ = _entries(path)
    wanted: Iterator[LogEntry] = (e for e in entries if flt.wants(e))
    if flt.tail is not None:
        return list(deque(wanted, maxlen=flt.tail)) if flt.tail > 0 else []
    return list(wanted)


async def follow(path: str, flt: LogFilter, running: Callable[[], bool]) -> AsyncIterator[LogEntry]:
    """The entries ``read`` gives, then new ones as they are written, until the container has stopped.

    Polls the file: the log is the record, so following it never disturbs the container or its shim.
    """
    entries, offset = _entries(path)
    wanted = [e for e in entries if flt.wants(e)]
    if flt.tail is not None:
        wanted = wanted[-flt.tail :] if flt.tail > 0 else []
    for entry in wanted:
        yield entry
    while True:
        alive = running()
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:  # the container was removed
            return
        if size > offset:
            entries, end = _entries(path, offset)
            for entry in entries:
                if flt.wants(entry):
                    yield entry
            if end > offset:  # more may have come meanwhile; an unfinished last line waits a poll
                offset = end
                continue
        if not alive:
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
