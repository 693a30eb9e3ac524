"""Where muslind listens, with dockerd's rules for who may connect.

- ``-H unix:///path``: a socket of mode 0660, owned by root and the group of ``-G/--group`` (default
  ``docker`` where that group exists, else root's group), so only root and that group drive the engine.
- ``-H tcp://host:port``: only with TLS client verification (``--tlsverify`` with ``--tlscacert``,
  ``--tlscert``, ``--tlskey``), as the Docker docs require for a socket anyone on the network can reach.
  dockerd still serves plain tcp with a warning; muslind refuses at startup instead.
"""

from __future__ import annotations

import grp
import os
import ssl
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

DEFAULT_UNIX = "/run/muslin.sock"
DEFAULT_GROUP = "docker"
TLS_PORT = 2376
SOCKET_MODE = 0o660


class ListenError(ValueError):
    """A -H, -G or TLS flag that cannot be served; the message says which and why."""


@dataclass(frozen=True)
class UnixListener:
    path: str


@dataclass(frozen=True)
class TcpListener:
    host: str  # "" for every address
    port: int


Listener = UnixListener | TcpListener


@dataclass(frozen=True)
class TlsFiles:
    cacert: str
    cert: str
    key: str


def default_cert_dir() -> Path:
    """dockerd's: $DOCKER_CERT_PATH, else ~/.docker."""
    return Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")


def parse_host(text: str) -> Listener:
    """One -H value: unix:///path, a bare /path, or tcp://[host]:port (port 2376 when left out)."""
    if text.startswith("unix://"):
        return UnixListener(text[len("unix://"):] or DEFAULT_UNIX)
    if text.startswith("/"):
        return UnixListener(text)
    if text.startswith("tcp://"):
        rest = text[len("tcp://"):].rstrip("/")
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            host, port_text = rest, str(TLS_PORT)
        host = host.strip("[]")
        try:
            port = int(port_text)
            if host:
                ip_address(host)
        except ValueError:
            raise ListenError(f"invalid -H {text!r}: expected tcp://ADDRESS:PORT, like tcp://0.0.0.0:2376") from None
        if not 0 < port < 65536:
            raise ListenError(f"invalid -H {text!r}: port {port} is out of range 1..65535")
        return TcpListener(host, port)
    raise ListenError(f"unsupported -H {text!r}: use unix:///path or tcp://ADDRESS:PORT")


def socket_gid(group: str | None) -> int:
    """The gid for unix sockets: -G's group (name or number), which must exist; without -G, docker's
    group if there is one, else root's."""
    if group is None:
        try:
            return grp.getgrnam(DEFAULT_GROUP).gr_gid
        except KeyError:
            return 0
    try:
        return grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ListenError(f"-G {group!r}: no such group") from None


def check_tcp(listeners: list[Listener], tlsverify: bool) -> None:
    """Refuse tcp without client verification, naming the flags that make it safe."""
    plain = [listener for listener in listeners if isinstance(listener, TcpListener)]
    if plain and not tlsverify:
        where = ", ".join(f"tcp://{listener.host or '0.0.0.0'}:{listener.port}" for listener in plain)
        raise ListenError(f"refusing to serve {where} without TLS client verification (anyone who reaches "
                          "the port would be root on this host): pass --tlsverify --tlscacert --tlscert --tlskey")


def server_tls_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2 or later; a client must present a certificate signed by the CA (dockerd's --tlsverify)."""
    for name, path in (("--tlscacert", files.cacert), ("--tlscert", files.cert), ("--tlskey", files.key)):
        if not os.path.isfile(path):
            raise ListenError(f"{name} {path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
        context.load_verify_locations(cafile=files.cacert)
    except (ssl.SSLError, ValueError) as exc:
        raise ListenError(f"TLS files unusable ({files.cert}, {files.key}, {files.cacert}): {exc}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    return context
