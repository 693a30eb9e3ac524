"""The pieces the bgp agent's bounded stop rests on: its kernel thread (calls in order, queued ones
cancellable, never joined at exit) and BIRD's control exchange bounded as a whole."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import CancelledError

import pytest

from muslin.fabric.bird import BirdError, command
from muslin.fabric.worker import KernelThread


def test_kernel_thread_runs_calls_in_order_and_skips_cancelled_ones() -> None:
    thread = KernelThread()
    running, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def block() -> bool:
        running.set()
        return release.wait(5)

    blocking = thread.submit(block)
    assert running.wait(5)
    queued = thread.submit(ran.append, "cancelled")
    after = thread.submit(ran.append, "after")
    assert queued.cancel() and not blocking.cancel()  # the running call cannot be
    release.set()
    after.result(5)
    with pytest.raises(CancelledError):
        queued.result(0)
    assert ran == ["after"] and blocking.result() is True
    failing = thread.submit(int, "x")
    with pytest.raises(ValueError):
        failing.result(5)
    thread.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        thread.submit(ran.append, "late")


def test_kernel_thread_is_a_daemon_and_shutdown_need_not_wait_for_a_stuck_call() -> None:
    thread = KernelThread("stuck")
    stuck = threading.Event()
    thread.submit(stuck.wait, 30)
    queued = thread.submit(time.sleep, 0)
    started = time.monotonic()
    thread.shutdown(wait=False, cancel_futures=True)
    assert time.monotonic() - started < 1 and queued.cancelled()
    assert thread._thread.daemon  # the interpreter exits without joining it
    stuck.set()


@pytest.mark.parametrize("greets", [False, True])
def test_control_command_is_bounded_as_a_whole(tmp_path, greets: bool) -> None:
    """A BIRD that accepts and never answers (or greets, then never replies) costs timeout, no more."""
    path = str(tmp_path / "bird.ctl")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen()

        def accept() -> None:
            conn, _ = server.accept()
            if greets:
                conn.sendall(b"0001 BIRD 2.0.12 ready.\n")
                for _ in range(20):  # a byte now and then: each read finishes before its own timeout
                    time.sleep(0.05)
                    try:
                        conn.sendall(b"1002-")
                    except OSError:
                        break
            time.sleep(1.5)
            conn.close()

        peer = threading.Thread(target=accept)
        peer.start()
        started = time.monotonic()
        with pytest.raises((OSError, BirdError)):
            command(path, "show protocols", timeout=0.5)
        took = time.monotonic() - started
        peer.join()
    assert took < 0.8
