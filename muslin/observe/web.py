"""The observer's web page: the live topology drawing; click two containers and a real trace runs and
its path is drawn on the picture.

A small threaded HTTP server (stdlib): ``/`` the page, ``/topology.svg`` the current drawing,
``/api/version`` a digest of the topology (the page polls it and redraws when containers come and go),
``POST /api/trace`` runs a trace (one at a time) and answers its JSON. What to look at and how to trace
are the caller's (``muslin lab ui`` passes the lab's), so this module knows nothing of labs.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from . import render_svg
from .model import Topology, to_json
from .trace import TraceError, TraceResult

PAGE = Path(__file__).with_name("page.html")
CACHE_SECONDS = 0.5  # requests within this share one collected topology
MAX_BODY = 4096


class Observer:
    """The topology (collected at most every CACHE_SECONDS) and traces, for the handlers."""

    def __init__(self, collect: Callable[[], Topology],
                 trace: Callable[[Topology, str, str, str, int | None], TraceResult]) -> None:
        self._collect = collect
        self._trace = trace
        self._lock = threading.Lock()
        self._trace_lock = threading.Lock()
        self._cached: tuple[float, Topology, str] | None = None

    def topology(self) -> tuple[Topology, str]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > CACHE_SECONDS:
                topology = self._collect()
                digest = hashlib.sha256(to_json(replace(topology, collected_in_ms=0.0)).encode()).hexdigest()[:16]
                self._cached = (time.monotonic(), topology, digest)
            return self._cached[1], self._cached[2]

    def trace(self, src: str, dst: str, protocol: str, port: int | None) -> TraceResult:
        with self._trace_lock:  # one probe at a time: each one's tables are its own, but the output is clearer
            topology, _ = self.topology()
            return self._trace(topology, src, dst, protocol, port)


def handler_for(observer: Observer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "muslin-ui"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
            pass  # a request per second from the page: not worth a line each

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, doc: object) -> None:
            self._send(status, json.dumps(doc).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 (the base class's name)
            try:
                if self.path == "/":
                    self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
                elif self.path == "/topology.svg":
                    topology, digest = observer.topology()
                    self.send_response(200)
                    body = render_svg.render(topology)
                    self.send_header("Content-Type", "image/svg+xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("X-Topology-Version", digest)
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/api/version":
                    self._json(200, {"version": observer.topology()[1]})
                elif self.path == "/api/topology":
                    topology, digest = observer.topology()
                    self._json(200, {"version": digest, "topology": asdict(topology)})
                else:
                    self._json(404, {"message": f"no such page: {self.path}"})
            except Exception as exc:  # a lab going down under the page: say so, keep serving
                self._json(503, {"message": f"{type(exc).__name__}: {exc}"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/api/trace":
                self._json(404, {"message": f"no such endpoint: {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._json(400, {"message": "a JSON body {src, dst, protocol, port} is needed"})
                return
            try:
                body = json.loads(self.rfile.read(length))
                protocol = body.get("protocol") or "icmp"
                port = int(body["port"]) if body.get("port") not in (None, "") else None
                if protocol not in ("icmp", "tcp", "udp"):
                    raise TraceError(f"protocol {protocol!r}: icmp, tcp or udp")
                result = observer.trace(str(body["src"]), str(body["dst"]), protocol, port)
            except (KeyError, ValueError, TypeError, TraceError) as exc:
                self._json(400, {"message": str(exc)})
                return
            except Exception as exc:
                self._json(500, {"message": f"{type(exc).__name__}: {exc}"})
                return
            self._json(200, asdict(result))

    return Handler


def make_server(observer: Observer, listen: str) -> ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen wants ADDRESS:PORT, not {listen!r}")
    server = ThreadingHTTPServer((host.strip("[]"), int(port)), handler_for(observer))
    server.daemon_threads = True
    return server
