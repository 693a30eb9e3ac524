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


def engine_hosts(given: list[str]) -> list[HostSpec]:
    """The hosts of ``-H [NAME=]DOCKER_HOST`` (DOCKER_HOST's engine when none), each named once."""
    wanted = [h.partition("=")[::2] if "=" in h.split("://")[0] else ("", h) for h in given] or \
        [("", os.environ.get("DOCKER_HOST", DEFAULT_DOCKER_HOST))]
    hosts: list[HostSpec] = []
    for name, docker_host in wanted:
        host = engine_host(docker_host, name or None, by_netns=len(wanted) > 1)
        taken = {h.name for h in hosts}
        unique, n = host.name, 2
        while unique in taken:
            unique, n = f"{host.name}-{n}", n + 1
        hosts.append(HostSpec(unique, host.netns, host.docker_host))
    return hosts


def run_engine(args: argparse.Namespace) -> int:
    try:
        hosts = engine_hosts(args.hosts)
        if args.command == "topo":
            return emit_topology(collect(hosts), args.format, args.output)
        return run_trace(hosts, args, overlay=None)
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
