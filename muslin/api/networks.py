"""/networks: Docker's JSON shapes and field order, translated to and from the engine's model."""

from __future__ import annotations

from typing import Any

from muslin.engine.engine import Engine
from muslin.engine.model import Endpoint, Network

from . import requests
from .http import HTTPError, Request, Response, Route, Router, json_response, labels_match


def ipam_config_json(net: Network) -> list[dict[str, Any]]:
    out = []
    for pool in net.pools:
        entry: dict[str, Any] = {"Subnet": str(pool.subnet)}
        if pool.ip_range:
            entry["IPRange"] = str(pool.ip_range)
        if pool.gateway:
            entry["Gateway"] = str(pool.gateway)
        if pool.aux_addresses:
            entry["AuxiliaryAddresses"] = {k: str(v) for k, v in pool.aux_addresses.items()}
        out.append(entry)
    return out


def endpoint_json(ep: Endpoint) -> dict[str, Any]:
    return {
        "Name": ep.container_name,
        "EndpointID": ep.id,
        "MacAddress": ep.mac,
        "IPv4Address": str(ep.address) if ep.address else "",
        "IPv6Address": "",
    }


def network_json(net: Network, endpoints: list[Endpoint]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope,
        "Driver": net.driver,
        "EnableIPv4": True,
        "EnableIPv6": net.enable_ipv6,
        "IPAM": {"Driver": net.ipam_driver, "Options": dict(net.ipam_options) or None,  # dockerd: null when none
                 "Config": ipam_config_json(net)},
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": net.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
    }
    doc["Containers"] = {ep.container_id: endpoint_json(ep) for ep in endpoints}
    doc["Options"] = dict(net.options)
    doc["Labels"] = dict(net.labels)
    return doc


def _matches(net: Network, filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key == "name" and not any(v in net.name for v in values):
            return False
        if key == "id" and not any(net.id.startswith(v) for v in values):
            return False
        if key == "driver" and net.driver not in values:
            return False
        if key == "scope" and net.scope not in values:
            return False
        if key == "type":
            kind = "builtin" if net.predefined else "custom"
            if kind not in values:
                return False
        if key == "label" and not labels_match(net.labels, values):
            return False
    return True


LIST_FILTERS = {"name", "id", "driver", "scope", "type", "label", "dangling"}
PRUNE_FILTERS = {"label"}


async def list_networks(engine: Engine, req: Request) -> Response:
    filters = requests.filters(req, LIST_FILTERS)
    dangling = filters.pop("dangling", [])
    if any(v not in ("true", "false", "1", "0") for v in dangling):
        raise HTTPError(400, f"Invalid filter: 'dangling'='{dangling[0]}'")
    out = []
    for net in engine.networks.list():
        # dangling: a network no container uses (the predefined ones never are)
        if dangling and (dangling[-1] in ("true", "1")) != (not net.predefined and not engine.networks.endpoints(net)):
            continue
        if _matches(net, filters):
            # Since API 1.28 the list leaves Containers empty (inspect has them), as dockerd does.
            out.append(network_json(net, []))
    return json_response(out)


async def inspect_network(engine: Engine, req: Request) -> Response:
    net = engine.networks.get(req.params["id"])
    scope = req.arg("scope")
    if scope and scope != net.scope:  # local, or global for an overlay of the cluster store
        raise HTTPError(404, f"network {req.params['id']} not found")
    return json_response(network_json(net, engine.networks.endpoints(net)))


async def create_network(engine: Engine, req: Request) -> Response:
    net = await engine.call(engine.networks.create, requests.network_create(req))
    return json_response({"Id": net.id, "Warning": ""}, 201)


async def delete_network(engine: Engine, req: Request) -> Response:
    await engine.call(engine.networks.delete, req.params["id"])
    return Response(status=204, content_type="text/plain")


async def prune_networks(engine: Engine, req: Request) -> Response:
    labels = requests.filters(req, PRUNE_FILTERS).get("label", [])

    def keep(net: Network) -> bool:
        return not labels_match(net.labels, labels)

    removed = await engine.call(engine.networks.prune, keep)
    return json_response({"NetworksDeleted": removed or None})


async def connect(engine: Engine, req: Request) -> Response:
    container, settings = requests.network_connect(req)
    await engine.call(engine.containers.connect, req.params["id"], container, settings)
    return Response(status=200, content_type="text/plain")


async def disconnect(engine: Engine, req: Request) -> Response:
    container, force = requests.network_disconnect(req)
    await engine.call(engine.containers.disconnect, req.params["id"], container, force)
    return Response(status=200, content_type="text/plain")


ROUTES: list[Route] = [
    ("GET", "/networks", list_networks),
    ("POST", "/networks/create", create_network),
    ("POST", "/networks/prune", prune_networks),
    ("GET", "/networks/{id}", inspect_network),
    ("DELETE", "/networks/{id}", delete_network),
    ("POST", "/networks/{id}/connect", connect),
    ("POST", "/networks/{id}/disconnect", disconnect),
]


def routes(router: Router, engine: Engine) -> None:
    router.add_all(engine, ROUTES)
