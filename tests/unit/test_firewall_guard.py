"""The guard's pacing: a burst of ruleset changes is checked once after it settles, a change during a
check gets one more check, and a ruleset that never settles is still checked now and then."""

import asyncio
import socket

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

    return asyncio.run(main())


def test_a_burst_is_checked_once_after_it_settles() -> None:
    async def scenario(pipe, checks) -> None:
        for _ in range(5):
            pipe.poke()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)

    checks = run_guard(scenario)
    assert len(checks) == 1 and checks[0] >= 0.09


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
    assert 2 <= len(checks) <= 4 and 0.35 <= checks[0] <= 0.9


def test_nothing_changes_nothing_is_checked() -> None:
    async def scenario(pipe, checks) -> None:
        await asyncio.sleep(0.2)

    assert run_guard(scenario) == []


def test_rules_removed_after_every_restore_make_it_back_off() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        start, checks, pipe = loop.time(), [], Pipe()

        async def restore() -> int:  # something removes our rules again each time: always 3 missing
            checks.append(loop.time() - start)
            return 3

        guard = FirewallGuard(restore, changes=lambda: pipe, quiet=0.02, longest=0.2)
        guard.start()
        try:
            for _ in range(40):  # it pokes for 1.2 s
                pipe.poke()
                await asyncio.sleep(0.03)
        finally:
            guard.close()
        return checks

    checks = asyncio.run(main())
    gaps = [b - a for a, b in zip(checks, checks[1:])]
    assert len(checks) >= 4
    assert gaps[-1] > 2 * gaps[0]  # the pause between checks grows
