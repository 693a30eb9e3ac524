"""Assembles the Docker Engine API for one engine."""

from __future__ import annotations

from muslin.engine.engine import Engine

from . import containers, images, networks, system
from .http import Router, Server


def build_server(engine: Engine) -> Server:
    router = Router()
    system.routes(router, engine)
    networks.routes(router, engine)
    containers.routes(router, engine)
    images.routes(router, engine)
    return Server(router, system.server_headers())
