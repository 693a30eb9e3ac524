"""/_ping, /version, /info: what the CLI asks before anything else."""

from __future__ import annotations

import os
import platform
import socket

from muslin import __version__
from muslin.engine.engine import Engine
from muslin.engine.stats import machine_memory

from .http import Request, Response, Route, Router, json_response

API_VERSION = "1.50"
MIN_API_VERSION = "1.24"


def server_headers() -> list[tuple[str, str]]:
    return [
        ("Api-Version", API_VERSION),
        ("Ostype", "linux"),
        ("Docker-Experimental", "false"),
        ("Server", f"muslin/{__version__} (linux)"),
    ]


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


async def ping(engine: Engine, req: Request) -> Response:
    return Response(body=b"OK", content_type="text/plain; charset=utf-8",
                    headers=[("Cache-Control", "no-cache, no-store, must-revalidate"), ("Pragma", "no-cache")])


async def version(engine: Engine, req: Request) -> Response:
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
               "Arch": "amd64", "KernelVersion": platform.release(), "Experimental": "false"}
    return json_response({
        "Platform": {"Name": "muslin"},
        "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "muslin",
        "GoVersion": f"python{platform.python_version()}",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": platform.release(),
        "BuildTime": "",
    })


async def info(engine: Engine, req: Request) -> Response:
    counts = engine.containers.counts()
    images = len(engine.images.list())
    return json_response({
        "ID": engine.networks.get("bridge").id[:36],
        "Containers": counts[0],
        "ContainersRunning": counts[1],
        "ContainersPaused": counts[2],
        "ContainersStopped": counts[3],
        "Images": images,
        "Driver": "overlay",
        "DriverStatus": [],
        "Plugins": {"Volume": [], "Network": engine.networks.driver_names(), "Authorization": None,
                    "Log": ["json-file"]},
        "MemoryLimit": False, "SwapLimit": False, "CpuCfsPeriod": False, "CpuCfsQuota": False,
        "CPUShares": False, "CPUSet": False, "PidsLimit": False, "IPv4Forwarding": True,
        "Debug": False, "NFd": len(os.listdir("/proc/self/fd")), "NGoroutines": 0,
        "SystemTime": "", "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs", "CgroupVersion": "1",
        "NEventsListener": 0, "KernelVersion": platform.release(), "OperatingSystem": _os_name(),
        "OSVersion": "", "OSType": "linux", "Architecture": platform.machine(), "IndexServerAddress": "",
        "RegistryConfig": None, "NCPU": os.cpu_count() or 1, "MemTotal": machine_memory(),
        "DockerRootDir": str(engine.config.data_root), "Name": socket.gethostname(),
        "Labels": [], "ExperimentalBuild": False, "ServerVersion": __version__,
        "Runtimes": {"runc": {"path": "runc"}}, "DefaultRuntime": "runc",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                  "Error": "", "RemoteManagers": None},
        "ClusterStore": engine.config.cluster.url if engine.config.cluster else "",
        "ClusterAdvertise": engine.networks.cluster_advertise(),
        "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "",
        "SecurityOptions": [], "Warnings": None,
    })


ROUTES: list[Route] = [
    ("GET", "/_ping", ping),
    ("GET", "/version", version),
    ("GET", "/info", info),
]


def routes(router: Router, engine: Engine) -> None:
    router.add_all(engine, ROUTES)
