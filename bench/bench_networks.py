"""`docker network create` + `docker network rm` through the CLI: muslind vs the reference dockerd.

Run: .venv/bin/python bench/bench_networks.py [rounds]   (root; everything inside namespaces)
"""

from __future__ import annotations

import sys

from common import docker, muslind, reference_dockerd, report, timed


def create_rm(host: str) -> None:
    a = docker(host, "network", "create", "--subnet", "10.77.0.0/24", "benchnet")
    b = docker(host, "network", "rm", "benchnet")
    if a.returncode or b.returncode:
        raise RuntimeError(a.stderr + b.stderr)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with muslind() as host:
        create_rm(host)  # warm up
        ours = timed(lambda: create_rm(host), rounds)
    with reference_dockerd() as ref_host:
        ref = None
        if ref_host:
            create_rm(ref_host)
            ref = timed(lambda: create_rm(ref_host), rounds)
    report("network create + rm (CLI)", ours, ref, goal=0.25)


if __name__ == "__main__":
    main()
