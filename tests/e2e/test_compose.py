"""docker-compose (Debian's 1.29.2, the Python one, on the system python3) drives muslind: a service on
two networks, one of them internal, aliases, depends_on, ports, restart: always, scale, a bind mount and
a named volume, names resolved between services, ps/logs/exec/stop/start/restart, and down -v removing
every container, network, volume, link and rule it made."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from muslin.kernel import netns

from ..firewall_view import Forward
from ..tools import require
from .test_containers_cli import _link_outside

pytestmark = pytest.mark.root

PROJECT = "app"
APP = """\
version: "3.8"
services:
  db:
    image: busybox
    command: sh -c 'echo db-up; exec sleep 3600'
    stop_signal: SIGKILL
    volumes: ["data:/data"]
    networks:
      back:
        aliases: [database]
  web:
    image: busybox
    command: httpd -f -p 80 -h /www
    volumes: ["./site:/www:ro"]
    stop_signal: SIGKILL
    depends_on: [db]
    restart: always
    ports:
      - "8088:80"
    networks:
      front:
      back:
        aliases: [www]
  worker:
    image: busybox
    command: sleep 3600
    stop_signal: SIGKILL
    networks: [back]
  edge:
    image: busybox
    command: sleep 3600
    stop_signal: SIGKILL
    networks: [front]
networks:
  front: {}
  back:
    internal: true
volumes:
  data: {}
