"""/networks: Docker's JSON shapes and field order, translated to and from the engine's model."""

from __future__ import annotations

from typing import Any

from muslin.engine.engine import Engine
from muslin.engine.model import Endpoint, Network

from .http import HTTPError, Request, Response, Router, json_response, labels_match


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
        "Scope": "local",
        "Driver": net.driver,
        "EnableIPv4": True,
        "EnableIPv6": net.enable_ipv6,
        "IPAM": {"Driver": net.ipam_driver, "Options": dict(net.ipam_options), "Config": ipam_config_json(net)},
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
        if key == "scope" and "local" not in values:
            return False
        if key == "type":
            kind = "builtin" if net.predefined else "custom"
            if kind not in values:
                return False
        if key == "label" and not labels_match(net.labels, values):
            return False
        if key not in ("name", "id", "driver", "scope", "type", "label", "dangling"):
            raise HTTPError(400, f"invalid filter '{key}'")
    return True


def routes(router: Router, engine: Engine) -> None:
    nets = engine.networks

    async def list_networks(req: Request) -> Response:
        filters = req.filters()
        out = []
        for net in nets.list():
            if _matches(net, filters):
                # Since API 1.28 the list leaves Containers empty (inspect has them), as dockerd does.
                out.append(network_json(net, []))
        return json_response(out)

    async def inspect_network(req: Request) -> Response:
        net = nets.get(req.params["id"])
        return json_response(network_json(net, nets.endpoints(net)))

    async def create_network(req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise HTTPError(400, "invalid network create request")
        ipam = body.get("IPAM") or {}
        net = await engine.call(
            nets.create,
            name=body.get("Name") or "",
            driver=body.get("Driver") or "bridge",
            ipam_configs=ipam.get("Config") or [],
            internal=bool(body.get("Internal")),
            attachable=bool(body.get("Attachable")),
            ingress=bool(body.get("Ingress")),
            enable_ipv6=bool(body.get("EnableIPv6")),
            options=body.get("Options") or {},
            labels=body.get("Labels") or {},
            ipam_driver=ipam.get("Driver") or "default",
            ipam_options=ipam.get("Options") or {},
        )
        return json_response({"Id": net.id, "Warning": ""}, 201)

    async def delete_network(req: Request) -> Response:
        await engine.call(nets.delete, req.params["id"])
        return Response(status=204, content_type="text/plain")

    async def prune_networks(req: Request) -> Response:
        filters = req.filters()
        labels = filters.get("label", [])

        def keep(net: Network) -> bool:
            return not labels_match(net.labels, labels)

        removed = await engine.call(nets.prune, keep)
        return json_response({"NetworksDeleted": removed or None})

    router.add("GET", "/networks", list_networks)
    router.add("POST", "/networks/create", create_network)
    router.add("POST", "/networks/prune", prune_networks)
    router.add("GET", "/networks/{id}", inspect_network)
    router.add("DELETE", "/networks/{id}", delete_network)
