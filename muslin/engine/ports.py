"""Published ports: parsing Docker's PortBindings, choosing host ports, and checking clashes."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from muslin.errors import Conflict, InvalidArgument

EPHEMERAL = range(32768, 61000)  # where dockerd takes ports for -P and "-p 80"
HostPort = tuple[str, str, int]  # (proto, host IP, port) of a binding programmed on the host


@dataclass(frozen=True)
class PortBinding:
    """One -p of a container: as asked (host_port 0: any), or as assigned while it runs."""

    container_port: int
    proto: str
    host_ip: str  # "" = every address (shown as 0.0.0.0)
    host_port: int  # 0 = choose one

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"


def parse_port_key(key: str) -> tuple[int, str]:
    """Docker's "port[/proto]" key of ExposedPorts and PortBindings."""
    port, _, proto = key.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidArgument(f"invalid port specification: {port!r}".replace("'", '"'))
    return int(port), proto


def valid_port_keys(exposed: dict) -> list[str]:
    """The well-formed "port/proto" keys of an image's ExposedPorts (an imported image may say anything)."""
    out = []
    for key in exposed:
        try:
            port, proto = parse_port_key(str(key))
        except InvalidArgument:
            continue
        out.append(f"{port}/{proto}")
    return out


def bindings_of(explicit: Iterable[PortBinding], exposed: Iterable[str], publish_all: bool) -> list[PortBinding]:
    """The -p bindings, and with -P one to a port of the engine's choice for every other exposed port."""
    out = list(explicit)
    if publish_all:
        bound = {b.key for b in out}
        for key in dict.fromkeys(exposed):
            if key not in bound:
                port, proto = parse_port_key(key)
                out.append(PortBinding(port, proto, "", 0))
    return out


def keep_host_ports(requested: list[PortBinding], assigned: list[PortBinding]) -> list[PortBinding]:
    """The requested bindings, those asking for any host port given the one they were assigned before
    (published ports that move to another endpoint keep their host ports)."""
    chosen: dict[tuple[int, str], list[int]] = {}
    for b in assigned:
        chosen.setdefault((b.container_port, b.proto), []).append(b.host_port)
    for b in requested:  # what was asked for by number is not what the engine chose
        ports = chosen.get((b.container_port, b.proto), [])
        if b.host_port and b.host_port in ports:
            ports.remove(b.host_port)
    out = []
    for b in requested:
        ports = chosen.get((b.container_port, b.proto), [])
        out.append(PortBinding(b.container_port, b.proto, b.host_ip, ports.pop(0)) if b.host_port == 0 and ports else b)
    return out


def clashes(a_ip: str, b_ip: str) -> bool:
    """Two bindings of one port clash when either listens everywhere or both name the same address."""
    return a_ip in ("", "0.0.0.0") or b_ip in ("", "0.0.0.0") or a_ip == b_ip


# No socket is bound on the host port: with DNAT and no userland proxy, a host process listening on the
# same port is shadowed for outside traffic (as with dockerd --userland-proxy=false). Clashes are only
# checked against other containers' bindings.
def assign(bindings: list[PortBinding], taken: list[HostPort]) -> list[PortBinding]:
    """Fill in host ports for 0s and refuse a binding that clashes with ``taken`` (proto, ip, port).
    The taken ones are indexed by (proto, port) first: a free port is then found in one lookup per
    candidate, not in a scan of every published port."""
    used: dict[tuple[str, int], list[str]] = {}
    for proto, ip, port in taken:
        used.setdefault((proto, port), []).append(ip)

    def free(proto: str, ip: str, port: int) -> bool:
        return not any(clashes(other, ip) for other in used.get((proto, port), ()))

    out = []
    for b in bindings:
        port = b.host_port
        if port == 0:
            start = random.randrange(len(EPHEMERAL))
            for offset in range(len(EPHEMERAL)):
                port = EPHEMERAL[(start + offset) % len(EPHEMERAL)]
                if free(b.proto, b.host_ip, port):
                    break
            else:
                raise Conflict("no free host port left for publishing")
        elif not free(b.proto, b.host_ip, port):
            shown = b.host_ip or "0.0.0.0"
            raise Conflict(f"Bind for {shown}:{port} failed: port is already allocated")
        used.setdefault((b.proto, port), []).append(b.host_ip)
        out.append(PortBinding(b.container_port, b.proto, b.host_ip, port))
    return out
