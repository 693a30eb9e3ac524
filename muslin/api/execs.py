"""/containers/{id}/exec and /exec: exec instances, translated for the engine's ExecService."""

from __future__ import annotations

import asyncio

from muslin.engine.engine import Engine
from muslin.errors import EngineError

from . import detachkeys, requests
from .http import Hijack, Request, Response, Route, Router, json_response
from .streams import content_type, mux, pump_session

# What dockerd 20.10 writes on an exec's stream when the client detached: its stdin copy ends with the
# escape error, which the exec start handler reports to the client like any error of the session.
DETACH_NOTICE = b"exec attach failed: error on attach stdin: read escape sequence\r\n"


async def create(engine: Engine, req: Request) -> Response:
    exec_id = await engine.call(engine.execs.create, req.params["id"], requests.exec_create(req))
    return json_response({"Id": exec_id}, 201)


async def start(engine: Engine, req: Request) -> Response | Hijack:
    check = requests.exec_start(req)
    exec_id = req.params["id"]
    info = engine.execs.startable(exec_id)
    if check.detach:
        await engine.execs.start(exec_id, detach=True)
        return Response(status=200, content_type="text/plain")
    # The start request's Tty frames the output (docker-py's exec_start(tty=...)), not the exec's own:
    # a TTY exec read without one comes multiplexed, all on stdout; detach keys work on a TTY's stdin.
    tty = check.tty

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The process starts only once the client holds the upgraded stream: its first bytes must
        # not ride in the same read as the 101 headers, or the SDK's HTTP parser swallows them.
        try:
            stream = await engine.execs.start(exec_id, detach=False)
        except EngineError as exc:
            # As dockerd: the start's error is the session's output, on stdout, a line ending in CRLF.
            message = (exc.message + "\r\n").encode()
            writer.write(message if tty else mux("stdout", message))
            await writer.drain()
            writer.close()
            return
        assert stream is not None
        escape = detachkeys.EscapeProxy(detachkeys.for_exec(info.detach_keys)) if info.tty else None
        # dockerd 20.10 gives a raw stream only stdout: a non-TTY exec started with Tty loses its stderr.
        await pump_session(reader, writer, stream, tty, info.open_stdin, escape, DETACH_NOTICE,
                           with_stderr=info.tty or not tty)

    return Hijack(session=session, content_type=content_type(tty))


async def inspect(engine: Engine, req: Request) -> Response:
    info = engine.execs.inspect(req.params["id"])
    return json_response({
        "ID": info.id, "Running": info.running, "ExitCode": info.exit_code,
        "ProcessConfig": {"entrypoint": info.args[0] if info.args else "", "arguments": info.args[1:],
                          "tty": info.tty, "privileged": False, "user": ""},
        "OpenStdin": info.open_stdin, "OpenStderr": True, "OpenStdout": True, "CanRemove": False,
        "ContainerID": info.container_id, "DetachKeys": "", "Pid": info.pid,
    })


async def resize(engine: Engine, req: Request) -> Response:
    height, width = requests.query_int(req, "h", 0) or 0, requests.query_int(req, "w", 0) or 0
    await engine.call(engine.execs.resize, req.params["id"], height, width)
    return Response(status=200, content_type="text/plain")


ROUTES: list[Route] = [
    ("POST", "/containers/{id}/exec", create),
    ("POST", "/exec/{id}/start", start),
    ("GET", "/exec/{id}/json", inspect),
    ("POST", "/exec/{id}/resize", resize),
]


def routes(router: Router, engine: Engine) -> None:
    router.add_all(engine, ROUTES)
