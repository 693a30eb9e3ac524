"""`muslin lab ui`: the observer's web page over the lab (every node, the underlay, traces across them)."""

from __future__ import annotations

from http.server import ThreadingHTTPServer

from muslin.kernel import netns
from muslin.lab import topology as underlay
from muslin.lab.lab import NETWORK, Lab
from muslin.lab.views import host_specs, lab_topology
from muslin.observe import trace
from muslin.observe.model import Topology
from muslin.observe.web import Observer, make_server


def observer(lab: Lab) -> Observer:
    switch = (netns.path_for(underlay.switch_name(lab.prefix)), underlay.SWITCH_BRIDGE)

    def run_trace(topology: Topology, src: str, dst: str, protocol: str, port: int | None) -> trace.TraceResult:
        return trace.run(host_specs(lab), src, dst, protocol, port, overlay=NETWORK, underlay=switch,
                         topology=topology)

    return Observer(lambda: lab_topology(lab), run_trace)


def server(lab: Lab, listen: str) -> ThreadingHTTPServer:
    host_specs(lab)  # no lab: say so now, not on the first request
    return make_server(observer(lab), listen)


def serve(lab: Lab, listen: str) -> int:
    httpd = server(lab, listen)
    host, port = httpd.server_address[:2]
    lab.out(f"muslin lab ui on http://{host}:{port}/ (Ctrl-C stops it)")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0
