"""What `docker ps -a` shows follows every change of a container (issue #11, requirement 2: lists keep the
states they read in memory between the engine's changes, engine/listed_states.py), and a list answers
while a slow stop is pending. No timing is asserted: only what a list shows after what returned."""

from __future__ import annotations

import json

from .conftest import pending_stop

BOUND_SECONDS = 60  # every wait below is bounded
STUBBORN = "trap 'echo got-term' TERM; echo ready; while true; do sleep 1; done"


def _listed(daemon, name: str) -> dict[str, str]:
    """The container's line of `docker ps -a` (absent: an empty dict)."""
    lines = daemon.docker("ps", "-a", "--no-trunc", "--format", "{{json .}}").stdout.splitlines()
    for doc in (json.loads(line) for line in lines):
        if doc["Names"] == name:
            return doc
    return {}


def test_a_list_answers_during_a_slow_stop_and_agrees_with_inspect(daemon) -> None:
    daemon.docker("network", "create", "--subnet", "10.78.0.0/24", "listed")
    daemon.docker("run", "-d", "--name", "stubborn", "--network", "listed", "-p", "8080:80", "busybox", "sh", "-c", STUBBORN)
    shown = _listed(daemon, "stubborn")
    inspected = json.loads(daemon.docker("inspect", "stubborn").stdout)[0]
    assert shown["State"] == "running" and shown["Status"].startswith("Up")
    assert shown["ID"] == inspected["Id"] and shown["Networks"] == "listed"
    assert "0.0.0.0:8080->80/tcp" in shown["Ports"]
    ip = inspected["NetworkSettings"]["Networks"]["listed"]["IPAddress"]
    assert ip.startswith("10.78.0.")

    with pending_stop(daemon, "stubborn", BOUND_SECONDS) as stop:  # the stop is now waiting
        assert _listed(daemon, "stubborn")["State"] == "running"
        assert "listed" in daemon.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert stop.poll() is None  # both lists answered while the stop was still waiting
        daemon.docker("kill", "stubborn")
        assert stop.wait(BOUND_SECONDS) == 0
    shown = _listed(daemon, "stubborn")
    assert shown["State"] == "exited" and shown["Status"].startswith("Exited (137)") and shown["Ports"] == ""


def test_a_list_shows_each_change_once_it_returned(daemon) -> None:
    """Start, pause, unpause, an exit of its own, a start again, rm: each seen by the next list."""
    daemon.docker("create", "--name", "changing", "busybox", "sh", "-c", "sleep 2; exit 3")
    assert _listed(daemon, "changing")["State"] == "created"
    for _ in range(2):  # a second run: the kept exited state gives way to running again
        daemon.docker("start", "changing")
        assert _listed(daemon, "changing")["State"] in ("running", "exited")  # it may be quick
        assert daemon.docker("wait", "changing").stdout.strip() == "3"
        shown = _listed(daemon, "changing")
        assert shown["State"] == "exited" and shown["Status"].startswith("Exited (3)")

    daemon.docker("run", "-d", "--name", "paused", "busybox", "sleep", "300")
    assert _listed(daemon, "paused")["Status"].startswith("Up")
    daemon.docker("pause", "paused")
    shown = _listed(daemon, "paused")
    assert shown["State"] == "paused" and shown["Status"].endswith("(Paused)")
    daemon.docker("unpause", "paused")
    shown = _listed(daemon, "paused")
    assert shown["State"] == "running" and not shown["Status"].endswith("(Paused)")
    daemon.docker("pause", "paused")
    daemon.docker("kill", "paused")  # thawed to die
    assert _listed(daemon, "paused")["State"] == "exited"

    daemon.docker("rm", "changing", "paused")
    assert daemon.docker("ps", "-aq").stdout.split() == []
