"""Docker's JSON and query strings to the engine's typed requests: the one place that validates them.

Every field is checked by type (with the message Go's JSON decoder gives dockerd, so the CLI prints
what it prints against Docker) and by form (ports, addresses, names, signals, environment entries),
before the engine sees anything: a bad request is a 400 and changes nothing. Whether a name is free or
a network exists is the engine's to decide.
"""

from __future__ import annotations

import json
import re
import signal as signals
from ipaddress import IPv4Address, ip_address
from typing import Any, NamedTuple

from muslin.engine import health, restarts
from muslin.engine.link_text import LinkRef, parse_link
from muslin.engine.ports import PortBinding, parse_port_key
from muslin.engine.requests import (ContainerCreate, ContainerUpdate, EndpointRequest, ExecCreate, IPAMPoolRequest,
                                    NetworkCreate, VolumeCreate)
from muslin.engine.resources import INT_FIELDS, STR_FIELDS
from muslin.errors import InvalidArgument

from . import detachkeys, mount_requests
from .http import HTTPError, Request

# Docker's names of containers (daemon/names.RestrictedNamePattern: two characters at least). Network
# names have no pattern in dockerd: "test 01", "a/b" or "ünï" are all created.
CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
DOMAIN_RE = re.compile(r"\.?[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?")
MAX_SIGNAL = 64  # SIGRTMAX on Linux
RUNTIMES = ("runc",)  # HostConfig.Runtime; "" is the default, runc
# The log drivers muslind takes (it keeps every log as json-file does; "none" keeps it unreadable) and
# the options each accepts, as dockerd validates them at create.
LOG_DRIVERS = {"json-file": {"max-file", "max-size", "compress", "labels", "labels-regex", "env", "env-regex", "tag"},
               "local": {"max-file", "max-size", "compress"},
               "none": None}
# Rotation is not applied (the shim keeps every log whole), so a size cap is refused rather than
# silently ignored; without max-size, max-file and compress change nothing in dockerd either.
UNAPPLIED_LOG_OPTS = ("max-size",)
JSON_TYPES = {str: "string", bool: "bool", int: "number", float: "number", list: "array", dict: "object"}


def bad(message: str) -> HTTPError:
    return HTTPError(400, message)


