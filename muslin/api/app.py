"""Assembles the Docker Engine API for one engine."""

from __future__ import annotations

from muslin.engine.engine import Engine

from . import archive, container_stats, containers, execs, images, networks, swarm, system, volumes
from .http import Router, Server


def build_server(engine: Engine) -> Server:
    router = Router()
    system.routes(router, engine)
    networks.routes(router, engine)
    containers.routes(router, engine)
    container_stats.routes(router, engine)
    archive.routes(router, engine)
    volumes.routes(router, engine)
    execs.routes(router, engine)
    images.routes(router, engine)
    swarm.routes(router, engine)
    return Server(router, system.server_headers())
