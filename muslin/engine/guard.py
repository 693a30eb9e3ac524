"""Keeping muslind's firewall rules in place when someone else removes them.

A firewall reload (firewalld, ``iptables-restore`` of a saved file, ``iptables -F``) wipes the rules of
every network and published port, and Docker leaves them wiped until it restarts (moby #35043). muslind
listens for nf_tables changes in its namespace and, once they settle, puts back whatever is missing.
Its own changes are announced too; the check after them finds nothing missing and commits nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from muslin.kernel import nfwatch

log = logging.getLogger(__name__)

QUIET_SECONDS = 0.2  # a burst of changes (a reload is several transactions) is checked once
LONGEST_SECONDS = 2.0  # ... unless it never ends: a chatty ruleset is still checked this often
LONGEST_BACKOFF_SECONDS = 60.0  # rules removed again after every restore: check at most this rarely
FIGHT_WINDOW_SECONDS = 2 * LONGEST_BACKOFF_SECONDS  # restores closer than this: one fight (outlasts any pause)


class ChangeSource(Protocol):
    def fileno(self) -> int: ...
    def drain(self) -> int: ...
    def close(self) -> None: ...


class FirewallGuard:
    """Watches the ruleset from the event loop and runs ``restore`` (on the engine's worker) once a
    burst of changes has settled."""

    def __init__(self, restore: Callable[[], Awaitable[int]],
                 changes: Callable[[], ChangeSource] = nfwatch.RulesetChanges,
                 quiet: float = QUIET_SECONDS, longest: float = LONGEST_SECONDS) -> None:
        """``restore`` puts back what is missing and returns how many rules that was."""
        self._restore = restore
        self._open_changes = changes
        self._quiet, self._longest = quiet, longest
        self._restores_in_a_row = 0
        self._last_restore = float("-inf")
        self._not_before = 0.0
        self._changes: ChangeSource | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._first = self._last = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self._changes = self._open_changes()
        except OSError as exc:  # no nf_tables notifications here (iptables-legacy, no nfnetlink)
            log.warning("firewall changes cannot be watched (%s): rules removed by others stay removed", exc)
            return
        self._loop.add_reader(self._changes.fileno(), self._readable)

    def close(self) -> None:
        if self._changes is not None and self._loop is not None:
            self._loop.remove_reader(self._changes.fileno())
            self._changes.close()
            self._changes = None
        if self._task is not None:
            self._task.cancel()

    def _readable(self) -> None:
        assert self._changes is not None and self._loop is not None
        if not self._changes.drain():
            return
        self._last = self._loop.time()
        if self._task is None or self._task.done():
            self._first = self._last
            self._task = self._loop.create_task(self._check_when_settled())

    async def _check_when_settled(self) -> None:
        assert self._loop is not None
        while True:
            while (delay := max(min(self._last + self._quiet, self._first + self._longest), self._not_before)
                    - self._loop.time()) > 0:
                await asyncio.sleep(delay)
            started = self._loop.time()
            try:
                restored = await self._restore()
            except Exception:
                log.exception("could not check the firewall rules")
                restored = 0
            self._pace(restored)
            if self._last < started:
                return
            self._first = self._loop.time()  # more changes came in meanwhile: look once more

    def _pace(self, restored: int) -> None:
        """Rules that are removed again after each restore mean something else manages this firewall
        and fights us: back off (doubling) instead of trading commits with it forever. A check that
        finds nothing missing does not end the fight (each restore of ours is followed by one, for our
        own commit); only a restore long after the previous one starts the count afresh."""
        assert self._loop is not None
        if not restored:
            return
        now = self._loop.time()
        self._restores_in_a_row = 1 if now - self._last_restore > FIGHT_WINDOW_SECONDS else self._restores_in_a_row + 1
        self._last_restore = now
        log.warning("put back %d firewall rules that were removed behind muslind's back (a firewall reload?)",
                    restored)
        if self._restores_in_a_row > 2:
            pause = min(self._quiet * 2 ** self._restores_in_a_row, LONGEST_BACKOFF_SECONDS)
            self._not_before = now + pause
            log.warning("the rules were removed %d times in a row: is another tool managing this firewall? "
                        "next check in %.1f s at the earliest", self._restores_in_a_row, pause)
