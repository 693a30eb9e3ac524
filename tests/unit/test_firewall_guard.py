"""The guard's pacing: a burst of ruleset changes is checked once after it settles, a change during a
check gets one more check, and a ruleset that never settles is still checked now and then.

The scenarios run on an event loop with a clock of its own (``VirtualTimeLoop``), so what they assert
about pacing holds however loaded the machine is: real time used to make them fail under load."""

import asyncio
import selectors
import socket

import pytest

from muslin.engine.guard import FirewallGuard


class Pipe:
    """A change source the test pokes by hand: each byte written is one notification."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)

    def fileno(self) -> int:
        return self.reader.fileno()

    def drain(self) -> int:
        try:
            return len(self.reader.recv(4096))
        except BlockingIOError:
            return 0

    def close(self) -> None:
        self.reader.close()
        self.writer.close()

    def poke(self) -> None:
        self.writer.send(b"x")


class VirtualTimeSelector(selectors.DefaultSelector):
    """Never waits: when nothing is ready, the loop's clock jumps to the next timer instead."""

    def __init__(self, loop_clock: list[float]) -> None:
        super().__init__()
        self._clock = loop_clock

    def select(self, timeout: float | None = None) -> list:
        ready = super().select(0)
        if not ready and timeout:
            self._clock[0] += timeout
        elif not ready and timeout is None:
            ready = super().select(1.0)  # nothing scheduled: only a real event can come (bounded)
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._clock = [0.0]
        super().__init__(VirtualTimeSelector(self._clock))

    def time(self) -> float:
        return self._clock[0]


def run_virtual(main) -> list[float]:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())


def run_guard(scenario) -> list[float]:
    """Runs ``scenario(pipe, checks)`` against a guard (quiet 0.05 s, longest 0.4 s); returns when each
    check started, in seconds after the start."""

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        start, checks, pipe = loop.time(), [], Pipe()

        async def restore() -> int:
            checks.append(loop.time() - start)
            await asyncio.sleep(0.05)  # a check takes a while, as iptables-save does
            return 0

        guard = FirewallGuard(restore, changes=lambda: pipe, quiet=0.05, longest=0.4)
        guard.start()
        try:
            await scenario(pipe, checks)
        finally:
            guard.close()
        return checks

    return run_virtual(main)


def test_a_burst_is_checked_once_after_it_settles() -> None:
    async def scenario(pipe, checks) -> None:
        for _ in range(5):
            pipe.poke()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)

    checks = run_guard(scenario)
    assert checks == pytest.approx([0.09])  # the last change + quiet


def test_a_change_during_a_check_gets_one_more() -> None:
    async def scenario(pipe, checks) -> None:
        pipe.poke()
        while not checks:
            await asyncio.sleep(0.005)
        pipe.poke()  # arrives while the first check runs
        await asyncio.sleep(0.4)

    assert len(run_guard(scenario)) == 2


def test_a_ruleset_that_never_settles_is_still_checked() -> None:
    async def scenario(pipe, checks) -> None:
        for _ in range(60):  # a change every 20 ms for 1.2 s: never quiet for 50 ms
            pipe.poke()
            await asyncio.sleep(0.02)

    checks = run_guard(scenario)
    assert 2 <= len(checks) <= 4 and checks[0] == pytest.approx(0.4)  # first check at ``longest``


def test_nothing_changes_nothing_is_checked() -> None:
    async def scenario(pipe, checks) -> None:
        await asyncio.sleep(0.2)

    assert run_guard(scenario) == []


def test_rules_removed_after_every_restore_make_it_back_off() -> None:
    """Another tool removes our rules 150 ms after each restore. Each restore is a commit of ours and
    notifies too, so a check that finds nothing missing follows it: that must not end the fight."""

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        start, restores, pipe = loop.time(), [], Pipe()
        missing = True

        async def restore() -> int:
            nonlocal missing
            if not missing:
                return 0
            missing = False
            restores.append(loop.time() - start)
            pipe.poke()  # our own commit is announced as well
            return 3

        async def fighter() -> None:
            nonlocal missing
            for _ in range(20):  # 3 s
                await asyncio.sleep(0.15)
                if not missing:
                    missing = True
                    pipe.poke()

        guard = FirewallGuard(restore, changes=lambda: pipe, quiet=0.02, longest=0.2)
        guard.start()
        pipe.poke()
        try:
            await fighter()
        finally:
            guard.close()
        return restores

    restores = run_virtual(main)
    gaps = [b - a for a, b in zip(restores, restores[1:])]
    assert 4 <= len(restores) <= 10  # without the back-off: one every 150 ms, about 20
    assert gaps[-1] > 3 * gaps[0]