class Fields:
    """A JSON object whose fields are read by Go type, named like the Go struct dockerd decodes into."""

    def __init__(self, data: Any, struct: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise bad(f"json: cannot unmarshal {_json_type(data)} into Go value of type {struct}")
        self.data = data
        self.struct = struct

    def _wrong(self, key: str, value: Any, go_type: str) -> HTTPError:
        return bad(f"json: cannot unmarshal {_json_type(value)} into Go struct field {self.struct}.{key} of type {go_type}")

    def raw(self, key: str) -> Any:
        """The field, matched as Go's decoder does: the exact name, else any case of it (docker-py
        sends exec create's ``detachKeys``)."""
        if key in self.data:
            return self.data[key]
        folded = key.casefold()
        return next((v for k, v in self.data.items() if isinstance(k, str) and k.casefold() == folded), None)

    def str(self, key: str) -> str:
        value = self.raw(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self._wrong(key, value, "string")
        return value

    def bool(self, key: str) -> bool:
        value = self.raw(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self._wrong(key, value, "bool")
        return value

    def int(self, key: str, go_type: str = "int") -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise self._wrong(key, value, go_type)
        return int(value)

    def str_list(self, key: str) -> list[str] | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._wrong(key, value, "[]string")
        for item in value:
            if not isinstance(item, str):
                raise self._wrong(key, item, "string")
        return list(value)

    def str_slice(self, key: str) -> list[str] | None:
        """Docker's StrSlice (Cmd, Entrypoint, CapAdd, ...): one string or a list of them."""
        value = self.raw(key)
        if isinstance(value, str):
            return [value]
        return self.str_list(key)

    def str_map(self, key: str) -> dict[str, str]:
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._wrong(key, value, "map[string]string")
        for v in value.values():
            if not isinstance(v, str):
                raise self._wrong(key, v, "string")
        return dict(value)

    def obj(self, key: str, struct: str) -> Fields:
        value = self.raw(key)
        if value is not None and not isinstance(value, dict):
            raise self._wrong(key, value, struct)
        return Fields(value, struct)

    def obj_map(self, key: str, struct: str) -> dict[str, Fields]:
        """A map of objects, e.g. EndpointsConfig: name -> EndpointSettings (null entries allowed)."""
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._wrong(key, value, f"map[string]*{struct}")
        return {str(k): Fields(v, struct) for k, v in value.items()}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return JSON_TYPES.get(type(value), type(value).__name__)


# -- values --------------------------------------------------------------------------------------
def name(value: str) -> str:
    """A container's name, one leading "/" allowed."""
    if not CONTAINER_NAME.fullmatch(value.removeprefix("/")):
        raise bad(f"Invalid container name ({value}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return value.removeprefix("/")


def signal(value: str) -> int:
    """A signal by number or name, with or without SIG (Docker's signal.ParseSignal)."""
    if value.isdigit():
        number = int(value)
        if not 0 < number <= MAX_SIGNAL:
            raise bad(f"Invalid signal: {value}")
        return number
    upper = value.upper()
    found = getattr(signals, upper if upper.startswith("SIG") else "SIG" + upper, None)
    if not isinstance(found, signals.Signals) or upper.startswith("SIG_"):
        raise bad(f"Invalid signal: {value}")
    return int(found)


def mac(value: str) -> str:
    if not MAC_RE.fullmatch(value):
        raise bad(f"{value} is not a valid mac address")
    return value.lower()


def ipv4(value: str) -> IPv4Address:
    try:
        return IPv4Address(value)
    except ValueError:
        raise bad(f"invalid IPv4 address: {value}") from None


def ip(value: str) -> str:
    try:
        return str(ip_address(value))
    except ValueError:
        raise bad(f"IP address is not correctly formatted: {value}") from None


def env_entry(value: str) -> str:
    if value.startswith("=") or not value or "\x00" in value:
        raise bad(f"invalid environment variable: {value}")
    return value


def extra_host(value: str) -> str:
    host, sep, addr = value.partition(":")
    if not sep or not host or not addr:
        raise bad(f'bad format for add-host: "{value}"')
    if addr != "host-gateway":
        try:
            ip_address(addr.strip("[]"))
        except ValueError:
            raise bad(f'invalid IP address in add-host: "{addr}"') from None
    return value


def dns_search(value: str) -> str:
    if not DOMAIN_RE.fullmatch(value) or len(value) > 255:
        raise bad(f"{value} is not a valid domain")
    return value


def console_size(value: Any, struct: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**16 for v in value)):
        raise bad(f"json: cannot unmarshal {_json_type(value)} into Go struct field {struct}.ConsoleSize of type [2]uint")
    return (value[0], value[1]) if value[0] and value[1] else None


def port_key(key: str) -> str:
    try:
        port, proto = parse_port_key(key)
    except InvalidArgument as exc:
        raise bad(exc.message) from None
    return f"{port}/{proto}"


def port_bindings(host: Fields) -> list[PortBinding]:
    value = host.raw("PortBindings")
    if value is None:
        return []
    if not isinstance(value, dict):
        raise host._wrong("PortBindings", value, "nat.PortMap")
    out: list[PortBinding] = []
    for key, entries in value.items():
        try:
            cport, proto = parse_port_key(str(key))
        except InvalidArgument as exc:
            raise bad(exc.message) from None
        if entries is None:
            entries = [{}]
        if not isinstance(entries, list):
            raise host._wrong("PortBindings", entries, "[]nat.PortBinding")
        for entry in entries or [{}]:
            fields = Fields(entry, "nat.PortBinding")
            host_ip = fields.str("HostIp")
            if host_ip:
                try:
                    version = ip_address(host_ip).version
                except ValueError:
                    raise bad(f"invalid host IP: {host_ip}") from None
                if version == 6:
                    continue  # an IPv6-only binding has no effect on an IPv4-only engine
            text = fields.str("HostPort").strip()
            if "-" in text:
                raise bad(f"host port ranges are not supported yet: {text}")
            if text and (not text.isdigit() or int(text) > 65535):
                raise bad(f'invalid port specification: "{text}"')
            out.append(PortBinding(cport, proto, host_ip, int(text or 0)))
    return out


def link(value: str) -> LinkRef:
    try:
        return parse_link(value)
    except InvalidArgument as exc:
        raise bad(exc.message) from None


def link_local_ip(value: str) -> IPv4Address:
    """dockerd accepts any string at create and refuses a start with this message; refused here at once."""
    try:
        address = ip_address(value)
    except ValueError:
        address = None
    if address is None or not address.is_link_local:
        raise bad(f"invalid link local IP address: {value}")
    if not isinstance(address, IPv4Address):
        raise bad(f"IPv6 link-local addresses are not supported by muslind: {value}")
    return address


def endpoint(fields: Fields) -> EndpointRequest:
    """EndpointSettings: the IPv4 address asked for, the MAC, aliases, links, link-local addresses and
    the driver's options."""
    ipam = fields.obj("IPAMConfig", "network.EndpointIPAMConfig")
    address = ipam.str("IPv4Address")
    ipam.str("IPv6Address")
    links = fields.str_list("Links") or []
    for value in links:
        link(value)
    return EndpointRequest(ipv4_address=ipv4(address) if address else None,
                           mac_address=mac(fields.str("MacAddress")) if fields.str("MacAddress") else "",
                           aliases=tuple(fields.str_list("Aliases") or ()), links=tuple(links),
                           link_local_ips=tuple(link_local_ip(a) for a in ipam.str_list("LinkLocalIPs") or []),
                           driver_opts=fields.str_map("DriverOpts"), gw_priority=fields.int("GwPriority") or 0)


def go_field_names(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Keys renamed to the Go struct's field names: Go's JSON decoder matches them case-insensitively
    (docker-py sends "CPURealtimeRuntime"), and dockerd shows them back by their own names."""
    by_lower = {n.lower(): n for n in names}
    return {by_lower.get(k.lower(), k) if isinstance(k, str) else k: v for k, v in data.items()}


def restart_policy(fields: Fields) -> restarts.RestartPolicy | None:
    """HostConfig.RestartPolicy, checked as dockerd does; None when absent."""
    if fields.raw("RestartPolicy") is None:
        return None
    raw = fields.obj("RestartPolicy", "container.RestartPolicy")
    try:
        policy = restarts.validate(raw.str("Name"), raw.int("MaximumRetryCount") or 0)
    except ValueError as exc:
        raise bad(str(exc)) from None
    return policy


def resource_fields(fields: Fields) -> dict[str, Any]:
    """The cgroup limits of a HostConfig or an update, checked by type (their values are the engine's)."""
    out: dict[str, Any] = {}
    for key in INT_FIELDS:
        value = fields.int(key, "int64")
        if value is not None:
            out[key] = value
    for key in STR_FIELDS:
        if fields.raw(key) is not None:
            out[key] = fields.str(key)
    return out


HOST_CONFIG_FIELDS = (*INT_FIELDS, *STR_FIELDS, "RestartPolicy")


def healthcheck(body: Fields) -> None:
    """Config.Healthcheck, checked by type and as dockerd checks its values."""
    if body.raw("Healthcheck") is None:
        return
    hc = body.obj("Healthcheck", "container.HealthConfig")
    hc.str_list("Test")
    for key in ("Interval", "Timeout", "StartPeriod"):
        hc.int(key, "time.Duration")
    hc.int("Retries")
    try:
        health.check(hc.data)
    except ValueError as exc:
        raise bad(str(exc)) from None


# -- requests ------------------------------------------------------------------------------------
def container_create(req: Request) -> ContainerCreate:
    body = Fields(req.json(), "ContainerConfigWrapper")
    host = body.obj("HostConfig", "container.HostConfig")
    host.data = go_field_names(host.data, HOST_CONFIG_FIELDS)
    resources = resource_fields(host)
    policy = restart_policy(host)
    networking = body.obj("NetworkingConfig", "network.NetworkingConfig")
    image = body.str("Image")
    if not image:
        raise bad("No image specified")
    requested = req.arg("name")
    exposed = body.raw("ExposedPorts")
    if exposed is not None and not isinstance(exposed, dict):
        raise body._wrong("ExposedPorts", exposed, "nat.PortSet")
    exposed_keys = [port_key(str(k)) for k in (exposed or {})]
    env = [env_entry(e) for e in body.str_list("Env") or []]
    healthcheck(body)
    entrypoint, cmd = body.str_slice("Entrypoint"), body.str_slice("Cmd")
    working_dir = body.str("WorkingDir")
    stop_signal = body.str("StopSignal")
    stop_timeout = body.int("StopTimeout")
    mac_address = body.str("MacAddress")
    body.str_map("Labels")
    network_mode = host.str("NetworkMode")
    if network_mode.startswith("container:") and not network_mode.split(":", 1)[1]:
        raise bad("container: network mode needs a container name or id")
    endpoints = {key: endpoint(fields) for key, fields in networking.obj_map("EndpointsConfig", "network.EndpointSettings").items()}
    dns = [ip(s) for s in host.str_list("Dns") or []]
    searches = [dns_search(s) for s in host.str_list("DnsSearch") or []]
    dns_options = host.str_list("DnsOptions") or []
    extra_hosts = [extra_host(h) for h in host.str_list("ExtraHosts") or []]
    links = [link(value) for value in host.str_list("Links") or []]
    cap_add, cap_drop = host.str_slice("CapAdd") or [], host.str_slice("CapDrop") or []
    sysctls = host.str_map("Sysctls")
    for key in ("AutoRemove", "Privileged", "PublishAllPorts"):
        host.bool(key)
    for key in ("Tty", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr", "NetworkDisabled"):
        body.bool(key)
    mounts = mount_requests.container_mounts(host, Fields)
    volumes = mount_requests.volume_targets(body.raw("Volumes"), body)
    group_add = host.str_list("GroupAdd") or []
    volumes_from = [mount_requests.volumes_from(spec) for spec in host.str_list("VolumesFrom") or []]
    storage_opt(host)
    runtime = host.str("Runtime") or RUNTIMES[0]
    if runtime not in RUNTIMES:
        raise bad(f"Unknown runtime specified {runtime}")
    config = {k: v for k, v in body.data.items() if k not in ("HostConfig", "NetworkingConfig")}
    if exposed is not None:
        config["ExposedPorts"] = {key: {} for key in exposed_keys}  # normalised as dockerd stores them
    host_config = {**host.data, **resources, "Runtime": runtime,
                   "LogConfig": log_config(host.obj("LogConfig", "container.LogConfig"))}
    if policy is not None:
        host_config["RestartPolicy"] = policy.to_json()
    return ContainerCreate(
        image=image, name=name(requested) if requested else "",
        entrypoint=tuple(entrypoint) if entrypoint is not None else None,
        cmd=tuple(cmd) if cmd is not None else None, env=tuple(env),
        working_dir=working_dir, user=body.str("User"), hostname=body.str("Hostname"),
        domainname=body.str("Domainname"), tty=body.bool("Tty"), open_stdin=body.bool("OpenStdin"),
        mac_address=mac(mac_address) if mac_address else "", exposed_ports=tuple(exposed_keys),
        network_mode=network_mode or "default", endpoints=endpoints,
        port_bindings=tuple(port_bindings(host)), publish_all_ports=host.bool("PublishAllPorts"),
        dns=tuple(dns), dns_search=tuple(searches), dns_options=tuple(dns_options), extra_hosts=tuple(extra_hosts),
        links=tuple(links),
        cap_add=tuple(cap_add), cap_drop=tuple(cap_drop), privileged=host.bool("Privileged"),
        sysctls=sysctls, console_size=console_size(host.raw("ConsoleSize"), "container.HostConfig"),
        stop_signal=signal(stop_signal) if stop_signal else None, stop_timeout=stop_timeout,
        mounts=tuple(mounts), volumes=tuple(volumes), group_add=tuple(group_add),
        volumes_from=tuple(volumes_from),
        config=config, host_config=host_config)


def storage_opt(host: Fields) -> None:
    """HostConfig.StorageOpt refused as dockerd's overlay2 refuses it without xfs project quotas (its
    only option is ``size``): muslind's overlay has no quota, and a size limit silently ignored would lie."""
    keys = [key.lower() for key in host.str_map("StorageOpt")]
    if "size" in keys:
        raise bad("--storage-opt is supported only for overlay over xfs with 'pquota' mount option")
    if keys:
        raise bad(f"Unknown option {keys[0]}")


def log_config(fields: Fields) -> dict[str, Any]:
    """HostConfig.LogConfig as dockerd stores it: the default driver named, options checked."""
    driver = fields.str("Type") or "json-file"
    options = fields.str_map("Config")
    if driver not in LOG_DRIVERS:
        raise bad(f'error looking up logging plugin {driver}: plugin "{driver}" not found')
    allowed = LOG_DRIVERS[driver]
    for key in options:
        if allowed is not None and key not in allowed:
            raise bad(f"unknown log opt '{key}' for {driver} log driver")
        if allowed is not None and key in UNAPPLIED_LOG_OPTS:
            raise bad(f"log opt '{key}' is not supported by muslind's {driver} log driver: logs are kept whole, "
                      "never rotated")
    return {"Type": driver, "Config": options}


def volume_create(req: Request) -> VolumeCreate:
    body = Fields(req.json(), "volume.CreateOptions")
    volume_name = body.str("Name")
    if volume_name:
        mount_requests.volume_name(volume_name)
    return VolumeCreate(name=volume_name, driver=body.str("Driver") or "local", labels=body.str_map("Labels"),
                        options=body.str_map("DriverOpts"))


def network_create(req: Request) -> NetworkCreate:
    body = Fields(req.json(), "types.NetworkCreateRequest")
    net_name = body.str("Name")
    if not net_name:
        raise bad("invalid name: ")
    ipam = body.obj("IPAM", "network.IPAM")
    pools_raw = ipam.raw("Config")
    if pools_raw is not None and not isinstance(pools_raw, list):
        raise ipam._wrong("Config", pools_raw, "[]network.IPAMConfig")
    pools = []
    for entry in pools_raw or []:
        pool = Fields(entry, "network.IPAMConfig")
        pools.append(IPAMPoolRequest(subnet=pool.str("Subnet"), gateway=pool.str("Gateway"),
                                     ip_range=pool.str("IPRange"), aux_addresses=pool.str_map("AuxiliaryAddresses")))
    return NetworkCreate(name=net_name, driver=body.str("Driver") or "bridge", ipam_driver=ipam.str("Driver") or "default",
                         ipam_pools=tuple(pools), ipam_options=ipam.str_map("Options"), internal=body.bool("Internal"),
                         attachable=body.bool("Attachable"), ingress=body.bool("Ingress"),
                         enable_ipv6=body.bool("EnableIPv6"), options=body.str_map("Options"),
                         labels=body.str_map("Labels"), scope=body.str("Scope"))


def network_connect(req: Request) -> tuple[str, EndpointRequest]:
    body = Fields(req.json(), "types.NetworkConnect")
    return container_ref(body.str("Container")), endpoint(body.obj("EndpointConfig", "network.EndpointSettings"))


def network_disconnect(req: Request) -> tuple[str, bool]:
    body = Fields(req.json(), "types.NetworkDisconnect")
    return container_ref(body.str("Container")), body.bool("Force")


def container_update(req: Request) -> ContainerUpdate:
    body = Fields(req.json(), "container.UpdateConfig")
    body.data = go_field_names(body.data, HOST_CONFIG_FIELDS)
    return ContainerUpdate(resources=resource_fields(body), restart_policy=restart_policy(body))


def container_ref(value: str) -> str:
    if not value:
        raise bad("no container specified")
    return value


def exec_create(req: Request) -> ExecCreate:
    body = Fields(req.json(), "types.ExecConfig")
    cmd = body.str_list("Cmd") or []
    if not cmd:
        raise bad("No exec command specified")
    working_dir = body.str("WorkingDir")
    if working_dir and not working_dir.startswith("/"):
        raise bad(f"the working directory '{working_dir}' is invalid, it needs to be an absolute path")
    for key in ("AttachStdout", "AttachStderr", "Detach"):
        body.bool(key)
    keys = body.str("DetachKeys")
    detachkeys.for_exec(keys)  # refused now rather than at start, as dockerd does
    return ExecCreate(cmd=tuple(cmd), env=tuple(env_entry(e) for e in body.str_list("Env") or []),
                      working_dir=working_dir, user=body.str("User"), tty=body.bool("Tty"),
                      attach_stdin=body.bool("AttachStdin"),
                      console_size=console_size(body.raw("ConsoleSize"), "types.ExecConfig"),
                      privileged=body.bool("Privileged"), detach_keys=keys)


class ExecStart(NamedTuple):
    detach: bool
    tty: bool  # frames the output: raw with a TTY, multiplexed without (whatever the exec was created with)


def exec_start(req: Request) -> ExecStart:
    body = Fields(req.json(), "types.ExecStartCheck")
    console_size(body.raw("ConsoleSize"), "types.ExecStartCheck")
    return ExecStart(detach=body.bool("Detach"), tty=body.bool("Tty"))


# -- query parameters ----------------------------------------------------------------------------
def query_int(req: Request, key: str, default: int | None = None) -> int | None:
    text = req.arg(key)
    if text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise bad(f'strconv.Atoi: parsing "{text}": invalid syntax') from None


def query_seconds(req: Request, key: str) -> float | None:
    """A time as Unix seconds with an optional fraction (logs since/until); None when absent or 0."""
    text = req.arg(key)
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise bad(f'strconv.ParseInt: parsing "{text}": invalid syntax') from None
    if value != value or value in (float("inf"), float("-inf")):
        raise bad(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    return value or None


def query_signal(req: Request, key: str = "signal") -> int | None:
    text = req.arg(key)
    return signal(text) if text else None


def filters(req: Request, allowed: set[str]) -> dict[str, list[str]]:
    """Docker's ``filters`` argument: {"key": ["v", ...]} or the older {"key": {"v": true}}."""
    raw = req.arg("filters")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise bad(f"invalid filter: {exc}") from None
    if not isinstance(data, dict):
        raise bad(f"invalid filter: {raw}")
    out: dict[str, list[str]] = {}
    for key, values in data.items():
        if key not in allowed:
            raise bad(f"invalid filter '{key}'")
        if isinstance(values, dict) and all(isinstance(v, bool) for v in values.values()):
            out[key] = [str(v) for v, on in values.items() if on]
        elif isinstance(values, list) and all(isinstance(v, str) for v in values):
            out[key] = list(values)
        else:
            raise bad(f"invalid filter: the value of '{key}' must be a list of strings")
    return out
