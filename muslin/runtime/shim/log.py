"""The container's log as Docker's json-file driver writes it, one record per output line."""

from __future__ import annotations

import json
import os
import sys
import time

LOG_LINE_MAX = 16 * 1024  # as Docker's json-file: longer lines are split into partial records


def rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


class Log:
    """Docker json-file lines, one per output line, stamped with the time the line's bytes arrived."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.partial = {"stdout": b"", "stderr": b""}

    def add(self, stream: str, data: bytes) -> None:
        tail = self._tail(stream, rfc3339(time.time_ns()))
        buf = self.partial[stream] + data
        records = []
        start = 0  # walked, not re-sliced: a 64 KiB read of short lines is one pass
        while True:
            cut = buf.find(b"\n", start, start + LOG_LINE_MAX)
            if cut < 0:
                if len(buf) - start < LOG_LINE_MAX:
                    break
                cut = start + LOG_LINE_MAX - 1
            records.append(self._record(buf[start : cut + 1], tail))
            start = cut + 1
        self.partial[stream] = buf[start:]
        self._write(records)

    def flush(self) -> None:
        now = rfc3339(time.time_ns())
        records = [self._record(b, self._tail(s, now)) for s, b in self.partial.items() if b]
        self.partial = {"stdout": b"", "stderr": b""}
        self._write(records)

    def _write(self, records: list[str]) -> None:
        if not records:
            return
        try:
            os.write(self.fd, "".join(records).encode())
        except OSError as exc:  # a full disk loses log lines, never the container's output to attachers
            print(f"writing the log: {exc}", file=sys.stderr)

    # What json.dumps({"log": ..., "stream": ..., "time": ...}) gives, with the part after the line's
    # text made once per read rather than a dict encoded per line.
    @staticmethod
    def _tail(stream: str, when: str) -> str:
        return ', "stream": ' + json.dumps(stream) + ', "time": ' + json.dumps(when) + "}\n"

    @staticmethod
    def _record(line: bytes, tail: str) -> str:
        return '{"log": ' + json.dumps(line.decode("utf-8", "surrogateescape")) + tail
