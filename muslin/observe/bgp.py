"""BGP sessions of a host, as the BIRD running in its network namespace reports them.

BIRD is found by process: a ``bird`` whose network namespace is the host's, its control socket from its
``-s`` argument (BIRD's default otherwise). ``show protocols all`` over that socket gives each BGP
session's state and neighbor. Read-only: the observer never configures BIRD.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass

DEFAULT_SOCKET = "/run/bird/bird.ctl"
CONTROL_TIMEOUT = 2.0
REPLY_END = re.compile(rb"^\d{4} ", re.MULTILINE)  # a reply's last line: code, space (not "-")


@dataclass(frozen=True)
class Speaker:
    pid: int
    socket: str


@dataclass(frozen=True)
class Session:
    name: str
    state: str  # BGP state: Established, Active, Connect, Idle, ...
    neighbor: str | None
    neighbor_as: int | None
    local_as: int | None
    routes: str | None  # "N imported, M exported" as BIRD counts them


def speakers() -> dict[int, list[Speaker]]:
    """Every BIRD process, by the inode of its network namespace (one scan of /proc for all hosts)."""
    found: dict[int, list[Speaker]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "bird":
                    continue
            inode = os.stat(f"/proc/{entry}/ns/net").st_ino
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        except OSError:
            continue  # gone meanwhile
        path = args[args.index("-s") + 1] if "-s" in args[:-1] else DEFAULT_SOCKET
        # The path is as BIRD sees it: a lab node's BIRD runs in the node's own mount namespace, where
        # /run is the node's. Reach it through the process's own root (or working directory).
        seen_from_here = f"/proc/{entry}/root{path}" if path.startswith("/") else f"/proc/{entry}/cwd/{path}"
        found.setdefault(inode, []).append(Speaker(int(entry), seen_from_here))
    return found


def ask(socket_path: str, line: str) -> str:
    """One command on BIRD's control socket; the reply's text with the codes taken off."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CONTROL_TIMEOUT)
        s.connect(socket_path)
        _reply(s)  # the greeting
        s.sendall(line.encode() + b"\n")
        return _reply(s)


def _reply(s: socket.socket) -> str:
    data = b""
    deadline = time.monotonic() + CONTROL_TIMEOUT
    while not (data.endswith(b"\n") and REPLY_END.search(data.rstrip(b"\n").rsplit(b"\n", 1)[-1])):
        if time.monotonic() > deadline:
            raise TimeoutError("BIRD did not finish its reply")
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("BIRD closed its control socket")
        data += chunk
    lines = []
    for raw in data.decode(errors="replace").splitlines():
        # "1002-text" / "1006 text" start a part, " text" continues one
        lines.append(raw[5:] if re.match(r"^\d{4}[ -]", raw) else raw[1:])
    return "\n".join(lines)


def parse_sessions(text: str) -> list[Session]:
    """The BGP protocols of ``show protocols all``: a row per protocol, then indented details."""
    sessions: list[Session] = []
    current: dict[str, str] = {}

    def close() -> None:
        if current.get("proto") == "BGP":
            sessions.append(Session(
                name=current["name"], state=current.get("BGP state") or current.get("info", "").split(" ")[0],
                neighbor=current.get("Neighbor address"),
                neighbor_as=int(current["Neighbor AS"]) if current.get("Neighbor AS", "").isdigit() else None,
                local_as=int(current["Local AS"]) if current.get("Local AS", "").isdigit() else None,
                routes=current.get("Routes")))

    for line in text.splitlines():
        if not line.strip() or line.startswith("Name "):
            continue
        if not line[0].isspace():
            close()
            words = line.split()
            current = {"name": words[0], "proto": words[1] if len(words) > 1 else "",
                       "info": " ".join(words[6:]) if len(words) > 6 else ""}
        elif ":" in line:
            key, _, value = line.strip().partition(":")
            current.setdefault(key.strip(), value.strip())
    close()
    return sessions


def sessions_of(found: list[Speaker]) -> list[Session]:
    out: list[Session] = []
    for speaker in found:
        try:
            out.extend(parse_sessions(ask(speaker.socket, "show protocols all")))
        except (OSError, TimeoutError, ConnectionError):
            continue  # a BIRD starting or stopping: no sessions to show
    return out
