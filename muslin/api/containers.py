"""/containers and /exec: Docker's JSON shapes, waits, logs and the hijacked attach/exec streams."""

from __future__ import annotations

import asyncio
import contextlib
import signal as signals
import struct
import time
from typing import Any

from muslin.engine.containers import Container, console_size_of
from muslin.engine.engine import Engine
from muslin.errors import EngineError, InvalidArgument, NotModified
from muslin.engine.model import Endpoint
from muslin.runtime import LogFilter, State, Stream

from .http import Hijack, HTTPError, Request, Response, Router, StreamResponse, json_response, labels_match

MUX_HEADER = struct.Struct(">BxxxI")
STREAM_IDS = {"stdin": 0, "stdout": 1, "stderr": 2}
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


def status_text(st: State) -> str:
    now = time.time()
    if st.running:
        return f"Up {human_duration(now - st.started_at / 1e9)}"
    if st.status == "exited" and st.finished_at:
        return f"Exited ({st.exit_code}) {human_duration(now - st.finished_at / 1e9)} ago"
    return "Created"


def mux(stream: str, data: bytes) -> bytes:
    return MUX_HEADER.pack(STREAM_IDS[stream], len(data)) + data


def _endpoint_settings(ep: Endpoint | None, network_id: str, aliases: list[str] | None,
                       ipam_ip: str = "") -> dict[str, Any]:
    return {
        "IPAMConfig": {"IPv4Address": ipam_ip} if ipam_ip else None,
        "Links": None,
        "Aliases": aliases or None,
        "MacAddress": ep.mac if ep else "",
        "DriverOpts": None,
        "GwPriority": 0,
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


class ContainerViews:
    """Renders the engine's containers as Docker's JSON."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def networks_of(self, c: Container) -> dict[str, dict[str, Any]]:
        nets = self.engine.networks
        eps = {ep.network_id: ep for ep in self.engine.store.endpoints(container_id=c.id)}
        if c.network_mode in ("host", "none"):
            net = nets.get(c.network_mode)
            return {net.name: _endpoint_settings(None, net.id, None)}
        if c.joined_container:
            return {}
        out = {}
        for att in c.attachments:
            try:
                net = nets.get(att.network_id)
            except Exception:
                continue
            out[net.name] = _endpoint_settings(eps.get(net.id), net.id, att.aliases, att.ip)
        return out

    def ports_of(self, c: Container, running: bool) -> dict[str, Any]:
        ports: dict[str, Any] = {}
        image = self._image_config(c)
        for key in {**image.get("ExposedPorts", {}), **(c.config.get("ExposedPorts") or {})}:
            ports[key if "/" in key else f"{key}/tcp"] = None
        for b in c.bindings:
            ports.setdefault(f"{b.container_port}/{b.proto}", None)
        if running:
            for b in c.published:
                key = f"{b.container_port}/{b.proto}"
                ports[key] = (ports.get(key) or []) + [{"HostIp": b.host_ip or "0.0.0.0", "HostPort": str(b.host_port)}]
        return ports

    def _image_config(self, c: Container) -> dict[str, Any]:
        try:
            return self.engine.images.get(c.image_id).config
        except Exception:
            return {}

    def inspect(self, c: Container) -> dict[str, Any]:
        rt = self.engine.runtime
        st = rt.state(c.id)
        networks = self.networks_of(c)
        primary = networks.get("bridge") if c.network_mode == "bridge" else None
        sandbox_id = c.id if c.sandbox else ""
        args = st.process.args
        config = dict(c.config)
        config.update({"Env": st.process.env, "Cmd": c.config.get("Cmd") or self._image_config(c).get("Cmd"),
                       "Image": c.image, "WorkingDir": st.process.cwd, "User": st.process.user})
        host_config = dict(c.host_config)
        host_config.setdefault("NetworkMode", "default")
        host_config["LogConfig"] = {"Type": "json-file", "Config": {}}
        return {
            "Id": c.id,
            "Created": c.created,
            "Path": args[0] if args else "",
            "Args": args[1:],
            "State": {
                "Status": st.status, "Running": st.running, "Paused": False, "Restarting": False,
                "OOMKilled": False, "Dead": False, "Pid": st.pid if st.running else 0, "ExitCode": st.exit_code,
                "Error": st.error, "StartedAt": rfc3339_ns(st.started_at), "FinishedAt": rfc3339_ns(st.finished_at),
            },
            "Image": c.image_id,
            "ResolvConfPath": str(rt.etc_path(c.id, "resolv.conf")),
            "HostnamePath": str(rt.etc_path(c.id, "hostname")),
            "HostsPath": str(rt.etc_path(c.id, "hosts")),
            "LogPath": rt.log_path(c.id),
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
            "Mounts": [],
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

    def summary(self, c: Container, st: State) -> dict[str, Any]:
        ports = []
        for b in (c.published if st.running else []):
            ports.append({"IP": b.host_ip or "0.0.0.0", "PrivatePort": b.container_port,
                          "PublicPort": b.host_port, "Type": b.proto})
        image_cfg = self._image_config(c)
        for key in {**image_cfg.get("ExposedPorts", {}), **(c.config.get("ExposedPorts") or {})}:
            port, _, proto = key.partition("/")
            if not any(p["PrivatePort"] == int(port) for p in ports):
                ports.append({"PrivatePort": int(port), "Type": proto or "tcp"})
        mode = c.host_config.get("NetworkMode") or "default"
        return {
            "Id": c.id,
            "Names": ["/" + c.name],
            "Image": c.image,
            "ImageID": c.image_id,
            "Command": " ".join(st.process.args),
            "Created": int(st.created_at / 1e9) if st.created_at else int(time.time()),
            "Ports": ports,
            "Labels": c.config.get("Labels") or {},
            "State": st.status,
            "Status": status_text(st),
            "HostConfig": {"NetworkMode": mode},
            "NetworkSettings": {"Networks": self.networks_of(c)},
            "Mounts": [],
        }


def _matches(c: Container, st: State, views: ContainerViews, filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key == "name" and not any(v.lstrip("/") in c.name for v in values):
            return False
        if key == "id" and not any(c.id.startswith(v) for v in values):
            return False
        if key == "status" and st.status not in values:
            return False
        if key == "exited" and (st.status != "exited" or str(st.exit_code) not in values):
            return False
        if key == "network":
            joined = views.networks_of(c)
            ids = [net["NetworkID"] for net in joined.values()]
            if not any(n in joined or any(i.startswith(n) for i in ids) for n in values):
                return False
        if key == "label" and not labels_match(c.config.get("Labels") or {}, values):
            return False
        if key == "ancestor" and c.image not in values and c.image_id not in values:
            return False
    return True


def _signal(value: str) -> int:
    if not value:
        return signals.SIGKILL
    if value.isdigit():
        return int(value)
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(getattr(signals, name))
    except AttributeError:
        raise InvalidArgument(f"invalid signal: {value}") from None


async def pump_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: Stream,
                       tty: bool, stdin: bool) -> None:
    """Copy the client's bytes to the process's stdin and the process's output back, until it ends."""

    async def upstream() -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                stream.write(data)
                await stream.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                stream.close_stdin()

    feeder = asyncio.ensure_future(upstream()) if stdin else None
    try:
        while True:
            item = await stream.read()
            if item is None:
                break
            kind, data = item
            writer.write(data if tty else mux(kind, data))
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if feeder:
            feeder.cancel()
        stream.close()
        with contextlib.suppress(Exception):
            writer.write_eof()
            await writer.drain()


def routes(router: Router, engine: Engine) -> None:
    svc = engine.containers
    rt = engine.runtime
    views = ContainerViews(engine)

    async def create(req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise HTTPError(400, "invalid container create request")
        c = await engine.call(svc.create, req.arg("name"), body)
        return json_response({"Id": c.id, "Warnings": []}, 201)

    async def list_containers(req: Request) -> Response:
        show_all = req.flag("all")
        filters = req.filters()
        out = []
        for c in svc.all():
            st = rt.state(c.id)
            if not show_all and not st.running and "status" not in filters:
                continue
            if _matches(c, st, views, filters):
                out.append((st.created_at, views.summary(c, st)))
        out.sort(key=lambda item: item[0], reverse=True)
        limit = int(req.arg("limit", "0") or 0)
        items = [doc for _, doc in out]
        return json_response(items[:limit] if limit > 0 else items)

    async def inspect(req: Request) -> Response:
        return json_response(views.inspect(svc.get(req.params["id"])))

    async def start(req: Request) -> Response:
        try:
            await svc.run(req.params["id"])
        except NotModified:
            return Response(status=304, content_type="text/plain")
        return Response(status=204, content_type="text/plain")

    async def wait(req: Request) -> StreamResponse:
        c = svc.get(req.params["id"])
        condition = req.arg("condition", "not-running")
        if condition not in ("not-running", "next-exit", "removed"):
            raise HTTPError(400, f"invalid condition: {condition}")
        if condition == "removed":
            fut = svc.removal_future(c.id)
        elif condition == "next-exit" or rt.state(c.id).running:
            fut = svc.exit_future(c.id)
        else:
            await svc.settled(c.id)
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(rt.state(c.id).exit_code)

        async def body():
            code = await fut
            yield (b'{"StatusCode":%d,"Error":null}\n' % code)

        return StreamResponse(chunks=body())

    async def attach(req: Request) -> Hijack:
        c = svc.get(req.params["id"])
        tty = bool(c.config.get("Tty"))
        want_stdin = req.flag("stdin")
        stream = await rt.attach(c.id, stdin=want_stdin, stdout=req.flag("stdout"), stderr=req.flag("stderr"),
                                 stdin_once=bool(c.config.get("StdinOnce")))

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await pump_session(reader, writer, stream, tty, want_stdin)

        ctype = "application/vnd.docker.raw-stream" if tty else "application/vnd.docker.multiplexed-stream"
        return Hijack(session=session, content_type=ctype)

    async def resize(req: Request) -> Response:
        c = svc.get(req.params["id"])
        with contextlib.suppress(Exception):
            await engine.call(rt.resize, c.id, int(req.arg("h", "0") or 0), int(req.arg("w", "0") or 0))
        return Response(status=200, content_type="text/plain")

    async def logs(req: Request) -> Response | StreamResponse:
        c = svc.get(req.params["id"])
        tail_arg = req.arg("tail", "all")
        flt = LogFilter(stdout=req.flag("stdout"), stderr=req.flag("stderr"),
                        since=float(req.arg("since") or 0) or None, until=float(req.arg("until") or 0) or None,
                        tail=None if tail_arg in ("", "all") else int(tail_arg))
        tty = bool(c.config.get("Tty"))
        stamps = req.flag("timestamps")

        def render(entry) -> bytes:
            data = (entry.time.encode() + b" " + entry.data) if stamps else entry.data
            return data if tty else mux(entry.stream, data)

        ctype = "application/vnd.docker.raw-stream" if tty else "application/vnd.docker.multiplexed-stream"
        if not req.flag("follow"):
            entries = await asyncio.to_thread(rt.logs, c.id, flt)
            return Response(body=b"".join(render(e) for e in entries), content_type=ctype)

        async def chunks():
            async for entry in rt.follow_logs(c.id, flt):
                yield render(entry)

        return StreamResponse(chunks=chunks(), content_type=ctype)

    async def stop(req: Request) -> Response:
        c = svc.get(req.params["id"])
        if not rt.state(c.id).running:
            return Response(status=304, content_type="text/plain")
        timeout = float(req.arg("t", "10") or 10)
        sig = _signal(req.arg("signal")) if req.arg("signal") else signals.SIGTERM
        done = svc.exit_future(c.id)
        await rt.stop(c.id, timeout, sig)
        await done
        return Response(status=204, content_type="text/plain")

    async def kill(req: Request) -> Response:
        c = svc.get(req.params["id"])
        if not rt.state(c.id).running:
            raise HTTPError(409, f"cannot kill container: {c.id}: container {c.id} is not running")
        await engine.call(rt.kill, c.id, _signal(req.arg("signal")))
        return Response(status=204, content_type="text/plain")

    async def restart(req: Request) -> Response:
        c = svc.get(req.params["id"])
        if rt.state(c.id).running:
            done = svc.exit_future(c.id)
            await rt.stop(c.id, float(req.arg("t", "10") or 10))
            await done
        await svc.run(c.id)
        return Response(status=204, content_type="text/plain")

    async def remove(req: Request) -> Response:
        await engine.call(svc.remove, req.params["id"], req.flag("force"))
        return Response(status=204, content_type="text/plain")

    async def rename(req: Request) -> Response:
        await engine.call(svc.rename, req.params["id"], req.arg("name"))
        return Response(status=204, content_type="text/plain")

    async def prune(req: Request) -> Response:
        removed = []
        for c in svc.all():
            if not rt.state(c.id).running:
                await engine.call(svc.remove, c.id, False)
                removed.append(c.id)
        return json_response({"ContainersDeleted": removed or None, "SpaceReclaimed": 0})

    async def exec_create(req: Request) -> Response:
        c = svc.get(req.params["id"])
        body = req.json()
        if not rt.state(c.id).running:
            raise HTTPError(409, f"container {c.id} is not running")
        cmd = body.get("Cmd") or []
        if not cmd:
            raise HTTPError(400, "No exec command specified")
        exec_id = await engine.call(rt.exec_create, c.id, list(cmd), list(body.get("Env") or []),
                                    body.get("WorkingDir") or "", body.get("User") or "", bool(body.get("Tty")),
                                    bool(body.get("AttachStdin")), console_size_of(body.get("ConsoleSize")),
                                    bool(body.get("Privileged")))
        return json_response({"Id": exec_id}, 201)

    async def exec_start(req: Request) -> Response | Hijack:
        body = req.json()
        exec_id = req.params["id"]
        info = rt.exec_inspect(exec_id)
        if body.get("Detach"):
            await rt.exec_start(exec_id, detach=True)
            return Response(status=200, content_type="text/plain")

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The process starts only once the client holds the upgraded stream: its first bytes must
            # not ride in the same read as the 101 headers, or the SDK's HTTP parser swallows them.
            try:
                stream = await rt.exec_start(exec_id, detach=False)
            except EngineError as exc:
                message = (exc.message + "\n").encode()
                writer.write(message if info.tty else mux("stderr", message))
                await writer.drain()
                writer.close()
                return
            assert stream is not None
            await pump_session(reader, writer, stream, info.tty, info.open_stdin)

        ctype = "application/vnd.docker.raw-stream" if info.tty else "application/vnd.docker.multiplexed-stream"
        return Hijack(session=session, content_type=ctype)

    async def exec_inspect(req: Request) -> Response:
        info = rt.exec_inspect(req.params["id"])
        return json_response({
            "ID": info.id, "Running": info.running, "ExitCode": info.exit_code,
            "ProcessConfig": {"entrypoint": info.args[0] if info.args else "", "arguments": info.args[1:],
                              "tty": info.tty, "privileged": False, "user": ""},
            "OpenStdin": info.open_stdin, "OpenStderr": True, "OpenStdout": True, "CanRemove": False,
            "ContainerID": info.container_id, "DetachKeys": "", "Pid": info.pid,
        })

    async def exec_resize(req: Request) -> Response:
        with contextlib.suppress(Exception):
            await engine.call(rt.exec_resize, req.params["id"], int(req.arg("h", "0") or 0), int(req.arg("w", "0") or 0))
        return Response(status=200, content_type="text/plain")

    async def connect(req: Request) -> Response:
        body = req.json()
        await engine.call(svc.connect, req.params["id"], body.get("Container") or "", body.get("EndpointConfig") or {})
        return Response(status=200, content_type="text/plain")

    async def disconnect(req: Request) -> Response:
        body = req.json()
        await engine.call(svc.disconnect, req.params["id"], body.get("Container") or "", bool(body.get("Force")))
        return Response(status=200, content_type="text/plain")

    router.add("POST", "/containers/create", create)
    router.add("GET", "/containers/json", list_containers)
    router.add("POST", "/containers/prune", prune)
    router.add("GET", "/containers/{id}/json", inspect)
    router.add("POST", "/containers/{id}/start", start)
    router.add("POST", "/containers/{id}/wait", wait)
    router.add("POST", "/containers/{id}/attach", attach)
    router.add("POST", "/containers/{id}/resize", resize)
    router.add("GET", "/containers/{id}/logs", logs)
    router.add("POST", "/containers/{id}/stop", stop)
    router.add("POST", "/containers/{id}/kill", kill)
    router.add("POST", "/containers/{id}/restart", restart)
    router.add("POST", "/containers/{id}/rename", rename)
    router.add("DELETE", "/containers/{id}", remove)
    router.add("POST", "/containers/{id}/exec", exec_create)
    router.add("POST", "/exec/{id}/start", exec_start)
    router.add("GET", "/exec/{id}/json", exec_inspect)
    router.add("POST", "/exec/{id}/resize", exec_resize)
    router.add("POST", "/networks/{id}/connect", connect)
    router.add("POST", "/networks/{id}/disconnect", disconnect)
