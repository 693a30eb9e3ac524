"""Docker's legacy links (``--link name:alias``) and endpoint links, as text: pure functions, no state.

On the default bridge a link gives the parent (the container that asked for it) the child's address
under the alias: environment variables at the parent's start (``ALIAS_PORT_80_TCP=tcp://ip:80``,
``ALIAS_NAME=/parent/alias``, ``ALIAS_ENV_X=...``, as dockerd's ``links.Link.ToEnv``) and an /etc/hosts
line kept up to date while both run. On a user-defined network a link is only a name: the parent's
embedded DNS answers the alias with the child's address on that network (dockerd's endpoint aliases).
The engine decides which containers are linked; this module only says what that looks like.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from muslin.errors import InvalidArgument


@dataclass(frozen=True)
class LinkRef:
    """One ``name:alias`` as a client wrote it: the child's name (or id) and the alias it goes by."""

    name: str
    alias: str


def parse_link(value: str) -> LinkRef:
    """``name:alias``, ``name`` (the alias is the name), or inspect's own ``/name:/parent/alias`` (a
    HostConfig sent back as read), as dockerd's opts.ParseLink reads them."""
    if not value:
        raise InvalidArgument("empty string specified for links")
    parts = value.split(":")
    if len(parts) > 2:
        raise InvalidArgument(f"bad format for links: {value}")
    if len(parts) == 1:
        return LinkRef(value.removeprefix("/"), value.removeprefix("/"))
    name, alias = parts
    if name.startswith("/"):
        return LinkRef(name[1:], alias.rsplit("/", 1)[-1])
    if not name or not alias:
        raise InvalidArgument(f"bad format for links: {value}")
    return LinkRef(name, alias)


def link_name(parent: str, alias: str) -> str:
    """The name a link registers for the child, ``/parent/alias`` (``docker ps`` shows it, and
    ``docker rm --link`` takes it)."""
    return f"/{parent}/{alias}"


def env_prefix(alias: str) -> str:
    return alias.upper().replace("-", "_")


def _sorted_ports(exposed: list[str]) -> list[tuple[str, str]]:
    """(port, proto) by number, tcp before udp on the same number (dockerd's order)."""
    ports = [(k.partition("/")[0], k.partition("/")[2] or "tcp") for k in exposed]
    return sorted(ports, key=lambda p: (int(p[0]), p[1] != "tcp", p[1]))


def _last_contiguous(ports: list[tuple[str, str]], start: int) -> int:
    """Index of the last port of the run of consecutive numbers that begins at ``start``."""
    end, value = start, int(ports[start][0])
    while end + 1 < len(ports) and int(ports[end + 1][0]) <= value + 1:
        end, value = end + 1, value + 1
    return end


def link_env(name: str, child_ip: IPv4Address | str, child_env: list[str], exposed: list[str]) -> list[str]:
    """The variables a link to a child with ``exposed`` ports ("80/tcp") and environment ``child_env``
    gives its parent; ``name`` is the link's ``/parent/alias``. A run of three or more consecutive
    ports also gets _START/_END variables, as dockerd writes them."""
    alias = env_prefix(name.rsplit("/", 1)[-1])
    ports = _sorted_ports(exposed)
    env: list[str] = []
    if ports:
        port, proto = ports[0]
        env.append(f"{alias}_PORT={proto}://{child_ip}:{port}")
    i = 0
    while i < len(ports):
        j = _last_contiguous(ports, i)
        if j > i + 1:
            port, proto = ports[i]
            last_port, last_proto = ports[j]
            key = f"{alias}_PORT_{port}_{proto.upper()}"
            env += [f"{key}_START={proto}://{child_ip}:{port}", f"{key}_ADDR={child_ip}", f"{key}_PROTO={proto}",
                    f"{key}_PORT_START={port}",
                    f"{alias}_PORT_{port}_{last_proto.upper()}_END={last_proto}://{child_ip}:{last_port}",
                    f"{alias}_PORT_{port}_{last_proto.upper()}_PORT_END={last_port}"]
            i = j + 1
        else:
            i += 1
    for port, proto in ports:
        key = f"{alias}_PORT_{port}_{proto.upper()}"
        env += [f"{key}={proto}://{child_ip}:{port}", f"{key}_ADDR={child_ip}", f"{key}_PORT={port}",
                f"{key}_PROTO={proto}"]
    env.append(f"{alias}_NAME={name}")
    for entry in child_env:
        key, sep, value = entry.partition("=")
        if sep and key not in ("HOME", "PATH"):  # set by image builds, meaningless for the parent
            env.append(f"{alias}_ENV_{key}={value}")
    return env


def hosts_line(child_ip: IPv4Address | str, alias: str, child_name: str, child_hostname: str) -> str:
    """The parent's /etc/hosts line for a child: its alias, hostname and (when not the alias) name."""
    names = [alias, child_hostname] + ([child_name] if child_name != alias else [])
    return f"{child_ip}\t" + " ".join(dict.fromkeys(n for n in names if n))


def endpoint_aliases(links: list[str]) -> dict[str, str]:
    """An endpoint's Links (``name:alias``) as the names its embedded DNS answers: alias -> name."""
    out = {}
    for value in links:
        ref = parse_link(value)
        out[ref.alias.lower()] = ref.name.lower()
    return out
