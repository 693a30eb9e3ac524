"""The shim process's entry point: the spawner, and what a forked shim does before its loop runs."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback

from .protocol import CONFIG_NAME, ERR_NAME, PID_NAME
from .state import Shim

PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2


def run_shim(state_dir: str) -> None:
    """Be the shim of the container whose state is in ``state_dir`` (the caller has detached us)."""
    os.chdir(state_dir)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(PR_SET_NAME, b"muslin-shim", 0, 0, 0)  # what ps -o comm and top show
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    err = os.open(ERR_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.dup2(err, 2)
    os.close(err)
    with open(CONFIG_NAME) as f:
        config = json.load(f)
    shim = Shim(config)
    with open(PID_NAME, "w") as f:
        f.write(str(os.getpid()))
    os.write(1, b"ready\n")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    try:
        shim.run()
    except BaseException:  # muslind stopped listening at `ready`: shim.err is where this can be read
        traceback.print_exc()
        sys.stderr.flush()


def leave_pins_behind(pin_dirs: list[str]) -> None:
    """Move to a mount namespace of our own without the pins under ``pin_dirs``, so the copy runc makes
    of it for each container stays small (see the runtime's docstring).

    Only the pin directories change: each is made private here (new pins no longer propagate in) and
    the pins it holds are unmounted, which being children of a private mount propagates nowhere. Every
    other mount keeps its propagation, so a container's ``rshared`` bind still reaches the daemon's
    namespace. Whatever cannot be done only costs time: the paths runc is given resolve the same in
    both namespaces."""
    if not pin_dirs:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        return
    private = [d for d in pin_dirs if libc.mount(None, d.encode(), None, MS_REC | MS_PRIVATE, None) == 0]
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in reversed(points):  # children before parents
        if any(point.startswith(d.rstrip("/") + "/") for d in private):
            libc.umount2(point.encode(), MNT_DETACH)


def serve_spawner() -> None:
    """Fork a shim for each state directory read from stdin; exit when stdin closes.

    The spawner has every module a shim needs already imported, so a shim is ready in a few
    milliseconds instead of a Python start-up. Each shim is forked twice and put in its own session,
    so it is reparented away from the spawner and from muslind: either may die, the shim runs on.
    Each request gets one line on stdout: ``ready`` from the new shim, or ``error ...``.
    """
    os.chdir("/")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    leave_pins_behind(sys.argv[2:])
    os.write(1, b"ready\n")
    pending = b""
    while True:
        data = os.read(0, 4096)
        if not data:
            return
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            child = os.fork()
            if child == 0:
                try:
                    os.setsid()
                    if os.fork() == 0:
                        run_shim(line.decode())
                except BaseException as exc:  # reported to muslind, never raised into the spawner's loop
                    os.write(1, f"error {type(exc).__name__}: {exc}\n".replace("\n", " ").encode() + b"\n")
                finally:
                    os._exit(0)
            os.waitpid(child, 0)
