"""What `muslin lab topo|trace|ui` look at: the lab's nodes as hosts for ``muslin.observe``."""

from __future__ import annotations

from pathlib import Path

from muslin.kernel import netns
from muslin.lab import topology as underlay
from muslin.lab.lab import NETWORK, Lab, LabError
from muslin.observe import render_svg
from muslin.observe.model import Topology
from muslin.observe.topology import HostSpec, collect

TOPOLOGY_FILE = "topology.svg"


def host_specs(lab: Lab) -> list[HostSpec]:
    nodes = lab.nodes()
    if not nodes:
        raise LabError("no lab is up (run `muslin lab up`)")
    specs = [HostSpec(n.name, netns.path_for(n.ns), n.docker_host) for n in nodes]
    router = underlay.router_name(lab.prefix)
    if netns.exists(router):  # a routed lab: the top-of-rack router is a host of its own, with no engine
        specs.append(HostSpec("router", netns.path_for(router), None))
    return specs


def lab_topology(lab: Lab) -> Topology:
    switch = underlay.switch_name(lab.prefix)
    return collect(host_specs(lab), underlay=(netns.path_for(switch), underlay.SWITCH_BRIDGE),
                   backend=lab.backend() or None, overlay=NETWORK)


def write_drawing(lab: Lab) -> Path:
    """The topology drawing next to the lab's files (``<root>/topology.svg``)."""
    path = lab.root / TOPOLOGY_FILE
    path.write_bytes(render_svg.render(lab_topology(lab)))
    return path
