"""muslind with a sampling profiler of all its threads (stdlib only: py-spy is not installed).

Every INTERVAL seconds each thread's stack is sampled; at exit (SIGTERM) the counts go to the file named
by MUSLIN_PROFILE_OUT: per kind of thread (the event loop, the engine's workers, others), the innermost
frames where time went, and how many samples found a thread waiting for a lock (and which). What a
worker spends waiting on a lock is what serialises it; what the event loop spends anywhere is time that
every request waits for.

Run: python bench/sampled_muslind.py MUSLIND-ARGS...   (bench_concurrency.py --profile FILE does it)
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from types import FrameType

from muslin import daemon

INTERVAL = 0.005
TOP = 25


def _kind(name: str) -> str:
    if name == "MainThread":
        return "event loop"
    if name.startswith("engine-cluster"):
        return "cluster lane"
    if name.startswith("engine"):
        return "engine workers"
    return "other threads"


def _where(frame: FrameType) -> tuple[str, str]:
    """(innermost frame, innermost frame of muslin's code) of a sampled stack: a walk of the frames, no
    source lookups (the sampler competes for the interpreter lock with what it samples)."""
    inner: FrameType | None = frame
    ours = frame
    while inner is not None:
        if "/muslin/" in inner.f_code.co_filename:
            ours = inner
            break
        inner = inner.f_back
    return _name(frame), _name(ours)


def _name(frame: FrameType) -> str:
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}"


def sample(stop: threading.Event, counts: dict[str, collections.Counter], totals: collections.Counter) -> None:
    me = threading.get_ident()
    while not stop.is_set():
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():  # noqa: SLF001 - the sampler's whole point
            if ident == me:
                continue
            kind = _kind(names.get(ident, "?"))
            inner, ours = _where(frame)
            totals[kind] += 1
            counts[kind][f"{ours}  <  {inner}"] += 1
        time.sleep(INTERVAL)


def write(path: str, counts: dict[str, collections.Counter], totals: collections.Counter) -> None:
    with open(path, "w") as out:
        for kind, total in totals.most_common():
            out.write(f"== {kind}: {total} samples\n")
            for where, n in counts[kind].most_common(TOP):
                out.write(f"{100 * n / total:6.1f}%  {where}\n")


def main() -> int:
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    totals: collections.Counter = collections.Counter()
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(stop, counts, totals), name="sampler", daemon=True)
    sampler.start()
    try:
        return daemon.main(sys.argv[1:])
    finally:
        stop.set()
        sampler.join(1)
        write(os.environ.get("MUSLIN_PROFILE_OUT", "/tmp/muslind-profile.txt"), counts, totals)


if __name__ == "__main__":
    sys.exit(main())
