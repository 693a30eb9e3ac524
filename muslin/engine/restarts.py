"""Restart policies (``--restart``), as dockerd's restart manager applies them.

``RestartPolicy`` is HostConfig.RestartPolicy, typed. ``Backoff`` is the pure decision taken at each
exit: restart or not, and after how long (100 ms, doubling up to a minute, back to 100 ms once a run
lasted 10 s). ``RestartSupervisor`` holds one ``Backoff`` per container and the pending restarts (event
loop only): the container service tells it of exits, starts and stops, and it calls back to start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

POLICIES = ("no", "always", "unless-stopped", "on-failure")
FIRST_DELAY = 0.1  # seconds
MAX_DELAY = 60.0
RESET_AFTER = 10.0  # a run at least this long resets the delay


@dataclass(frozen=True)
class RestartPolicy:
    name: str = ""  # one of POLICIES, or "" (none given: "no")
    maximum_retry_count: int = 0  # on-failure only; 0: no limit

    @classmethod
    def of(cls, host_config: dict) -> RestartPolicy:
        """The policy stored in a HostConfig (validated when it was stored)."""
        raw = host_config.get("RestartPolicy") or {}
        return cls(raw.get("Name") or "", int(raw.get("MaximumRetryCount") or 0))

    def to_json(self) -> dict:
        return {"Name": self.name, "MaximumRetryCount": self.maximum_retry_count}

    @property
    def none(self) -> bool:
        return self.name in ("", "no")


def validate(name: str, maximum_retry_count: int) -> RestartPolicy:
    """dockerd's checks of a restart policy (a ValueError carries its message)."""
    if name in ("always", "unless-stopped", "no") and maximum_retry_count != 0:
        raise ValueError(f"maximum retry count cannot be used with restart policy '{name}'")
    if name == "on-failure" and maximum_retry_count < 0:
        raise ValueError("maximum retry count cannot be negative")
    if name and name not in POLICIES:
        raise ValueError(f"invalid restart policy '{name}'")
    return RestartPolicy(name, maximum_retry_count)


@dataclass
class Backoff:
    """One container's restart decisions (dockerd's restartmanager.ShouldRestart)."""

    delay: float = 0.0  # the delay of the last restart; 0 before the first
    restarts: int = 0  # restarts since the user last started it (what MaximumRetryCount counts)
    cancelled: bool = False  # stopped or killed by the user: its next exit is final

    def decide(self, policy: RestartPolicy, exit_code: int, manually_stopped: bool, ran_for: float) -> float | None:
        """After an exit: the delay before the restart, or None for no restart."""
        if policy.none or self.cancelled:
            return None
        if ran_for >= RESET_AFTER:
            self.delay = 0.0
        self.delay = FIRST_DELAY if self.delay == 0.0 else min(self.delay * 2, MAX_DELAY)
        if policy.name == "always":
            restart = True
        elif policy.name == "unless-stopped":
            restart = not manually_stopped
        else:  # on-failure
            limit = policy.maximum_retry_count
            restart = exit_code != 0 and (limit == 0 or self.restarts < limit)
        if not restart:
            return None
        self.restarts += 1
        return self.delay


def restart_after_daemon_start(policy: RestartPolicy, exit_code: int, manually_stopped: bool,
                               restarts: int) -> bool:
    """Whether a container found stopped when muslind starts is started again (dockerd's restore)."""
    return Backoff(restarts=restarts).decide(policy, exit_code, manually_stopped, 0.0) is not None


class RestartSupervisor:
    """The pending restarts and back-off of every container (event loop only)."""

    def __init__(self, start: Callable[[str], Awaitable[None]]) -> None:
        self._start = start  # starts a container after a back-off (not as the user's start)
        self._backoffs: dict[str, Backoff] = {}
        self._pending: dict[str, asyncio.Task] = {}  # until the restart's start has returned
        self._starting: set[str] = set()  # past the back-off, in the start: no longer cancellable

    def backoff(self, cid: str) -> Backoff:
        return self._backoffs.setdefault(cid, Backoff())

    def restarting(self, cid: str) -> bool:
        task = self._pending.get(cid)
        return task is not None and not task.done()

    def user_started(self, cid: str) -> None:
        """A start by the user: a fresh back-off and count, as dockerd's ResetRestartManager."""
        self.cancel(cid)
        self._backoffs[cid] = Backoff()

    def user_stopped(self, cid: str) -> bool:
        """A stop or kill by the user: no restart after this exit. True if a restart was pending."""
        self.backoff(cid).cancelled = True
        return self.cancel(cid)

    def exited(self, cid: str, policy: RestartPolicy, exit_code: int, manually_stopped: bool,
               ran_for: float) -> bool:
        """An exit handled: schedule the restart the policy asks for; True if one is scheduled."""
        delay = self.backoff(cid).decide(policy, exit_code, manually_stopped, ran_for)
        if delay is None:
            return False
        self._pending[cid] = asyncio.ensure_future(self._restart_later(cid, delay))
        return True

    async def start_finished(self, cid: str) -> None:
        """Return once a restart past its back-off has finished its start (at once if there is none):
        a stop or kill arriving in the middle of it then acts on the container that start made
        running, rather than leave it running (``cancel`` cannot cut a start short)."""
        task = self._pending.get(cid)
        if cid in self._starting and task is not None and not task.done():
            await asyncio.shield(task)

    def cancel(self, cid: str) -> bool:
        """Cancel a restart still in its back-off; True if there was one (False during its start:
        see ``start_finished``)."""
        if cid in self._starting:  # a start cut in the middle would leave half a container
            return False
        task = self._pending.pop(cid, None)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def forget(self, cid: str) -> None:
        self.cancel(cid)
        self._backoffs.pop(cid, None)

    def close(self) -> None:
        for cid in list(self._pending):
            self.cancel(cid)

    async def _restart_later(self, cid: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self._starting.add(cid)
        try:
            await self._start(cid)
        except Exception as exc:  # as dockerd: a failed restart leaves the container stopped
            log.warning("restarting container %s failed: %s", cid[:12], exc)
        finally:
            self._starting.discard(cid)
            if self._pending.get(cid) is asyncio.current_task():
                del self._pending[cid]
