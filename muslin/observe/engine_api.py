"""The few Docker Engine API calls the observer needs, over the engine's unix socket.

Deliberately the public API only (what `docker inspect` shows), so the observer works against any
engine that speaks it, and never reaches into muslind's own state.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
from urllib.parse import quote

SO_PEERCRED = 17
API_TIMEOUT = 5.0


class EngineUnreachable(RuntimeError):
    """No engine answers at that DOCKER_HOST."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=API_TIMEOUT)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(API_TIMEOUT)
        sock.connect(self.path)
        self.sock = sock


def socket_path(docker_host: str) -> str:
    if not docker_host.startswith("unix://"):
        raise EngineUnreachable(f"only unix:// engines can be observed (the observer reads their namespace): {docker_host}")
    return docker_host[len("unix://"):]


class EngineClient:
    def __init__(self, docker_host: str) -> None:
        self.path = socket_path(docker_host)
        self._conn: _UnixConnection | None = None

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()

    def get(self, url: str) -> object:
        for attempt in (1, 2):  # one reconnect: the engine may close a kept-alive connection
            if self._conn is None:
                self._conn = _UnixConnection(self.path)
            try:
                self._conn.request("GET", url)
                resp = self._conn.getresponse()
                body = resp.read()
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise EngineUnreachable(f"no engine answers on {self.path}: {exc}") from exc
                continue
            if resp.status != 200:
                raise EngineUnreachable(f"GET {url}: {resp.status} {body[:200]!r}")
            return json.loads(body)
        raise AssertionError("unreachable")

    def containers(self) -> list[dict]:
        """`docker inspect` of every running container."""
        listed = self.get("/containers/json")
        assert isinstance(listed, list)
        return [self.get(f"/containers/{quote(c['Id'])}/json") for c in listed]  # type: ignore[misc]

    def networks(self) -> list[dict]:
        found = self.get("/networks")
        assert isinstance(found, list)
        return found

    def daemon_pid(self) -> int:
        """The engine's process, from the socket's peer credentials: its network namespace is the host's."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(API_TIMEOUT)
            sock.connect(self.path)
            pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, 12))
        except OSError as exc:
            raise EngineUnreachable(f"no engine answers on {self.path}: {exc}") from exc
        finally:
            sock.close()
        return pid
