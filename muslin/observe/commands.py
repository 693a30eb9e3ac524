"""The `muslin topo` and `muslin trace` commands, for one engine (DOCKER_HOST) or a set of hosts."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import model, render_svg, render_text
from .engine_api import EngineUnreachable
from .topology import HostSpec, collect, engine_host

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def emit_topology(topology: model.Topology, fmt: str, output: Path | None) -> int:
    if fmt == "svg":
        if output is None:
            print("muslin topo: --format svg needs -o FILE", file=sys.stderr)
            return 2
        output.write_bytes(render_svg.render(topology))
        print(output)
        return 0
    text = model.to_json(topology) + "\n" if fmt == "json" else render_text.render(topology)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        print(output)
    return 0


def run_engine(args: argparse.Namespace) -> int:
    docker_host = os.environ.get("DOCKER_HOST", DEFAULT_DOCKER_HOST)
    try:
        host = engine_host(docker_host)
        if args.command == "topo":
            return emit_topology(collect([host]), args.format, args.output)
        return run_trace([host], args, overlay=None)
    except EngineUnreachable as exc:
        print(f"muslin {args.command}: {exc}", file=sys.stderr)
        return 1


def run_trace(hosts: list[HostSpec], args: argparse.Namespace, overlay: str | None,
              underlay: tuple[str, str] | None = None) -> int:
    from . import trace

    proto, port = ("tcp", args.tcp) if args.tcp is not None else ("udp", args.udp) if args.udp is not None \
        else ("icmp", None)
    try:
        result = trace.run(hosts, args.src, args.dst, proto, port, overlay=overlay, underlay=underlay)
    except trace.TraceError as exc:
        print(f"muslin trace: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(trace.to_json(result) + "\n" if args.format == "json" else trace.render_text(result))
    return 0 if result.arrived else 1
