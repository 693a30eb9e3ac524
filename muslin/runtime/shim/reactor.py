"""The shim's event loop: one selector over the listening socket, clients, the processes' pipes or pty
masters, and SIGCHLD (through a wakeup pipe), so one thread serves them all without blocking."""

from __future__ import annotations

import os
import selectors
import signal
import traceback
from collections.abc import Callable

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Source:
    """What the loop calls for a registered file: ``ready`` with the selector's events; ``failed`` when
    ``ready`` raised (one bad connection or stream must not take the container's shim down)."""

    def ready(self, events: int) -> None:
        raise NotImplementedError

    def failed(self) -> None:
        raise NotImplementedError


class FdWatch(Source):
    """What the loop does when one fd is ready: a pty master is both an output read and a stdin written,
    and a selector takes each fd once, so the two interests share one registration."""

    def __init__(self, reactor: "Reactor", fd: int) -> None:
        self.reactor = reactor
        self.fd = fd
        self.handlers: dict[int, Callable[[], None]] = {}  # selector event -> what to call

    @property
    def events(self) -> int:
        mask = 0
        for event in self.handlers:
            mask |= event
        return mask

    def ready(self, events: int) -> None:
        for event, handler in list(self.handlers.items()):
            if events & event and self.handlers.get(event) is handler:  # an earlier handler may drop it
                handler()

    def failed(self) -> None:
        self.reactor.unwatch(self)


class Reader(Source):
    """A file read for as long as the shim listens (its socket, the SIGCHLD pipe): kept after a failure."""

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self.on_ready = on_ready

    def ready(self, events: int) -> None:
        self.on_ready()

    def failed(self) -> None:
        pass


class Reactor:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.fd_watches: dict[int, FdWatch] = {}
        self.stopped = False

    # Sources that manage their own interest (clients).
    def register(self, fileobj: object, events: int, source: Source) -> None:
        self.sel.register(fileobj, events, source)

    def modify(self, fileobj: object, events: int, source: Source) -> None:
        self.sel.modify(fileobj, events, source)

    def unregister(self, fileobj: object) -> None:
        self.sel.unregister(fileobj)

    def add_reader(self, fileobj: object, on_ready: Callable[[], None]) -> None:
        self.sel.register(fileobj, READ, Reader(on_ready))

    def watch(self, fd: int, event: int, handler: Callable[[], None] | None) -> None:
        """Call ``handler`` when ``fd`` is ready for ``event`` (READ or WRITE); None stops that."""
        entry = self.fd_watches.get(fd)
        if entry is None:
            if handler is None:
                return
            entry = self.fd_watches[fd] = FdWatch(self, fd)
        before = entry.events
        if handler is None:
            entry.handlers.pop(event, None)
        else:
            entry.handlers[event] = handler
        after = entry.events
        if not after:  # an emptied watch the selector still hands out this round calls nothing
            del self.fd_watches[fd]
            self.sel.unregister(fd)
        elif not before:
            self.sel.register(fd, after, entry)
        elif after != before:
            self.sel.modify(fd, after, entry)

    def unwatch(self, entry: FdWatch) -> None:
        """Stop polling an fd altogether (one of its handlers failed)."""
        entry.handlers.clear()  # the selector may still hand it out in the current round
        if self.fd_watches.get(entry.fd) is entry:
            del self.fd_watches[entry.fd]
            self.sel.unregister(entry.fd)

    def on_sigchld(self, handler: Callable[[], None]) -> None:
        """Call ``handler`` in the loop after SIGCHLD arrives (once for any number of signals)."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

        def woken() -> None:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            handler()

        self.add_reader(wake_r, woken)

    def loop_once(self, timeout: float | None) -> None:
        for key, events in self.sel.select(timeout):
            source: Source = key.data
            try:
                source.ready(events)
            except Exception:
                traceback.print_exc()
                source.failed()
            if self.stopped:
                return

    def run(self) -> None:
        while not self.stopped:
            self.loop_once(None)

    def stop(self) -> None:
        self.stopped = True
