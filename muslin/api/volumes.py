"""/volumes: local named volumes (create, list with filters, inspect, remove, prune) as dockerd answers."""

from __future__ import annotations

from typing import Any

from muslin.engine.engine import Engine
from muslin.engine.volumes import Volume

from . import requests
from .http import HTTPError, Request, Response, Route, Router, json_response, labels_match

LIST_FILTERS = {"dangling", "name", "label", "driver"}
PRUNE_FILTERS = {"label", "label!", "all"}
TRUE_WORDS, FALSE_WORDS = ("true", "1"), ("false", "0")
# From this API version on, a prune without all=true leaves named volumes alone (dockerd 23+).
PRUNE_ANONYMOUS_ONLY_FROM = (1, 42)


def volume_json(engine: Engine, v: Volume) -> dict[str, Any]:
    return {"CreatedAt": v.created_at, "Driver": v.driver, "Labels": v.labels or None,
            "Mountpoint": str(engine.volumes.directory(v.name)), "Name": v.name, "Options": v.options or None,
            "Scope": "local"}


def _flag(key: str, values: list[str]) -> bool:
    if len(values) != 1 or values[0].lower() not in (*TRUE_WORDS, *FALSE_WORDS):
        raise HTTPError(400, f"Invalid filter '{key}=[{', '.join(values)}]'")
    return values[0].lower() in TRUE_WORDS


async def list_volumes(engine: Engine, req: Request) -> Response:
    filters = requests.filters(req, LIST_FILTERS)
    dangling = _flag("dangling", filters["dangling"]) if "dangling" in filters else None
    out = []
    users = engine.volumes.users() if dangling is not None else {}
    for v in engine.volumes.all():
        if dangling is not None and dangling == (v.name in users):
            continue
        if "name" in filters and not any(n in v.name for n in filters["name"]):
            continue
        if "driver" in filters and v.driver not in filters["driver"]:
            continue
        if "label" in filters and not labels_match(v.labels, filters["label"]):
            continue
        out.append(volume_json(engine, v))
    return json_response({"Volumes": out, "Warnings": None})


async def create(engine: Engine, req: Request) -> Response:
    spec = requests.volume_create(req)
    v = await engine.call(engine.volumes.create, spec.name, spec.driver, spec.labels, spec.options)
    return json_response(volume_json(engine, v), 201)


async def inspect(engine: Engine, req: Request) -> Response:
    return json_response(volume_json(engine, engine.volumes.get(req.params["name"])))


async def remove(engine: Engine, req: Request) -> Response:
    await engine.call(engine.volumes.remove, req.params["name"], req.flag("force"))
    return Response(status=204, content_type="text/plain")


def _api_version(req: Request) -> tuple[int, int] | None:
    if not req.api_version:
        return None
    major, _, minor = req.api_version.partition(".")
    return int(major), int(minor)


async def prune(engine: Engine, req: Request) -> Response:
    filters = requests.filters(req, PRUNE_FILTERS)
    version = _api_version(req)
    everything = _flag("all", filters["all"]) if "all" in filters else (
        version is not None and version < PRUNE_ANONYMOUS_ONLY_FROM)
    wanted, unwanted = filters.get("label", []), filters.get("label!", [])

    def keep(v: Volume) -> bool:
        if not everything and not v.anonymous:
            return True
        if wanted and not labels_match(v.labels, wanted):
            return True
        return any(labels_match(v.labels, [label]) for label in unwanted)

    removed = await engine.call(engine.volumes.prune, keep)
    return json_response({"VolumesDeleted": removed or None, "SpaceReclaimed": 0})


ROUTES: list[Route] = [
    ("GET", "/volumes", list_volumes),
    ("POST", "/volumes/create", create),
    ("POST", "/volumes/prune", prune),
    ("GET", "/volumes/{name}", inspect),
    ("DELETE", "/volumes/{name}", remove),
]


def routes(router: Router, engine: Engine) -> None:
    router.add_all(engine, ROUTES)
