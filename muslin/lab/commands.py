"""`muslin lab topo|trace|ui`: the observer pointed at every node of the lab and its underlay."""

from __future__ import annotations

import argparse

from muslin.kernel import netns
from muslin.lab import topology as underlay
from muslin.lab.lab import NETWORK, Lab
from muslin.lab.views import host_specs, lab_topology
from muslin.observe.commands import emit_topology, run_trace


def run(lab: Lab, args: argparse.Namespace) -> int:
    if args.action == "topo":
        return emit_topology(lab_topology(lab), args.format, args.output)
    if args.action == "trace":
        switch = (netns.path_for(underlay.switch_name(lab.prefix)), underlay.SWITCH_BRIDGE)
        return run_trace(host_specs(lab), args, overlay=NETWORK, underlay=switch)
    from muslin.lab import ui

    return ui.serve(lab, args.listen)
