"""Observer benchmark: `muslin lab topo` and `muslin lab trace` on a two-node lab of each backend, through
the commands' own code path (in this process: the interpreter's start, about 0.2 s, comes on top of a
command line run), against the issue's goals: topo under 1 s, a trace under 3 s.

    .venv/bin/python bench/bench_observe.py [--backends vxlan,udp,host-gw] [--runs 5]

Builds its own lab (unique namespace prefix, its own root) and removes it, also on failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muslin.cli import build_parser  # noqa: E402
from muslin.lab import commands  # noqa: E402
from muslin.lab.lab import Lab  # noqa: E402


def timed(lab: Lab, argv: list[str]) -> tuple[float, int]:
    devnull = open(os.devnull, "w")
    stdout, sys.stdout = sys.stdout, devnull
    try:
        started = time.perf_counter()
        code = commands.run(lab, build_parser().parse_args(["lab", *argv]))
        return time.perf_counter() - started, code
    finally:
        sys.stdout = stdout
        devnull.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="vxlan,udp,host-gw")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for backend in args.backends.split(","):
        root = Path(tempfile.mkdtemp(prefix="muslin-bench-observe-"))
        lab = Lab(root / "lab", out=lambda line: None, prefix=f"bo{uuid.uuid4().hex[:5]}-")
        try:
            lab.up(2, backend)
            for name, argv, goal in (("topo", ["topo", "--format", "json"], 1.0),
                                     ("trace icmp", ["trace", "bb-node1", "bb-node2"], 3.0),
                                     ("trace tcp", ["trace", "bb-node1", "node2", "--tcp", "9"], 3.0)):
                runs = [timed(lab, argv) for _ in range(args.runs)]
                times = [t for t, _ in runs]
                print(f"{backend:8} {name:11} median {statistics.median(times) * 1000:6.0f} ms  "
                      f"max {max(times) * 1000:6.0f} ms  goal < {goal * 1000:.0f} ms  "
                      f"{'ok' if max(times) < goal else 'SLOW'}  exit {sorted({c for _, c in runs})}")
        finally:
            lab.down()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
