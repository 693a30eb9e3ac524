"""runc as the shim runs it: spawned without blocking the loop, and the children it leaves us reaped.

The shim is a child subreaper, so the container's init and exec processes become its children when
their runc exits; their exits are matched to the runc spawn that started them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable

PATH = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
EARLY_EXITS_KEPT = 64  # runc spawns an unclaimed exit is kept for


class Runc:
    def __init__(self, runc: str, root: str) -> None:
        self.base = [runc, "--root", root]
        self.on_child_exit: dict[int, Callable[[int], None]] = {}  # pid -> callback(wait status)
        # Exits of pids runc had not told us about yet (a process can end before its runc does), with
        # the number of runc spawns at the time: an exit older than a process's runc is not its own.
        self.early_exits: dict[int, tuple[int, int]] = {}
        self.spawned = 0

    def spawn(self, args: list[str], stdio: list[int], on_exit: Callable[[int, str, int], None]) -> str:
        """Start runc without blocking; ``on_exit(status, log_path, spawn number)`` runs when it ends.

        runc gets our directory as its fd 3: it chdirs into the bundle, and an absolute path to a
        console socket under a deep state directory may not fit in a socket address, but
        ``/proc/self/fd/3/NAME`` always does.
        """
        self.spawned += 1
        log_path = f"runc-{self.spawned}.log"
        argv = [*self.base, "--log", log_path, "--log-format", "json", *args]
        here = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
        actions.append((os.POSIX_SPAWN_DUP2, here, 3))
        try:
            pid = os.posix_spawn(argv[0], argv, PATH, file_actions=actions)
        finally:
            os.close(here)
        seq = self.spawned
        self.on_child_exit[pid] = lambda status: on_exit(status, log_path, seq)
        return log_path

    def run_blocking(self, args: list[str]) -> None:
        """Run runc to its end with no output (the loop is over: nothing else waits on children)."""
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        argv = [*self.base, *args]
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        actions = [(os.POSIX_SPAWN_DUP2, null, n) for n in range(3)]
        try:
            pid = os.posix_spawn(argv[0], argv, PATH, file_actions=actions)
        except OSError as exc:  # muslind's recovery deletes what runc left
            print(f"running runc {args[0]}: {exc}", file=sys.stderr)
            return
        finally:
            os.close(null)
        os.waitpid(pid, 0)

    @staticmethod
    def error(log_path: str) -> str:
        """The last error runc logged."""
        message = "runc failed"
        try:
            with open(log_path) as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if entry.get("level") in ("error", "fatal"):
                        message = entry.get("msg", message)
        except FileNotFoundError:
            pass
        return message

    def reap(self) -> None:
        """Collect every child that has exited and call what waits for it."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            callback = self.on_child_exit.pop(pid, None)
            if callback is None:
                self.early_exits[pid] = (self.spawned, status)
                for old in [p for p, (seq, _) in self.early_exits.items() if seq < self.spawned - EARLY_EXITS_KEPT]:
                    del self.early_exits[old]  # orphans reparented to us that nobody will ask about
            else:
                callback(status)

    def watch_pid(self, pid: int, since: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(status)`` when ``pid``, started by runc spawn number ``since``, exits."""
        seq, status = self.early_exits.pop(pid, (-1, 0))
        if seq >= since:
            callback(status)
        else:
            self.on_child_exit[pid] = callback

    def collect(self, pid: int) -> int:
        """Wait for ``pid`` now, its callback dropped: the kernel kills everything left in the pid
        namespace with the container's init. Returns its wait status."""
        self.on_child_exit.pop(pid, None)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = self.early_exits.pop(pid, (0, signal.SIGKILL))[1]
        return status
