"""muslind's configuration file, dockerd's ``daemon.json``: the same keys with dockerd's semantics.

``--config-file PATH`` names it; by default muslind reads ``/etc/muslin/daemon.json`` when it exists
(never ``/etc/docker/daemon.json``: that one belongs to a Docker on the same machine, whose keys muslind
does not all have). As dockerd (daemon/config: ``MergeDaemonConfigurations``,
``findConfigurationConflicts``):
- the keys are the long flag names (``mtu``, ``cluster-store``, ``data-root``, ...), except the
  repeatable flags, named in the plural as dockerd's named options are: ``hosts`` for ``-H``,
  ``cluster-store-opts`` (an object) for ``--cluster-store-opt``;
- a key that is no option is refused: "the following directives don't match any configuration
  option: KEY, ...";
- a key also given as a flag is refused, whatever both values: "the following directives are specified
  both as a flag and in the configuration file: KEY: (from flag: V, from file: V), ...";
- an explicitly named file that is missing is an error, the default one may be absent; an empty file
  sets nothing;
- every error reads "unable to configure the Docker daemon with file PATH: ..." and the daemon does not
  start. Values are checked as the flags' are (``--bip``, ``-H``, ...), with the same messages.
Keys that dockerd has and muslind does not (``log-driver``, ``registry-mirrors``, ...) are unknown
here: muslind would not honour them, so it says so rather than start without them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from muslin import listeners

DEFAULT_PATH = Path("/etc/muslin/daemon.json")


class ConfigFileError(Exception):
    """The configuration file cannot be used: the daemon must not start."""


@dataclass(frozen=True)
class Key:
    """A key of the file: the flag it stands for (argparse dest) and how its JSON value becomes the
    flag's value (raising ValueError or argparse.ArgumentTypeError with the reason)."""
    dest: str
    convert: Callable[[object], object]


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_json_type(value)}")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_json_type(value)}")
    return value


def _integer(value: object) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value != int(value)):
        raise ValueError(f"expected an integer, got {_json_type(value)}")
    return int(value)


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {_json_type(value)}")
    return list(value)


def _hosts(value: object) -> list[listeners.Listener]:
    try:
        return [listeners.parse_host(h) for h in _strings(value)]
    except listeners.ListenError as exc:
        raise ValueError(str(exc)) from None


def _options(value: object) -> list[str]:
    """An object of strings, the repeated ``--cluster-store-opt key=value``."""
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"expected an object of strings, like {{\"discovery.ttl\": \"20s\"}}, got {_json_type(value)}")
    return [f"{k}={v}" for k, v in value.items()]


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    kind = {bool: "a boolean", str: "a string", int: "a number", float: "a number", list: "a list",
            dict: "an object"}[type(value)]
    return f"{kind} ({json.dumps(value)})"


def keys(parse_bip: Callable[[str], object]) -> dict[str, Key]:
    """The file's keys (dockerd's names) for muslind's flags; ``parse_bip`` is the flag's own check."""
    return {
        "hosts": Key("hosts", _hosts),
        "group": Key("group", _string),
        "tls": Key("tls", _boolean),
        "tlsverify": Key("tlsverify", _boolean),
        "tlscacert": Key("tlscacert", _string),
        "tlscert": Key("tlscert", _string),
        "tlskey": Key("tlskey", _string),
        "data-root": Key("data_root", _string),
        "exec-root": Key("exec_root", _string),
        "pidfile": Key("pidfile", _string),
        "bridge": Key("bridge_name", _string),
        "bip": Key("bip", lambda v: parse_bip(_string(v))),
        "mtu": Key("mtu", _integer),
        "ip-masq": Key("ip_masq", _boolean),
        "iptables": Key("iptables", _boolean),
        "firewall-backend": Key("firewall_backend", _string),
        "ip-forward": Key("ip_forward", _boolean),
        "icc": Key("icc", _boolean),
        "ip": Key("default_bind_ip", _string),
        "flannel-subnet-file": Key("flannel_subnet_file", _string),
        "cluster-store": Key("cluster_store", _string),
        "cluster-advertise": Key("cluster_advertise", _string),
        "cluster-store-opts": Key("cluster_store_opt", _options),
        "debug": Key("debug", _boolean),
    }


def read(path: Path, explicit: bool) -> dict[str, object]:
    """The file's top-level object ({} for an absent default file or an empty one)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if explicit:
            raise ConfigFileError(_prefix(path, f"open {path}: no such file or directory")) from None
        return {}
    except OSError as exc:
        raise ConfigFileError(_prefix(path, f"open {path}: {os.strerror(exc.errno or 0).lower()}")) from None
    if not text.strip():
        return {}
    try:
        found = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(_prefix(path, f"invalid JSON: {exc}")) from None
    if not isinstance(found, dict):
        raise ConfigFileError(_prefix(path, f"the configuration must be a JSON object, not {_json_type(found)}"))
    return found


def given_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str]) -> set[str]:
    """The dests of the flags on the command line: ``argv`` parsed again into a namespace where every
    dest of ``args`` already holds a marker, which argparse's defaults then leave alone. The marker is
    a list because an append action copies what it finds: a flag given is then another object."""
    unset: list[str] = []
    again = parser.parse_args(argv, namespace=argparse.Namespace(**{dest: unset for dest in vars(args)}))
    return {dest for dest, value in vars(again).items() if value is not unset}


def merge(args: argparse.Namespace, given: set[str], path: Path, explicit: bool,
          parse_bip: Callable[[str], object]) -> list[str]:
    """Set ``args`` from the file's keys (the flags not given); returns the keys taken. Refuses the file
    as dockerd does: unknown keys first, then keys also given as flags, then values."""
    found = read(path, explicit)
    known = keys(parse_bip)
    unknown = sorted(k for k in found if k not in known)
    if unknown:
        raise ConfigFileError(_prefix(path, "the following directives don't match any configuration option: "
                                            + ", ".join(unknown)))
    conflicts = [f"{k}: (from flag: {_go_text(getattr(args, known[k].dest))}, from file: {_go_text(v)})"
                 for k, v in sorted(found.items()) if known[k].dest in given]
    if conflicts:
        raise ConfigFileError(_prefix(path, "the following directives are specified both as a flag and in the "
                                            "configuration file: " + ", ".join(conflicts)))
    for k, v in found.items():
        try:
            setattr(args, known[k].dest, known[k].convert(v))
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigFileError(_prefix(path, f"invalid value for {k!r}: {exc}")) from None
    return sorted(found)


def _prefix(path: Path, reason: str) -> str:
    return f"unable to configure the Docker daemon with file {path}: {reason}"


def _go_text(value: object) -> str:
    """A value as dockerd's message prints it (Go's %v): [a b], map[k:v], true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_text(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        if value and all(isinstance(v, str) and "=" in v for v in value):  # --cluster-store-opt k=v ...
            return _go_text(dict(v.split("=", 1) for v in value))
        return "[" + " ".join(_go_text(v) for v in value) + "]"
    if isinstance(value, listeners.UnixListener):
        return f"unix://{value.path}"
    if isinstance(value, listeners.TcpListener):
        return f"tcp://{value.host}:{value.port}"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return "" if value is None else str(value)
