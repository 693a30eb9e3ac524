"""/containers/{id}/archive (docker cp both ways; HEAD for the path's stat) and /containers/{id}/changes
(docker diff), on running and stopped containers alike."""

from __future__ import annotations

import asyncio
import base64
import json

from muslin.engine.engine import Engine
from muslin.runtime import PathStat

from .http import Request, Response, Route, Router, StreamResponse, json_response

STAT_HEADER = "X-Docker-Container-Path-Stat"
# A tar comes whole in the body, as an image upload does: bounded, far above JSON's bound.
MAX_ARCHIVE_UPLOAD = 512 * 1024 * 1024


def _stat_header(info: PathStat) -> tuple[str, str]:
    return STAT_HEADER, base64.b64encode(json.dumps(info.to_json()).encode()).decode()


async def get_archive(engine: Engine, req: Request) -> Response | StreamResponse:
    ref, path = req.params["id"], req.arg("path")
    if req.method == "HEAD":
        info = await engine.files.stat(ref, path)
        return Response(status=200, content_type="text/plain", headers=[_stat_header(info)])
    info, chunks = await engine.files.get(ref, path)
    return StreamResponse(chunks=chunks, content_type="application/x-tar", headers=[_stat_header(info)])


async def put_archive(engine: Engine, req: Request) -> Response:
    await engine.files.put(req.params["id"], req.arg("path"), req.body, req.flag("noOverwriteDirNonDir"))
    return Response(status=200, content_type="text/plain")


async def changes(engine: Engine, req: Request) -> Response:
    found = await asyncio.to_thread(engine.files.changes, req.params["id"])  # a walk of every layer
    return json_response([{"Path": c.path, "Kind": int(c.kind)} for c in found] or None)


ROUTES: list[Route] = [
    ("GET", "/containers/{id}/archive", get_archive),
    ("GET", "/containers/{id}/changes", changes),
]
UPLOADS: list[Route] = [("PUT", "/containers/{id}/archive", put_archive)]


def routes(router: Router, engine: Engine) -> None:
    router.add_all(engine, ROUTES)
    router.add_all(engine, UPLOADS, max_body=MAX_ARCHIVE_UPLOAD)
