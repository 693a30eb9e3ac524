"""The bgp agent's stop with a BIRD that does not answer (stopped with SIGSTOP) or is dead: SIGTERM ends the
agent within its bound, and nothing of BIRD is left (process, socket, pid file, routes); a BIRD that answers
is left running, as the agent's restarts need (test_bgp.py). A silent BIRD is never run beside another. And
a stop during the start, while etcd does not answer, is not held by the start's calls."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from muslin.fabric.agent import SHUTDOWN_SECONDS
from muslin.lab.rig import Rig, in_ns, wait_for
from tests.fabric.conftest import processes_naming
from tests.fabric.test_bgp import bird_of, start_bgp

pytestmark = pytest.mark.root

# No reconcile round within a test (the first is a minute after start): only the stop deals with the BIRD
# these tests break, not the supervision that restarts it (tested below on its own).
QUIET = "--iptables-resync=60"


def bgp_agent(rig: Rig, *extra: str) -> int:
    """One node's agent running with its BIRD; BIRD's pid."""
    rig.put_config({"Network": "172.21.0.0/16", "Backend": {"Type": "bgp"}})
    rig.start_agent(0, *extra)
    rig.wait_subnet_file(0)
    wait_for(lambda: "BGP peers from etcd" in rig.log(0), 10, "the agent's loops running")
    pid = bird_of(rig, 0).pid()
    assert pid is not None
    assert "proto bird" in in_ns(rig.hosts[0].name, "ip", "route", "show", "type", "blackhole").stdout
    return pid


@pytest.fixture
def released() -> Iterator[list[int]]:
    """BIRD pids a test stopped with SIGSTOP: killed at the end if a failure left them so."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def stop_timed(rig: Rig) -> float:
    """SIGTERM the agent; seconds until it exited, which it must do cleanly."""
    started = time.monotonic()
    proc = rig.agents[0]
    proc.terminate()
    try:
        code = proc.wait(15)
    finally:
        rig.stop_agent(0, kill=True)
    assert code == 0, rig.log(0)
    return time.monotonic() - started


def assert_nothing_of_bird_left(rig: Rig) -> None:
    bird = bird_of(rig, 0)
    wait_for(lambda: not processes_naming(rig.bird_dir(0)), 2, "BIRD gone")
    assert not bird.socket_path.exists() and not bird.pid_path.exists()
    assert in_ns(rig.hosts[0].name, "ip", "route", "show", "proto", "bird").stdout == ""
    assert "MUSLIN-FLANNEL" not in in_ns(rig.hosts[0].name, "iptables-save").stdout


def test_stop_while_waiting_on_a_stopped_bird(make_rig, released) -> None:
    rig = make_rig(1)
    pid = bgp_agent(rig, QUIET)
    os.kill(pid, signal.SIGSTOP)
    released.append(pid)
    # The agent reads BIRD's sessions every second: its kernel thread is now waiting on the silent socket.
    wait_for(lambda: "BIRD does not answer" in rig.log(0), 10, "the agent waiting on BIRD")
    time.sleep(1)  # and waiting again, in the middle of its next 5 s wait
    took = stop_timed(rig)
    assert took < SHUTDOWN_SECONDS, f"stopping took {took:.1f} s:\n{rig.log(0)}"
    assert_nothing_of_bird_left(rig)
    assert f"BIRD (pid {pid}) does not answer on {bird_of(rig, 0).socket_path}: stopping it" in rig.log(0)


def test_stop_after_bird_died_removes_what_it_left(make_rig) -> None:
    rig = make_rig(1)
    pid = bgp_agent(rig, QUIET)
    os.kill(pid, signal.SIGKILL)  # its routes stay in the kernel, its socket and pid file on disk
    wait_for(lambda: "BIRD does not answer" in rig.log(0), 10, "the agent seeing BIRD gone")
    took = stop_timed(rig)
    assert took < SHUTDOWN_SECONDS, f"stopping took {took:.1f} s:\n{rig.log(0)}"
    assert_nothing_of_bird_left(rig)
    assert "removed route 172.21." in rig.log(0)


def test_stop_leaves_an_answering_bird_running(make_rig) -> None:
    rig = make_rig(1)
    pid = bgp_agent(rig, QUIET)
    stop_timed(rig)
    bird = bird_of(rig, 0)
    assert bird.pid() == pid and bird.answering()
    bird.stop()
    assert_nothing_of_bird_left(rig)


def test_silent_bird_is_killed_before_another_starts(make_rig, released) -> None:
    rig = make_rig(1)
    pid = bgp_agent(rig)  # a reconcile round every second: supervision on
    os.kill(pid, signal.SIGSTOP)
    released.append(pid)
    wait_for(lambda: "graceful restart recovery" in rig.log(0), 20, "a new BIRD")
    new = bird_of(rig, 0).pid()
    assert new not in (None, pid)
    pgrep = subprocess.run(["pgrep", "-f", f"bird -c {rig.bird_dir(0)}/"], capture_output=True, text=True)
    assert [int(p) for p in pgrep.stdout.split()] == [new], "a silent BIRD beside the new one"
    assert f"BIRD (pid {pid}) does not answer on {bird_of(rig, 0).socket_path}: killing it to start another" \
        in rig.log(0)
    stop_timed(rig)
    bird_of(rig, 0).stop()
    assert_nothing_of_bird_left(rig)


def test_stop_while_starting_against_a_frozen_etcd(make_rig) -> None:
    """etcd that accepts connections and never answers (every member SIGSTOPped): each call waits for its
    timeout on every member in turn, and the stop must not wait for the start's call to give up."""
    rig = make_rig(2)
    rig.put_config({"Network": "172.21.0.0/16", "Backend": {"Type": "bgp"}})
    stopped: list[int] = []
    try:
        for pid in rig.etcd.pids():
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        rig.start_agent(0)
        wait_for(lambda: "using interface" in rig.log(0), 10, "the agent reading its config")
        took = stop_timed(rig)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert took < SHUTDOWN_SECONDS, f"stopping took {took:.1f} s:\n{rig.log(0)}"
    assert not bird_of(rig, 0).pid_path.exists()  # stopped before it had a lease: no BIRD was started
