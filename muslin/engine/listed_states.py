"""The runtime states that container lists show, kept in memory between the engine's changes.

A container's ``State`` is read from its run files (the bundle's record, started/exit records, the
shim's pid and liveness, the freezer): about forty system calls. A `docker ps -a` of thirty containers
made over two thousand of them on the event loop, and under load each one can wait for the interpreter
lock that the workers hold (about a switch interval each): lists took seconds. Here a state read once is
kept until the engine changes that container (``changed``), so a list reads only what changed since.

What may be kept is what only the engine changes: a created or exited container changes only by a start
or a removal, a running one by its exit (which its exit monitor learns of), a pause, an unpause, a
signal's thaw. A running state is kept only while an exit monitor follows the container
(``followed``): one nobody watches (a watch that could not be opened after a restart of muslind) is
read afresh each time, as before. As in dockerd, a list shows an exit once the engine has learnt of it
(its monitor woke), not before; inspect and the engine's own decisions keep reading the files. This
relies on the shim writing a run's exit record before it tells its waiters (runtime/shim/state.py):
a state read once the monitor woke is the exited one.

Threads: ``get`` runs on the event loop (``followed`` reads the loop's exit monitors), ``changed``
on workers and the loop. A read
that overlaps a change is not kept (the change's token replaced the one the read started with), so a
state older than a change can never be stored after it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from muslin.runtime import State


class ListedStates:
    def __init__(self, read: Callable[[str], State], followed: Callable[[str], bool]) -> None:
        self._read = read
        self._followed = followed
        self._guard = threading.Lock()
        self._states: dict[str, State] = {}
        # A token per container, replaced by each change: a read keeps its state only if the token it
        # started under is still the container's when it ends.
        self._tokens: dict[str, object] = {}

    def get(self, cid: str) -> State:
        """The container's state (NoSuchContainer from the runtime when it is gone)."""
        with self._guard:
            kept = self._states.get(cid)
            if kept is not None:
                return kept
            token = self._tokens.setdefault(cid, object())
        try:
            state = self._read(cid)
        except BaseException:
            with self._guard:
                if self._tokens.get(cid) is token and cid not in self._states:
                    del self._tokens[cid]  # removed (or unreadable): nothing is kept for it
            raise
        if state.running and not self._followed(cid):
            return state
        with self._guard:
            if self._tokens.get(cid) is token:
                self._states[cid] = state
        return state

    def changed(self, cid: str) -> None:
        """The engine changed (or is about to see a change of) the container's run state: forget it.
        A removed container's entry goes with it."""
        with self._guard:
            self._states.pop(cid, None)
            self._tokens.pop(cid, None)
