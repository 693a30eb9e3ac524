"""Docker's JSON for containers: inspect, the list's summaries, and the STATUS text `docker ps` prints."""

from __future__ import annotations

import time
from typing import Any

from muslin.engine.containers import Container, NetworkAttachment
from muslin.engine.engine import Engine
from muslin.engine.model import Endpoint, Network
from muslin.engine.health import STARTING, Health
from muslin.engine.mounts import MountPoint
from muslin.engine.ports import valid_port_keys
from muslin.engine.resources import INT_FIELDS, STR_FIELDS
from muslin.errors import NotFound
from muslin.runtime import State

NEVER = "0001-01-01T00:00:00Z"


def rfc3339_ns(ns: int) -> str:
    if not ns:
        return NEVER
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


def human_duration(seconds: float) -> str:
    """Docker's go-units HumanDuration, which `docker ps` prints in STATUS."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    return f"{hours // 24 // 7} weeks"


def status_text(st: State, restarting: bool = False, health: Health | None = None) -> str:
    """Docker's State.String(): what `docker ps` prints under STATUS."""
    now = time.time()
    if restarting:
        return f"Restarting ({st.exit_code}) {human_duration(now - st.finished_at / 1e9)} ago"
    if st.paused:
        return f"Up {human_duration(now - st.started_at / 1e9)} (Paused)"
    if st.running and health is not None:
        shown = "health: starting" if health.status == STARTING else health.status
        return f"Up {human_duration(now - st.started_at / 1e9)} ({shown})"
    if st.running:
        return f"Up {human_duration(now - st.started_at / 1e9)}"
    if st.status == "exited" and st.finished_at:
        return f"Exited ({st.exit_code}) {human_duration(now - st.finished_at / 1e9)} ago"
    return "Created"


def _ipam_config(att: NetworkAttachment | None) -> dict[str, Any] | None:
    """EndpointSettings.IPAMConfig as the client gave it (dockerd leaves out the empty fields)."""
    if att is None:
        return None
    doc: dict[str, Any] = {}
    if att.ip:
        doc["IPv4Address"] = att.ip
    if att.link_local_ips:
        doc["LinkLocalIPs"] = list(att.link_local_ips)
    return doc or None


def _endpoint_settings(ep: Endpoint | None, network_id: str, att: NetworkAttachment | None) -> dict[str, Any]:
    return {
        "IPAMConfig": _ipam_config(att),
        "Links": (att.links or None) if att else None,
        "Aliases": (att.aliases or None) if att else None,
        "MacAddress": ep.mac if ep else (att.mac if att else ""),  # before start: the one asked for
        "DriverOpts": (att.driver_opts or None) if att else None,
        "GwPriority": att.gw_priority if att else 0,
        "NetworkID": network_id,
        "EndpointID": ep.id if ep else "",
        "Gateway": str(ep.gateway) if ep and ep.gateway else "",
        "IPAddress": str(ep.address.ip) if ep and ep.address else "",
        "IPPrefixLen": ep.address.network.prefixlen if ep and ep.address else 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": None,
    }


def mounts_json(mounts: list[MountPoint]) -> list[dict[str, Any]]:
    """inspect's (and the list's) Mounts: a volume has a Name and a Driver, the others have none."""
    out = []
    for m in (m for m in mounts if m.listed):
        doc: dict[str, Any] = {"Type": m.type}
        if m.type == "volume":
            doc["Name"] = m.name
        doc.update({"Source": m.source, "Destination": m.destination})
        if m.type == "volume":
            doc["Driver"] = m.driver
        doc.update({"Mode": m.mode, "RW": m.rw, "Propagation": m.propagation})
        out.append(doc)
    return out


