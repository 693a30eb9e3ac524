"""Restart policies: dockerd's checks and its restart manager's back-off, as pure decisions."""

from __future__ import annotations

import asyncio

import pytest

from muslin.engine.restarts import (FIRST_DELAY, MAX_DELAY, Backoff, RestartPolicy, RestartSupervisor,
                                    restart_after_daemon_start, validate)


def test_validate_as_dockerd() -> None:
    assert validate("on-failure", 5) == RestartPolicy("on-failure", 5)
    assert validate("", 0).none and validate("no", 0).none
    assert validate("", 3) == RestartPolicy("", 3)  # dockerd lets an empty name pass, count and all
    for name, count, message in (("always", 1, "cannot be used with restart policy 'always'"),
                                 ("no", 2, "cannot be used with restart policy 'no'"),
                                 ("unless-stopped", 1, "cannot be used"),
                                 ("on-failure", -1, "cannot be negative"),
                                 ("sometimes", 0, "invalid restart policy 'sometimes'")):
        with pytest.raises(ValueError, match=message):
            validate(name, count)


def test_policy_of_a_host_config() -> None:
    assert RestartPolicy.of({}).none
    assert RestartPolicy.of({"RestartPolicy": {"Name": "always"}}) == RestartPolicy("always", 0)
    assert RestartPolicy("on-failure", 2).to_json() == {"Name": "on-failure", "MaximumRetryCount": 2}


def test_backoff_doubles_and_resets_after_a_long_run() -> None:
    always, b = RestartPolicy("always"), Backoff()
    delays = [b.decide(always, 1, False, 0.5) for _ in range(12)]
    assert delays[:4] == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY, 8 * FIRST_DELAY]
    assert delays[-1] == MAX_DELAY and max(delays) == MAX_DELAY
    assert b.decide(always, 0, False, 10.0) == FIRST_DELAY  # ran 10 s: back to the first delay
    assert b.restarts == 13


def test_which_exits_restart() -> None:
    assert Backoff().decide(RestartPolicy("no"), 1, False, 0) is None
    assert Backoff().decide(RestartPolicy("always"), 0, True, 0) is not None  # always, even when stopped
    assert Backoff().decide(RestartPolicy("unless-stopped"), 0, False, 0) is not None
    assert Backoff().decide(RestartPolicy("unless-stopped"), 1, True, 0) is None
    on_failure = RestartPolicy("on-failure", 2)
    assert Backoff().decide(on_failure, 0, False, 0) is None  # success ends it
    b = Backoff()
    assert [b.decide(on_failure, 3, False, 0) is not None for _ in range(3)] == [True, True, False]
    assert Backoff().decide(RestartPolicy("on-failure"), 1, False, 0) is not None  # 0: no limit
    cancelled = Backoff(cancelled=True)  # stopped or killed by the user
    assert cancelled.decide(RestartPolicy("always"), 137, True, 0) is None


def test_restart_when_the_daemon_starts() -> None:
    assert restart_after_daemon_start(RestartPolicy("always"), 0, True, 0)
    assert not restart_after_daemon_start(RestartPolicy("unless-stopped"), 0, True, 0)
    assert restart_after_daemon_start(RestartPolicy("unless-stopped"), 255, False, 0)
    assert not restart_after_daemon_start(RestartPolicy("on-failure", 2), 1, False, 2)
    assert not restart_after_daemon_start(RestartPolicy(), 1, False, 0)


def test_a_stop_during_a_policy_start_waits_for_it_then_finds_no_restart_pending() -> None:
    """A stop landing while a restart is in its start cannot cut the start short (half a container):
    ``start_finished`` holds the stop until the start has returned, so the stop then stops it."""
    events: list[str] = []

    async def scenario() -> None:
        in_start, release = asyncio.Event(), asyncio.Event()

        async def start(cid: str) -> None:
            events.append(f"start {cid}")
            in_start.set()
            await release.wait()
            events.append("started")

        supervisor = RestartSupervisor(start)
        assert supervisor.exited("c1", RestartPolicy("always"), 1, False, 0.0)
        await asyncio.wait_for(in_start.wait(), 5)
        assert supervisor.restarting("c1")
        assert not supervisor.user_stopped("c1")  # past its back-off: nothing left to cancel
        stop = asyncio.ensure_future(supervisor.start_finished("c1"))
        await asyncio.sleep(0.05)
        assert not stop.done()  # held while the start runs
        release.set()
        await asyncio.wait_for(stop, 5)
        events.append("stop goes on")
        assert not supervisor.restarting("c1")
        # The user's stop marked the back-off: the exit that stop causes restarts nothing.
        assert not supervisor.exited("c1", RestartPolicy("always"), 137, True, 0.0)
        await asyncio.wait_for(supervisor.start_finished("c1"), 1)  # nothing under way: at once

    asyncio.run(scenario())
    assert events == ["start c1", "started", "stop goes on"]