"""

Compose = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def compose(daemon, tmp_path: Path) -> Iterator[Compose]:
    """``docker-compose -p app ARGS`` in a project directory, against the test's muslind; ``down`` at the end."""
    (tmp_path / "docker-compose.yml").write_text(APP)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("hello-from-web\n")  # web serves it from a bind mount

    def run(*args: str, check: bool = True, file: str = "docker-compose.yml") -> subprocess.CompletedProcess:
        proc = subprocess.run([require("docker-compose"), "-p", PROJECT, "-f", file, "--ansi", "never", *args],
                              cwd=tmp_path, env={**daemon.env, "COMPOSE_HTTP_TIMEOUT": "120"},
                              capture_output=True, text=True, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return proc

    yield run
    if daemon.proc and daemon.proc.poll() is None:
        run("down", "-v", "--remove-orphans", check=False)


def _inspect(daemon, *names: str) -> list[dict]:
    return json.loads(daemon.docker("inspect", *names).stdout)


def _addresses(doc: dict) -> dict[str, str]:
    """network name -> the container's address on it."""
    return {name: ep["IPAddress"] for name, ep in doc["NetworkSettings"]["Networks"].items()}


def _resolved(compose: Compose, service: str, name: str) -> set[str]:
    """The addresses the embedded DNS gives ``service``'s container for ``name``."""
    out = compose("exec", "-T", service, "nslookup", name, check=False).stdout
    answers = out.split("Name:", 1)[1] if "Name:" in out else ""
    return {line.split()[1] for line in answers.splitlines() if line.startswith("Address")}


def _from_outside(outside: str, port: int) -> str:
    return subprocess.run(["nsenter", f"--net={netns.path_for(outside)}", "timeout", "5", "busybox", "wget",
                           "-qO-", f"http://10.99.0.1:{port}/"], capture_output=True, text=True).stdout


def _answers(outside: str, port: int, within: float = 15) -> bool:
    deadline = time.monotonic() + within
    while "hello-from-web" not in _from_outside(outside, port) and time.monotonic() < deadline:
        time.sleep(0.2)
    return "hello-from-web" in _from_outside(outside, port)


def _kernel_state(daemon) -> tuple[list[str], list[str], object]:
    """The daemon namespace's links, iptables rules (without counters) and the firewall's own rules."""
    links = sorted(line.split(": ")[1].split("@")[0] for line in daemon.sh("ip", "-o", "link").splitlines())
    rules = [line for line in daemon.sh("iptables-save").splitlines() if not line.startswith(("#", ":"))]
    return links, sorted(rules), daemon.firewall.snapshot(ordered=False)


def _networks(daemon) -> set[str]:
    return set(daemon.docker("network", "ls", "--format", "{{.Name}}").stdout.split())


def test_a_compose_app_on_two_networks_one_internal_end_to_end(daemon, compose, make_netns, tmp_path: Path) -> None:
    outside = _link_outside(daemon, make_netns)
    before = _kernel_state(daemon)

    up = compose("up", "-d")
    assert "Creating network \"app_back\"" in up.stderr and "Creating network \"app_front\"" in up.stderr
    db, web, worker, edge = _inspect(daemon, "app_db_1", "app_web_1", "app_worker_1", "app_edge_1")
    # depends_on: db runs before web is started.
    assert db["State"]["StartedAt"] < web["State"]["StartedAt"]
    assert web["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert web["Config"]["Labels"]["com.docker.compose.service"] == "web"
    (back,) = json.loads(daemon.docker("network", "inspect", "app_back").stdout)
    assert back["Internal"] is True and back["Labels"]["com.docker.compose.network"] == "back"
    web_at = _addresses(web)
    assert set(web_at) == {"app_front", "app_back"}

    # The port is published on web's front endpoint (the internal network never gives the gateway) and
    # answers from another namespace.
    assert daemon.firewall.forwards() == [Forward("tcp", 8088, f"{web_at['app_front']}:80")]
    assert _answers(outside, 8088)
    assert "default via" not in daemon.docker("exec", "app_worker_1", "ip", "route").stdout  # internal only

    # Names between services: service names, aliases, container names, on the networks they share only.
    assert _resolved(compose, "worker", "web") == {web_at["app_back"]}
    assert _resolved(compose, "worker", "www") == {web_at["app_back"]}
    assert _resolved(compose, "web", "database") == {_addresses(db)["app_back"]}
    assert _resolved(compose, "web", "app_db_1") == {_addresses(db)["app_back"]}
    assert _resolved(compose, "edge", "web") == {web_at["app_front"]}
    assert _resolved(compose, "edge", "db") == set()  # db is on the internal network alone
    assert _resolved(compose, "web", "edge") == {_addresses(edge)["app_front"]}
    assert worker["Name"] == "/app_worker_1"

    # Scale: three workers, each by its container name, all three behind the service name.
    scaled = compose("up", "-d", "--scale", "worker=3")
    assert "Creating app_worker_3" in scaled.stderr
    workers = _inspect(daemon, "app_worker_1", "app_worker_2", "app_worker_3")
    worker_ips = {_addresses(w)["app_back"] for w in workers}
    assert len(worker_ips) == 3
    assert _resolved(compose, "web", "worker") == worker_ips
    for w in workers:
        assert _resolved(compose, "web", w["Name"].lstrip("/")) == {_addresses(w)["app_back"]}

    # ps, logs, exec.
    ps = compose("ps").stdout
    for name in ("app_db_1", "app_web_1", "app_edge_1", "app_worker_1", "app_worker_2", "app_worker_3"):
        assert any(line.startswith(name) and " Up " in line for line in ps.splitlines()), (name, ps)
    assert "0.0.0.0:8088->80/tcp" in ps
    assert "db-up" in compose("logs", "--no-color", "db").stdout
    assert compose("exec", "-T", "web", "cat", "/www/index.html").stdout == "hello-from-web\n"
    assert compose("exec", "-T", "web", "touch", "/www/x", check=False).returncode != 0  # bound read-only
    compose("exec", "-T", "db", "sh", "-c", "echo kept > /data/f")
    assert "app_data" in daemon.docker("volume", "ls", "-q").stdout.split()
    assert compose("exec", "-T", "web", "sh", "-c", "exit 3", check=False).returncode == 3

    # stop, start, restart: the port's forward goes with the container and comes back.
    compose("stop", "web")
    stopped = compose("ps", "web").stdout
    assert "Exit" in stopped and "80/tcp" not in stopped  # a stopped container shows no ports, as dockerd's
    assert "8088" not in daemon.firewall.listing() and daemon.firewall.forwards() == []
    compose("start", "web")
    assert _answers(outside, 8088)
    compose("restart", "web")
    assert _answers(outside, 8088)

    # restart: always brings web back after its process dies, and the port answers again.
    (web,) = _inspect(daemon, "app_web_1")
    os.kill(web["State"]["Pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _inspect(daemon, "app_web_1")[0]["RestartCount"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    (web,) = _inspect(daemon, "app_web_1")
    assert web["RestartCount"] >= 1
    assert _answers(outside, 8088, within=20)

    # A service gone from the file: its containers are orphans that --remove-orphans removes.
    without_worker = APP.replace(APP[APP.index("  worker:"):APP.index("  edge:")], "")
    (tmp_path / "no-worker.yml").write_text(without_worker)
    orphans = compose("up", "-d", "--remove-orphans", file="no-worker.yml")
    assert "Removing orphan container \"app_worker_3\"" in orphans.stderr
    assert not daemon.docker("ps", "-aq", "--filter", "name=app_worker").stdout.strip()

    # down -v: every container, network, veth, bridge and rule of the project is gone.
    compose("down", "-v", "--remove-orphans")
    assert daemon.docker("ps", "-aq").stdout.strip() == ""
    assert _networks(daemon) == {"bridge", "host", "none"}
    assert daemon.docker("volume", "ls", "-q").stdout.strip() == ""
    assert _kernel_state(daemon) == before


def test_compose_down_after_a_failed_up_leaves_nothing(daemon, compose) -> None:
    """A port clash fails ``up`` halfway (dockerd's message); ``down`` still removes all it made."""
    before = _kernel_state(daemon)
    daemon.docker("run", "-d", "--name", "squatter", "-p", "8088:80", "busybox", "sleep", "300")
    failed = compose("up", "-d", check=False)
    assert failed.returncode != 0 and "port is already allocated" in failed.stderr + failed.stdout
    daemon.docker("rm", "-f", "squatter")
    compose("down", "--remove-orphans")
    assert daemon.docker("ps", "-aq").stdout.strip() == ""
    assert _networks(daemon) == {"bridge", "host", "none"}
    assert _kernel_state(daemon) == before
