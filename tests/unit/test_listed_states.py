"""The states container lists show (engine/listed_states.py): kept between the engine's changes, never
a state older than a change, a running state only while an exit monitor follows the container."""

from __future__ import annotations

import threading

import pytest

from muslin.engine.listed_states import ListedStates
from muslin.runtime import NoSuchContainer, ProcessConfig, State

BOUND = 10.0  # seconds: only ever reached when the behaviour is wrong


def _state(cid: str, status: str) -> State:
    running = status in ("running", "paused")
    return State(id=cid, status=status, running=running, pid=42 if running else 0, exit_code=0, error="",
                 created_at=1, started_at=2 if status != "created" else 0, finished_at=3 if status == "exited" else 0,
                 image_id="sha256:img", process=ProcessConfig(args=["true"], env=[], cwd="/", user=""),
                 tty=False, open_stdin=False, shim_pid=7, paused=status == "paused")


class Files:
    """The runtime's run files as the states read them: what they say now, and how often they were read."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.reads = 0

    def read(self, cid: str) -> State:
        self.reads += 1
        if cid not in self.status:
            raise NoSuchContainer(cid)
        return _state(cid, self.status[cid])


def test_a_state_is_read_once_until_the_engine_changes_it() -> None:
    files = Files()
    files.status["a"] = "created"
    states = ListedStates(files.read, followed=lambda cid: True)
    assert states.get("a").status == "created"
    assert states.get("a").status == "created"
    assert files.reads == 1
    files.status["a"] = "running"
    states.changed("a")
    assert states.get("a").status == "running"
    assert states.get("a").status == "running"
    assert files.reads == 2


def test_a_running_state_nobody_follows_is_read_each_time() -> None:
    """Its exit would go unnoticed: the files are the only news of it."""
    files = Files()
    files.status["a"] = "running"
    followed = {"a": False}
    states = ListedStates(files.read, followed=lambda cid: followed[cid])
    assert states.get("a").running
    files.status["a"] = "exited"
    assert states.get("a").status == "exited"
    assert files.reads == 2
    files.status["a"] = "running"
    followed["a"] = True
    states.changed("a")
    assert states.get("a").running and states.get("a").running
    assert files.reads == 3


def test_a_read_that_overlaps_a_change_is_not_kept() -> None:
    """A list reads the old files, the engine changes the container and says so, then the list's read
    ends: what it read must not stand for the container afterwards."""
    files = Files()
    files.status["a"] = "running"
    reading, changed = threading.Event(), threading.Event()

    def slow_read(cid: str) -> State:
        old = files.read(cid)
        reading.set()
        assert changed.wait(BOUND)
        return old

    states = ListedStates(slow_read, followed=lambda cid: True)
    got: list[State] = []
    reader = threading.Thread(target=lambda: got.append(states.get("a")))
    reader.start()
    assert reading.wait(BOUND)
    files.status["a"] = "exited"
    states.changed("a")
    changed.set()
    reader.join(BOUND)
    assert got[0].status == "running"  # that list showed what it read
    assert states.get("a").status == "exited"  # the next one reads afresh


def test_a_removed_container_leaves_nothing_kept() -> None:
    files = Files()
    files.status["a"] = "exited"
    states = ListedStates(files.read, followed=lambda cid: True)
    assert states.get("a").status == "exited"
    del files.status["a"]
    states.changed("a")
    with pytest.raises(NoSuchContainer):
        states.get("a")
    with pytest.raises(NoSuchContainer):
        states.get("a")
    assert files.reads == 3  # no failure kept either: a container of that id would be read