class ContainerViews:
    """Renders the engine's containers as Docker's JSON. One views object renders one answer: it reads
    each image's config once (a list of thirty busybox containers read it thirty times)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._image_configs: dict[str, dict[str, Any]] = {}
        # For a list (``for_list``): every endpoint and network, each read once for all the containers.
        self._endpoints: dict[str, list[Endpoint]] | None = None
        self._networks: dict[str, Network] = {}

    @classmethod
    def for_list(cls, engine: Engine) -> ContainerViews:
        """Views for a list: two store reads in all rather than a few per container (on the event loop,
        under load, each read can wait for the interpreter lock). A network made after these reads is
        looked up by itself; an endpoint made after them shows in the next list."""
        views = cls(engine)
        views._endpoints = {}
        for ep in engine.store.endpoints():
            views._endpoints.setdefault(ep.container_id, []).append(ep)
        views._networks = {net.id: net for net in engine.networks.list()}
        return views

    def _network(self, ref: str) -> Network:
        known = self._networks.get(ref)
        return known if known is not None else self.engine.networks.get(ref)

    def _endpoints_of(self, c: Container) -> list[Endpoint]:
        if self._endpoints is not None:
            return self._endpoints.get(c.id, [])
        return self.engine.store.endpoints(container_id=c.id)

    def networks_of(self, c: Container) -> dict[str, dict[str, Any]]:
        eps = {ep.network_id: ep for ep in self._endpoints_of(c)}
        if c.network_mode in ("host", "none"):
            net = self.engine.networks.get(c.network_mode)  # by name: the list's networks are by id
            return {net.name: _endpoint_settings(None, net.id, None)}
        if c.joined_container:
            return {}
        out = {}
        for att in c.attachments:
            try:
                net = self._network(att.network_id)
            except NotFound:
                continue
            out[net.name] = _endpoint_settings(eps.get(net.id), net.id, att)
        return out

    def ports_of(self, c: Container, running: bool) -> dict[str, Any]:
        """NetworkSettings.Ports: empty unless the container runs (dockerd clears them with its networking:
        docker-compose ps shows a stopped service without ports)."""
        ports: dict[str, Any] = {}
        if not running:
            return ports
        for key in self._exposed(c):
            ports[key] = None
        for b in c.bindings:
            ports.setdefault(f"{b.container_port}/{b.proto}", None)
        for b in c.published:
            key = f"{b.container_port}/{b.proto}"
            ports[key] = (ports.get(key) or []) + [{"HostIp": b.host_ip or "0.0.0.0", "HostPort": str(b.host_port)}]
        return ports

    def _image_config(self, c: Container) -> dict[str, Any]:
        config = self._image_configs.get(c.image_id)
        if config is None:
            try:
                config = self.engine.images.get(c.image_id).config
            except NotFound:  # removed with --force while the container lives on
                config = {}
            self._image_configs[c.image_id] = config
        return config

    def _exposed(self, c: Container) -> list[str]:
        """The exposed "port/proto" keys of the image and the container. Only well-formed ones: a record
        stored by an older muslind (or an image imported with anything in EXPOSE) must not break a list."""
        image_ports = self._image_config(c).get("ExposedPorts") or {}
        own_ports = c.config.get("ExposedPorts") or {}
        keys = valid_port_keys(image_ports if isinstance(image_ports, dict) else {})
        keys += valid_port_keys(own_ports if isinstance(own_ports, dict) else {})
        return list(dict.fromkeys(keys))

    def _health_json(self, c: Container) -> dict[str, Any]:
        health = self.engine.containers.health.health(c.id)
        if health is None:
            return {}
        return {"Health": {"Status": health.status, "FailingStreak": health.failing_streak, "Log": [
            {"Start": rfc3339_ns(r.start), "End": rfc3339_ns(r.end), "ExitCode": r.exit_code, "Output": r.output}
            for r in health.log]}}

    def health_status(self, c: Container) -> str:
        """What the `health` filter matches: starting, healthy, unhealthy, or none."""
        health = self.engine.containers.health.health(c.id)
        return health.status if health is not None else "none"

    def status(self, c: Container, st: State) -> str:
        """State.Status: the runtime's, or "restarting" while a restart policy's back-off runs."""
        return "restarting" if self.engine.containers.restarting(c) else st.status

    def inspect(self, c: Container) -> dict[str, Any]:
        st = self.engine.containers.state(c)
        restarting = self.engine.containers.restarting(c)
        files = self.engine.containers.files(c)
        networks = self.networks_of(c)
        primary = networks.get("bridge") if c.network_mode == "bridge" else None
        sandbox_id = c.id if c.sandbox else ""
        args = st.process.args
        config = dict(c.config)
        config.update({"Env": st.process.env, "Cmd": c.config.get("Cmd") or self._image_config(c).get("Cmd"),
                       "Image": c.image, "WorkingDir": st.process.cwd, "User": st.process.user})
        host_config = dict(c.host_config)
        host_config.setdefault("NetworkMode", "default")
        host_config.setdefault("RestartPolicy", {"Name": "", "MaximumRetryCount": 0})
        for key in INT_FIELDS:
            host_config.setdefault(key, None if key == "PidsLimit" else 0)  # a pointer in Go: null
        for key in STR_FIELDS:
            host_config.setdefault(key, "")
        host_config["Links"] = self.engine.containers.linking.inspect_links(c)
        host_config.setdefault("LogConfig", {"Type": "json-file", "Config": {}})  # a record from before it was kept
        host_config.setdefault("Runtime", "runc")
        return {
            "Id": c.id,
            "Created": c.created,
            "Path": args[0] if args else "",
            "Args": args[1:],
            "State": {
                "Status": self.status(c, st), "Running": st.running or restarting, "Paused": st.paused,
                "Restarting": restarting,
                "OOMKilled": st.oom_killed, "Dead": False, "Pid": st.pid if st.running else 0, "ExitCode": st.exit_code,
                "Error": st.error, "StartedAt": rfc3339_ns(st.started_at), "FinishedAt": rfc3339_ns(st.finished_at),
                **self._health_json(c),
            },
            "Image": c.image_id,
            "ResolvConfPath": files.resolv_conf,
            "HostnamePath": files.hostname,
            "HostsPath": files.hosts,
            "LogPath": files.log,
            "Name": "/" + c.name,
            "RestartCount": c.restart_count,
            "Driver": "overlay",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": None,
            "HostConfig": host_config,
            "GraphDriver": {"Data": {}, "Name": "overlay"},
            "Mounts": mounts_json(c.mounts),
            "Config": config,
            "NetworkSettings": {
                "Bridge": "",
                "SandboxID": sandbox_id,
                "SandboxKey": c.sandbox or "",
                "Ports": self.ports_of(c, st.running),
                "HairpinMode": False,
                "LinkLocalIPv6Address": "",
                "LinkLocalIPv6PrefixLen": 0,
                "SecondaryIPAddresses": None,
                "SecondaryIPv6Addresses": None,
                "EndpointID": primary["EndpointID"] if primary else "",
                "Gateway": primary["Gateway"] if primary else "",
                "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
                "IPAddress": primary["IPAddress"] if primary else "",
                "IPPrefixLen": primary["IPPrefixLen"] if primary else 0,
                "IPv6Gateway": "",
                "MacAddress": primary["MacAddress"] if primary else "",
                "Networks": networks,
            },
        }

    def summary(self, c: Container, st: State, link_names: list[str] | None = None) -> dict[str, Any]:
        """``link_names``: the ``/parent/alias`` names parents give it, listed after its own."""
        ports = []
        for b in (c.published if st.running else []):
            ports.append({"IP": b.host_ip or "0.0.0.0", "PrivatePort": b.container_port,
                          "PublicPort": b.host_port, "Type": b.proto})
        for key in (self._exposed(c) if st.running else []):  # none while stopped, as ports_of
            port, _, proto = key.partition("/")
            if not any(p["PrivatePort"] == int(port) for p in ports):
                ports.append({"PrivatePort": int(port), "Type": proto})
        mode = c.host_config.get("NetworkMode") or "default"
        return {
            "Id": c.id,
            "Names": ["/" + c.name, *(link_names or [])],
            "Image": c.image,
            "ImageID": c.image_id,
            "Command": " ".join(st.process.args),
            "Created": int(st.created_at / 1e9) if st.created_at else int(time.time()),
            "Ports": ports,
            "Labels": c.config.get("Labels") or {},
            "State": self.status(c, st),
            "Status": status_text(st, self.engine.containers.restarting(c), self.engine.containers.health.health(c.id)),
            "HostConfig": {"NetworkMode": mode},
            "NetworkSettings": {"Networks": self.networks_of(c)},
            "Mounts": mounts_json(c.mounts),
        }
