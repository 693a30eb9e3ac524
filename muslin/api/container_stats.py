"""/containers/{id}/top and /containers/{id}/stats: a running container's processes and resource use,
in dockerd's JSON (what `docker top`, `docker stats` and docker-py read)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from typing import Any

from muslin.engine import stats, top
from muslin.engine.engine import Engine
from muslin.errors import EngineError

from .container_json import NEVER, rfc3339_ns
from .http import Request, Response, Route, Router, StreamResponse, json_response

STREAM_INTERVAL_S = 1.0  # dockerd's collector samples once a second
MAX_STREAM_SAMPLES = 86_400  # a day of a followed stats stream; the client reconnects after that


async def container_top(engine: Engine, req: Request) -> Response:
    ps_args = req.arg("ps_args")
    top.check_ps_args(ps_args)
    _, cgroups = engine.containers.running_cgroups(req.params["id"])
    table = await asyncio.to_thread(top.top, shutil.which("ps") or "ps", cgroups.pids(), ps_args)
    return json_response({"Titles": table.titles, "Processes": table.processes})


def _cpu_json(cpu: stats.CpuSample | None) -> dict[str, Any]:
    if cpu is None:
        return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    usage: dict[str, Any] = {"total_usage": cpu.total_usage}
    if cpu.percpu_usage:
        usage["percpu_usage"] = list(cpu.percpu_usage)
    usage.update(usage_in_kernelmode=cpu.usage_in_kernelmode, usage_in_usermode=cpu.usage_in_usermode)
    return {"cpu_usage": usage, "system_cpu_usage": cpu.system_cpu_usage, "online_cpus": cpu.online_cpus,
            "throttling_data": {"periods": cpu.periods, "throttled_periods": cpu.throttled_periods,
                                "throttled_time": cpu.throttled_time}}


def _blkio_json(entries: tuple[stats.BlkioEntry, ...]) -> list[dict[str, Any]]:
    return [{"major": e.major, "minor": e.minor, "op": e.op, "value": e.value} for e in entries]


def stats_json(name: str, cid: str, now: stats.StatsSample | None, before: stats.StatsSample | None) -> dict[str, Any]:
    """dockerd's types.StatsJSON; ``now`` None for a container that is not running (all zero)."""
    doc: dict[str, Any] = {
        "read": rfc3339_ns(now.read) if now else NEVER,
        "preread": rfc3339_ns(before.read) if before else NEVER,
        "pids_stats": ({"current": now.pids_current, **({"limit": now.pids_limit} if now.pids_limit else {})}
                       if now else {}),
        "blkio_stats": {"io_service_bytes_recursive": _blkio_json(now.io_service_bytes) if now else None,
                        "io_serviced_recursive": _blkio_json(now.io_serviced) if now else None,
                        "io_queue_recursive": [] if now else None, "io_service_time_recursive": [] if now else None,
                        "io_wait_time_recursive": [] if now else None, "io_merged_recursive": [] if now else None,
                        "io_time_recursive": [] if now else None, "sectors_recursive": [] if now else None},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu_json(now.cpu if now else None),
        "precpu_stats": _cpu_json(before.cpu if before else None),
        "memory_stats": ({"usage": now.memory.usage, "max_usage": now.memory.max_usage, "stats": now.memory.stats,
                          "limit": now.memory.limit} if now else {}),
        "name": "/" + name,
        "id": cid,
    }
    if now and now.networks:
        doc["networks"] = {ifname: vars(counters) for ifname, counters in now.networks.items()}
    return doc


async def container_stats(engine: Engine, req: Request) -> Response | StreamResponse:
    c = engine.containers.get(req.params["id"])
    stream, one_shot = req.flag("stream", True), req.flag("one-shot")

    async def reading() -> stats.StatsSample | None:
        try:
            _, cgroups = engine.containers.running_cgroups(c.id)
            return await asyncio.to_thread(stats.sample, cgroups, c.sandbox)
        except (EngineError, OSError):  # not running (any more): dockerd sends zeros
            return None

    if not stream:
        before = None
        now = await reading()
        if now is not None and not one_shot:  # as dockerd: two readings, so that CPU % can be computed
            await asyncio.sleep(STREAM_INTERVAL_S)
            before, now = now, await reading()
        return json_response(stats_json(c.name, c.id, now, before))

    async def chunks() -> AsyncIterator[bytes]:
        before = None
        for _ in range(MAX_STREAM_SAMPLES):
            now = await reading()
            yield json.dumps(stats_json(c.name, c.id, now, before)).encode() + b"\n"
            if now is None:
                return
            before = now
            await asyncio.sleep(STREAM_INTERVAL_S)

    return StreamResponse(chunks=chunks())


ROUTES: list[Route] = [
    ("GET", "/containers/{id}/top", container_top),
    ("GET", "/containers/{id}/stats", container_stats),
]


def routes(router: Router, engine: Engine) -> None:
    router.add_all(engine, ROUTES)
