"""/images: list, inspect, remove, tag, import (`docker import`), load, and a pull that fails fast."""

from __future__ import annotations

import io
import json
from typing import Any

from muslin.engine.engine import Engine
from muslin.runtime import Image

from .http import HTTPError, Request, Response, Route, Router, json_response


def _created_unix(image: Image) -> int:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(image.created.replace("Z", "+00:00")[:26] + "+00:00").timestamp())
    except ValueError:
        return 0


def image_summary(image: Image) -> dict[str, Any]:
    return {"Containers": -1, "Created": _created_unix(image), "Id": image.id, "Labels": image.config.get("Labels"),
            "ParentId": "", "RepoDigests": [], "RepoTags": image.repo_tags, "SharedSize": -1,
            "Size": image.size}


def image_inspect(image: Image) -> dict[str, Any]:
    return {"Id": image.id, "RepoTags": image.repo_tags, "RepoDigests": [], "Parent": "", "Comment": "",
            "Created": image.created, "DockerVersion": "", "Author": "", "Config": image.config,
            "Architecture": image.architecture, "Os": image.os, "Size": image.size,
            "GraphDriver": {"Data": {}, "Name": "overlay"},
            "RootFS": {"Type": "layers", "Layers": image.diff_ids}, "Metadata": {"LastTagTime": NEVER}}


NEVER = "0001-01-01T00:00:00Z"


def _progress(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\r\n"


async def list_images(engine: Engine, req: Request) -> Response:
    return json_response([image_summary(i) for i in engine.images.list()])


async def inspect(engine: Engine, req: Request) -> Response:
    return json_response(image_inspect(engine.images.get(req.params["name"])))


async def remove(engine: Engine, req: Request) -> Response:
    return json_response(await engine.call(engine.remove_image, req.params["name"], req.flag("force")))


async def tag(engine: Engine, req: Request) -> Response:
    repo, tag_ = req.arg("repo"), req.arg("tag") or "latest"
    await engine.call(engine.change_images, engine.images.tag, req.params["name"], f"{repo}:{tag_}")
    return Response(status=201, content_type="text/plain")


async def create(engine: Engine, req: Request) -> Response:
    source = req.arg("fromSrc")
    if source == "-":
        repo, tag_ = req.arg("repo"), req.arg("tag")
        has_tag = ":" in repo.rsplit("/", 1)[-1]
        ref = (repo if has_tag or not tag_ else f"{repo}:{tag_}") if repo else None
        # Not under the engine's images lock: it adds an image and removes none; the image store takes
        # its own lock only to publish it, after the tarball is unpacked.
        image = await engine.call(engine.images.import_tar, io.BytesIO(req.body), ref, req.query.get("changes", []),
                                  req.arg("message"))
        return Response(body=_progress({"status": image.id}), content_type="application/json")
    if source:
        raise HTTPError(400, "importing from a URL is not supported: muslind reaches no network; pass the tarball on stdin")
    # No registry is reachable from muslind: say so at once instead of hanging on a connect, in the words
    # of dockerd's answer for a repository the registry does not have (which clients such as docker-py
    # recognise as "image not found"); like dockerd it names the repository without tag or digest.
    raise HTTPError(404, f"pull access denied for {_repository(req.arg('fromImage'))}, repository does not exist "
                         "or may require 'docker login': muslind has no registry; "
                         "use `docker load` or `docker import` (busybox is built in)")


def _repository(reference: str) -> str:
    """A reference's repository in its familiar form, as dockerd names it: without @digest and :tag (a
    registry's :port stays), and without Docker Hub's domain and its ``library/`` of official images."""
    name = reference.split("@", 1)[0]
    head, sep, last = name.rpartition("/")
    name = f"{head}{sep}{last.split(':', 1)[0]}"
    for hub in ("docker.io/", "index.docker.io/"):
        if name.startswith(hub):
            name = name.removeprefix(hub)
            official = name.removeprefix("library/")
            return official if "/" not in official else name
    return name


async def load(engine: Engine, req: Request) -> Response:
    loaded = await engine.call(engine.images.load, io.BytesIO(req.body))  # as import: no images lock
    lines = b"".join(_progress({"stream": f"Loaded image: {ref}\n"}) for ref in loaded)
    return Response(body=lines, content_type="application/json")


# Tarballs come whole in the body (`docker import`, `docker load`): bounded, but far above JSON's bound.
MAX_IMAGE_UPLOAD = 512 * 1024 * 1024
UPLOADS: list[Route] = [
    ("POST", "/images/create", create),
    ("POST", "/images/load", load),
]
ROUTES: list[Route] = [
    ("GET", "/images/json", list_images),
    ("GET", "/images/{name:path}/json", inspect),
    ("POST", "/images/{name:path}/tag", tag),
    ("DELETE", "/images/{name:path}", remove),
]


def routes(router: Router, engine: Engine) -> None:
    router.add_all(engine, UPLOADS, max_body=MAX_IMAGE_UPLOAD)
    router.add_all(engine, ROUTES)
