"""`muslin lab ui` in a real browser (Debian's chromium, headless, over the DevTools protocol): the live
drawing follows containers as they come and go, and two real clicks run a trace whose path is drawn."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from muslin.kernel import netns, nftrace
from muslin.lab import topology as underlay
from muslin.lab import ui
from muslin.lab.lab import Lab

from ..browser import Browser

pytestmark = pytest.mark.root


@pytest.fixture
def lab(shared_lab) -> Lab:
    return shared_lab("vxlan")


@contextlib.contextmanager
def served(lab: Lab) -> Iterator[tuple[Browser, int]]:
    httpd = ui.server(lab, "127.0.0.1:0")
    serving = threading.Thread(target=httpd.serve_forever, daemon=True)
    serving.start()
    browser = Browser()
    try:
        browser.open(f"http://127.0.0.1:{httpd.server_address[1]}/")
        yield browser, httpd.server_address[1]
    finally:
        browser.close()
        httpd.shutdown()
        httpd.server_close()
        serving.join(5)


@pytest.fixture
def page(lab: Lab):
    with served(lab) as opened:
        yield opened


def node_present(node_id: str) -> str:
    return f"!!document.getElementById({json.dumps(node_id)})"


def test_live_drawing_and_a_trace_by_clicking(lab: Lab, page, tmp_path: Path) -> None:
    browser, port = page
    node1, node2 = lab.nodes()
    browser.wait_for("window.muslin && window.muslin.redraws > 0", what="the first drawing")
    for node_id in ("container/node1/bb-node1", "container/node2/bb-node2", "tunnel/node1/flannel.1",
                    "bridge/node2/muslin0", "switch/br0"):
        assert browser.evaluate(node_present(node_id)), node_id

    # a container comes: the page redraws by itself
    lab.run(node2, "docker", "run", "-d", "--name", "late", "busybox", "sleep", "600")
    browser.wait_for(node_present("container/node2/late"), what="the new container on the page")

    browser.click("document.getElementById('container/node1/bb-node1')")
    browser.click("document.getElementById('container/node2/late')")
    verdict = browser.wait_for("window.muslin.traces > 0 && document.getElementById('verdict').textContent",
                               what="the trace's verdict")
    late_ip = lab.run(node2, "docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "late").stdout.strip()
    assert verdict == f"ARRIVED: arrived at late ({late_ip})"
    on_path = browser.evaluate("[...document.querySelectorAll('g.node.onpath')].map(e => e.id)")
    for node_id in ("container/node1/bb-node1", "bridge/node1/muslin0", "tunnel/node1/flannel.1", "iface/node1/eth0",
                    "switch/br0", "iface/node2/eth0", "tunnel/node2/flannel.1", "bridge/node2/muslin0",
                    "container/node2/late"):
        assert node_id in on_path, (node_id, on_path)
    assert "container/node2/bb-node2" not in on_path
    edges = browser.evaluate("[...document.querySelectorAll('g.edge.onpath')].map(e => e.id)")
    assert "container/node1/bb-node1--bridge/node1/muslin0" in edges and "iface/node1/eth0--switch/br0" in edges
    assert "vxlan VNI 1, outer udp" in browser.evaluate("document.getElementById('hops').textContent")
    browser.screenshot(str(tmp_path / "ui.png"))
    assert (tmp_path / "ui.png").stat().st_size > 10_000

    # and goes: the page follows
    lab.run(node2, "docker", "rm", "-f", "late")
    browser.wait_for(f"!{node_present('container/node2/late')}", what="the removed container to go")

    # the page's API refuses nonsense without running anything
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/trace", body=json.dumps({"src": "bb-node1", "dst": "nosuch"}),
                 headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    assert reply.status == 400 and "nosuch" in json.loads(reply.read())["message"]
    conn.close()

    for ns in (netns.path_for(n.ns) for n in (node1, node2)):
        assert nftrace.trace_tables(ns) == []
    assert nftrace.trace_tables(netns.path_for(underlay.switch_name(lab.prefix))) == []


def test_overlay_namespaces_drawn_and_a_trace_across_them(shared_lab) -> None:
    """--overlay: each node's ov1 namespace is on the page, and a click trace from node2's container to
    web1 paints both namespaces' br0 and vxlan0 and the underlay between them."""
    lab = shared_lab("vxlan", overlay=True)
    node1, node2 = lab.nodes()
    lab.run(node2, "docker", "run", "-d", "--name", "c2", "--network", "ov1", "busybox", "sleep", "600")
    with served(lab) as (browser, _):
        browser.wait_for(node_present("container/node2/c2"), what="c2 on the page")
        for node_id in ("bridge/node1/ov1/br0", "tunnel/node1/ov1/vxlan0", "bridge/node2/ov1/br0",
                        "tunnel/node2/ov1/vxlan0"):
            assert browser.evaluate(node_present(node_id)), node_id
        browser.click("document.getElementById('container/node2/c2')")
        browser.click("document.getElementById('container/node1/web1')")
        verdict = browser.wait_for("window.muslin.traces > 0 && document.getElementById('verdict').textContent",
                                   what="the trace's verdict")
        web1_ip = lab.run(node1, "docker", "inspect", "-f", "{{.NetworkSettings.Networks.ov1.IPAddress}}",
                          "web1").stdout.strip()
        assert verdict == f"ARRIVED: arrived at web1 ({web1_ip})"
        on_path = browser.evaluate("[...document.querySelectorAll('g.node.onpath')].map(e => e.id)")
        for node_id in ("container/node2/c2", "bridge/node2/ov1/br0", "tunnel/node2/ov1/vxlan0",
                        "iface/node2/eth0", "switch/br0", "iface/node1/eth0", "tunnel/node1/ov1/vxlan0",
                        "bridge/node1/ov1/br0", "container/node1/web1"):
            assert node_id in on_path, (node_id, on_path)
        assert "bridge/node2/muslin0" not in on_path  # the overlay never touches the flannel bridge
        assert "br0 → vxlan0: " in browser.evaluate("document.getElementById('hops').textContent")
