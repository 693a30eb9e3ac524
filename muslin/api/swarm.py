"""/swarm, /nodes, /services, /tasks, /secrets, /configs: answered as by a Docker that is not in a swarm.

muslind is a single engine (its cross-host networking is flannel's or macvlan's), so it never joins
one: the CLI's swarm commands get dockerd's own "not in a swarm" answers rather than a 404.
"""

from __future__ import annotations

from muslin.engine.engine import Engine

from .http import HTTPError, Request, Response, Route, Router

NOT_A_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect '
                 'this node to swarm and try again.')


async def not_a_manager(engine: Engine, req: Request) -> Response:
    raise HTTPError(503, NOT_A_MANAGER)


async def leave(engine: Engine, req: Request) -> Response:
    raise HTTPError(503, "This node is not part of a swarm")


async def init_or_join(engine: Engine, req: Request) -> Response:
    raise HTTPError(503, "muslind has no swarm mode: it stays a single engine (use flannel or macvlan networks "
                         "to reach containers on other hosts)")


MANAGER_ONLY = ["GET /swarm", "POST /swarm/update", "GET /swarm/unlockkey", "POST /swarm/unlock",
                "GET /nodes", "GET /nodes/{id}", "DELETE /nodes/{id}", "POST /nodes/{id}/update",
                "GET /services", "POST /services/create", "GET /services/{id}", "DELETE /services/{id}",
                "POST /services/{id}/update", "GET /services/{id}/logs", "GET /tasks", "GET /tasks/{id}",
                "GET /tasks/{id}/logs", "GET /secrets", "POST /secrets/create", "GET /secrets/{id}",
                "DELETE /secrets/{id}", "POST /secrets/{id}/update", "GET /configs", "POST /configs/create",
                "GET /configs/{id}", "DELETE /configs/{id}", "POST /configs/{id}/update"]

ROUTES: list[Route] = [
    *((line.split()[0], line.split()[1], not_a_manager) for line in MANAGER_ONLY),
    ("POST", "/swarm/leave", leave),
    ("POST", "/swarm/init", init_or_join),
    ("POST", "/swarm/join", init_or_join),
]


def routes(router: Router, engine: Engine) -> None:
    router.add_all(engine, ROUTES)
