"""`muslin`: the tool around the engine and the agent. `muslin lab up|status|exec|down`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from muslin import __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="muslin", description="muslin: container networking, done properly")
    p.add_argument("--version", action="version", version=f"muslin {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    lab = sub.add_parser("lab", help="the article's multi-host setup on this machine, in namespaces")
    lab.add_argument("--root", type=Path, default=None, help="where the lab keeps its files (/run/muslin-lab)")
    lab_sub = lab.add_subparsers(dest="action", required=True)
    up = lab_sub.add_parser("up", help="build hosts, etcd, muslin-flanneld, muslind and containers")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--backend", choices=["vxlan", "udp", "host-gw"], default=None,
                    help="Backend.Type of the network config (default: none, as in the article: udp)")
    lab_sub.add_parser("status", help="what runs on each node")
    ex = lab_sub.add_parser("exec", help="run a command on a node, with DOCKER_HOST set for its engine")
    ex.add_argument("node")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    lab_sub.add_parser("down", help="remove everything the lab made (idempotent, also after a crash)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("muslin lab needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    from muslin.lab.lab import DEFAULT_ROOT, Lab, LabError

    lab = Lab(args.root or DEFAULT_ROOT, out=lambda line: print(line, flush=True))
    try:
        if args.action == "up":
            lab.up(args.nodes, args.backend)
            return 0
        if args.action == "status":
            return lab.status()
        if args.action == "exec":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            argv_, env = lab.exec_argv(args.node, cmd)
            os.execvpe(argv_[0], argv_, env)
        if args.action == "down":
            lab.down()
            print("lab is down")
            return 0
    except LabError as exc:
        print(f"muslin lab {args.action}: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
