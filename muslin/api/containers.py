"""/containers: Docker's requests translated for the engine's ContainerService, and its answers back.

The API translates; the engine decides: each handler checks and converts its input (``requests``), makes
one engine call, and renders the result (``container_json``) or the stream.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

from muslin.engine.containers import Container
from muslin.engine.engine import Engine
from muslin.engine.health import STATUSES as HEALTH_STATUSES
from muslin.errors import NotFound, NotModified
from muslin.runtime import LogEntry, LogFilter, State

from . import detachkeys, requests
from .container_json import ContainerViews
from .http import Hijack, HTTPError, Request, Response, Route, Router, StreamResponse, json_response, labels_match
from .streams import content_type, mux, pump_session

LIST_FILTERS = {"ancestor", "exited", "health", "id", "label", "name", "network", "status"}
PRUNE_FILTERS = {"label"}
STATUSES = {"created", "restarting", "running", "removing", "paused", "exited", "dead"}
WAIT_CONDITIONS = ("not-running", "next-exit", "removed")


def no_content() -> Response:
    return Response(status=204, content_type="text/plain")


def _matches(c: Container, st: State, views: ContainerViews, filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key == "name" and not any(v.lstrip("/") in c.name for v in values):
            return False
        if key == "id" and not any(c.id.startswith(v) for v in values):
            return False
        if key == "status" and views.status(c, st) not in values:
            return False
        if key == "health" and views.health_status(c) not in values:
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


async def create(engine: Engine, req: Request) -> Response:
    c = await engine.call(engine.containers.create, requests.container_create(req))
    return json_response({"Id": c.id, "Warnings": []}, 201)


async def list_containers(engine: Engine, req: Request) -> Response:
    show_all = req.flag("all")
    filters = requests.filters(req, LIST_FILTERS)
    for value in filters.get("status", []):
        if value not in STATUSES:
            raise HTTPError(400, f"Unrecognised filter value for status: {value}")
    for value in filters.get("health", []):
        if value not in HEALTH_STATUSES:
            raise HTTPError(400, f"Unrecognised filter value for health: {value}")
    for value in filters.get("exited", []):
        if not value.lstrip("-").isdigit():
            raise HTTPError(400, f"invalid filter 'exited={value}'")
    limit = requests.query_int(req, "limit", 0) or 0
    views = ContainerViews.for_list(engine)
    out = []
    everyone = engine.containers.all()
    link_names = engine.containers.linking.link_names(everyone)
    for c in everyone:
        try:
            st = engine.containers.listed_state(c)
        except NotFound:  # removed while the list was made
            continue
        if not show_all and not st.running and not engine.containers.restarting(c) and "status" not in filters:
            continue
        if _matches(c, st, views, filters):
            out.append((st.created_at, views.summary(c, st, link_names.get(c.id))))
    out.sort(key=lambda item: item[0], reverse=True)
    items = [doc for _, doc in out]
    return json_response(items[:limit] if limit > 0 else items)


async def inspect(engine: Engine, req: Request) -> Response:
    return json_response(ContainerViews(engine).inspect(engine.containers.get(req.params["id"])))


async def start(engine: Engine, req: Request) -> Response:
    try:
        await engine.containers.run(req.params["id"])
    except NotModified:
        return Response(status=304, content_type="text/plain")
    return no_content()


async def wait(engine: Engine, req: Request) -> StreamResponse:
    condition = req.arg("condition") or "not-running"
    if condition not in WAIT_CONDITIONS:
        raise HTTPError(400, f"invalid condition: {condition}")
    fut = await engine.containers.wait(req.params["id"], condition)

    async def body() -> AsyncIterator[bytes]:
        code = await fut
        yield b'{"StatusCode":%d,"Error":null}\n' % code

    return StreamResponse(chunks=body())


async def attach(engine: Engine, req: Request) -> Hijack:
    keys = detachkeys.for_attach(req.arg("detachKeys"))
    want_stdin, want_stdout, want_stderr = req.flag("stdin"), req.flag("stdout"), req.flag("stderr")
    c = engine.containers.get(req.params["id"])
    tty = bool(c.config.get("Tty"))
    stream = None
    if req.flag("stream"):
        c, stream = await engine.containers.attach(req.params["id"], stdin=want_stdin, stdout=want_stdout,
                                                   stderr=want_stderr)

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if req.flag("logs"):
            # What the container wrote so far, read once the client holds the upgraded stream (as
            # dockerd): bytes riding in the same read as the 101 would be swallowed by the SDK's parser.
            flt = LogFilter(stdout=want_stdout, stderr=want_stderr)
            entries = await asyncio.to_thread(engine.containers.logs, c, flt)
            writer.write(b"".join(e.data if tty else mux(e.stream, e.data) for e in entries))
            await writer.drain()
        if stream is None:  # stream=0: the log (if asked) and nothing more
            writer.close()
            return
        escape = detachkeys.EscapeProxy(keys) if tty else None  # as dockerd: only a TTY's stdin detaches
        await pump_session(reader, writer, stream, tty, want_stdin, escape)

    return Hijack(session=session, content_type=content_type(tty))


async def resize(engine: Engine, req: Request) -> Response:
    height, width = requests.query_int(req, "h", 0) or 0, requests.query_int(req, "w", 0) or 0
    await engine.call(engine.containers.resize, req.params["id"], height, width)
    return Response(status=200, content_type="text/plain")


async def logs(engine: Engine, req: Request) -> Response | StreamResponse:
    c = engine.containers.get(req.params["id"])
    if (c.host_config.get("LogConfig") or {}).get("Type") == "none":
        raise HTTPError(501, "configured logging driver does not support reading")
    stdout, stderr = req.flag("stdout"), req.flag("stderr")
    if not stdout and not stderr:
        raise HTTPError(400, "Bad parameters: you must choose at least one stream")
    tail_arg = req.arg("tail", "all")
    # As dockerd: a tail that is not a number shows everything.
    tail = int(tail_arg) if tail_arg.isdigit() else None
    flt = LogFilter(stdout=stdout, stderr=stderr, since=requests.query_seconds(req, "since"),
                    until=requests.query_seconds(req, "until"), tail=tail)
    tty = bool(c.config.get("Tty"))
    stamps = req.flag("timestamps")

    def render(entry: LogEntry) -> bytes:
        data = (entry.time.encode() + b" " + entry.data) if stamps else entry.data
        return data if tty else mux(entry.stream, data)

    if not req.flag("follow"):
        entries = await asyncio.to_thread(engine.containers.logs, c, flt)
        return Response(body=b"".join(render(e) for e in entries), content_type=content_type(tty))

    async def chunks() -> AsyncIterator[bytes]:
        async for entry in engine.containers.follow_logs(c, flt):
            yield render(entry)

    return StreamResponse(chunks=chunks(), content_type=content_type(tty))


async def stop(engine: Engine, req: Request) -> Response:
    timeout, sig = requests.query_int(req, "t"), requests.query_signal(req)
    try:
        await engine.containers.stop(req.params["id"], timeout, sig)
    except NotModified:
        return Response(status=304, content_type="text/plain")
    return no_content()


async def kill(engine: Engine, req: Request) -> Response:
    sig = requests.query_signal(req) or signal.SIGKILL
    await engine.containers.kill(req.params["id"], sig)
    return no_content()


async def update(engine: Engine, req: Request) -> Response:
    await engine.call(engine.containers.update, req.params["id"], requests.container_update(req))
    return json_response({"Warnings": None})


async def pause(engine: Engine, req: Request) -> Response:
    await engine.call(engine.containers.pause, req.params["id"])
    return no_content()


async def unpause(engine: Engine, req: Request) -> Response:
    await engine.call(engine.containers.unpause, req.params["id"])
    return no_content()


async def restart(engine: Engine, req: Request) -> Response:
    timeout, sig = requests.query_int(req, "t"), requests.query_signal(req)
    await engine.containers.restart(req.params["id"], timeout, sig)
    return no_content()


async def remove(engine: Engine, req: Request) -> Response:
    if req.flag("link"):  # the id is a link's "parent/alias": only the link goes
        await engine.call(engine.containers.remove_link, req.params["id"])
    else:
        await engine.call(engine.containers.remove, req.params["id"], req.flag("force"), req.flag("v"))
    return no_content()


async def rename(engine: Engine, req: Request) -> Response:
    new_name = req.arg("name")
    if not new_name:
        raise HTTPError(400, "Neither old nor new names may be empty")
    await engine.call(engine.containers.rename, req.params["id"], requests.name(new_name))
    return no_content()


async def prune(engine: Engine, req: Request) -> Response:
    labels = requests.filters(req, PRUNE_FILTERS).get("label", [])

    def keep(c: Container) -> bool:
        return not labels_match(c.config.get("Labels") or {}, labels)

    removed, space = await engine.call(engine.containers.prune, keep)
    return json_response({"ContainersDeleted": removed or None, "SpaceReclaimed": space})


ROUTES: list[Route] = [
    ("POST", "/containers/create", create),
    ("GET", "/containers/json", list_containers),
    ("POST", "/containers/prune", prune),
    ("GET", "/containers/{id}/json", inspect),
    ("POST", "/containers/{id}/start", start),
    ("POST", "/containers/{id}/wait", wait),
    ("POST", "/containers/{id}/attach", attach),
    ("POST", "/containers/{id}/resize", resize),
    ("GET", "/containers/{id}/logs", logs),
    ("POST", "/containers/{id}/stop", stop),
    ("POST", "/containers/{id}/kill", kill),
    ("POST", "/containers/{id}/update", update),
    ("POST", "/containers/{id}/pause", pause),
    ("POST", "/containers/{id}/unpause", unpause),
    ("POST", "/containers/{id}/restart", restart),
    ("POST", "/containers/{id}/rename", rename),
    ("DELETE", "/containers/{id:path}", remove),  # a link's name has a slash: parent/alias
]


def routes(router: Router, engine: Engine) -> None:
    router.add_all(engine, ROUTES)
