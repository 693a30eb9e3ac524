"""`muslin`: the tool around the engine and the agent: `muslin topo`, `muslin trace`, and
`muslin lab up|status|exec|down|topo|trace|ui`."""

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
    topo = sub.add_parser("topo", help="the live topology of the engine at DOCKER_HOST and its host")
    _topo_options(topo)
    _engine_options(topo)
    trace = sub.add_parser("trace", help="send a real probe between containers/addresses and show its path")
    _trace_options(trace)
    _engine_options(trace)
    lab = sub.add_parser("lab", help="the article's multi-host setup on this machine, in namespaces")
    lab.add_argument("--root", type=Path, default=None, help="where the lab keeps its files (/run/muslin-lab)")
    lab_sub = lab.add_subparsers(dest="action", required=True)
    up = lab_sub.add_parser("up", help="build hosts, etcd, muslin-flanneld, muslind and containers")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--backend", choices=["vxlan", "udp", "host-gw", "bgp"], default=None,
                    help="Backend.Type of the network config (default: none, as in the article: udp)")
    up.add_argument("--routed", action="store_true",
                    help="nodes on two L2 segments joined by a router (with bgp: the router is their BGP peer)")
    up.add_argument("--overlay", action="store_true",
                    help="engines share the lab's etcd as their cluster store (Docker's classic overlay, §5.2.1), "
                         "and an overlay network is used across the nodes")
    lab_sub.add_parser("status", help="what runs on each node")
    ex = lab_sub.add_parser("exec", help="run a command on a node, with DOCKER_HOST set for its engine")
    ex.add_argument("node")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    lab_sub.add_parser("down", help="remove everything the lab made (idempotent, also after a crash)")
    _topo_options(lab_sub.add_parser("topo", help="the live topology of every node and the underlay"))
    _trace_options(lab_sub.add_parser("trace", help="trace a real probe across the lab's nodes"))
    ui = lab_sub.add_parser("ui", help="a web page with the live drawing; click two containers to trace")
    ui.add_argument("--listen", default="127.0.0.1:8780", help="ADDRESS:PORT to serve on (127.0.0.1:8780)")
    return p


def _topo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json", "svg"], default="text")
    p.add_argument("-o", "--output", type=Path, default=None, help="write to this file (required for svg)")


def _engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-H", "--host", dest="hosts", action="append", default=[], metavar="[NAME=]DOCKER_HOST",
                   help="an engine to look at (repeat it for several hosts, e.g. engines sharing overlay "
                        "networks); default: DOCKER_HOST. NAME names its host (default: its netns's name)")


def _trace_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="a container name, a host (node) name, or an IP address")
    p.add_argument("dst", help="a container name, a host (node) name, or an IP address")
    proto = p.add_mutually_exclusive_group()
    proto.add_argument("--tcp", type=int, metavar="PORT", help="probe with a TCP SYN to PORT")
    proto.add_argument("--udp", type=int, metavar="PORT", help="probe with a UDP datagram to PORT")
    p.add_argument("--format", choices=["text", "json"], default="text")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print(f"muslin {args.command} needs root (it works in network namespaces)", file=sys.stderr)
        return 1
    if args.command in ("topo", "trace"):
        from muslin.observe import commands

        return commands.run_engine(args)
    from muslin.lab.lab import DEFAULT_ROOT, Lab, LabError

    lab = Lab(args.root or DEFAULT_ROOT, out=lambda line: print(line, flush=True))
    try:
        if args.action == "up":
            lab.up(args.nodes, args.backend, args.routed, overlay=args.overlay)
            return 0
        if args.action == "status":
            return lab.status()
        if args.action == "exec":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            argv_, env = lab.exec_argv(args.node, cmd)
            os.execvpe(argv_[0], argv_, env)
        if args.action in ("topo", "trace", "ui"):
            from muslin.lab import commands

            return commands.run(lab, args)
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
