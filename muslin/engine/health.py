"""Healthchecks (Config.Healthcheck), as dockerd runs them: a probe exec'd in the container every
Interval, its result judged into State.Health (starting, healthy, unhealthy; FailingStreak; the last
five results).

``Healthcheck`` and ``merged`` are the configuration (the image's inherited where the container's is
silent); ``Health.record`` is dockerd's handleProbeResult, pure; ``HealthMonitor`` runs the probes of the
running containers (event loop only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from muslin.errors import EngineError
from muslin.runtime import Runtime, StartFailed

log = logging.getLogger(__name__)

SECOND_NS = 1_000_000_000
DEFAULT_INTERVAL_NS = 30 * SECOND_NS
DEFAULT_TIMEOUT_NS = 30 * SECOND_NS
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT_BYTES = 4096
MINIMUM_DURATION_NS = 1_000_000  # dockerd's MinimumDuration, 1ms

STARTING, HEALTHY, UNHEALTHY, NO_HEALTHCHECK = "starting", "healthy", "unhealthy", "none"
STATUSES = (STARTING, HEALTHY, UNHEALTHY, NO_HEALTHCHECK)


@dataclass(frozen=True)
class Healthcheck:
    """Config.Healthcheck (durations in nanoseconds, 0 for the default)."""

    test: tuple[str, ...] = ()
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    retries: int = 0

    @classmethod
    def of(cls, raw: dict[str, Any] | None) -> Healthcheck | None:
        if not raw:
            return None
        return cls(tuple(raw.get("Test") or ()), int(raw.get("Interval") or 0), int(raw.get("Timeout") or 0),
                   int(raw.get("StartPeriod") or 0), int(raw.get("Retries") or 0))

    def to_json(self) -> dict[str, Any]:
        """As dockerd shows it: zero durations and retries left out."""
        out: dict[str, Any] = {"Test": list(self.test)} if self.test else {}
        for key, value in (("Interval", self.interval), ("Timeout", self.timeout),
                           ("StartPeriod", self.start_period), ("Retries", self.retries)):
            if value:
                out[key] = value
        return out

    def argv(self) -> list[str] | None:
        """The probe's command: CMD runs its arguments, CMD-SHELL a shell; None for NONE or nothing."""
        if not self.test:
            return None
        kind, args = self.test[0], list(self.test[1:])
        if kind == "CMD" and args:
            return args
        if kind == "CMD-SHELL" and args:
            return ["/bin/sh", "-c", " ".join(args)]
        return None  # NONE, or a test dockerd would not run either


def check(raw: dict[str, Any] | None) -> None:
    """dockerd's checks of Config.Healthcheck (ValueError with its message)."""
    hc = Healthcheck.of(raw)
    if hc is None:
        return
    for name, value in (("Interval", hc.interval), ("Timeout", hc.timeout), ("StartPeriod", hc.start_period)):
        if value != 0 and value < MINIMUM_DURATION_NS:
            raise ValueError(f"{name} in Healthcheck cannot be less than 1ms")
    if hc.retries < 0:
        raise ValueError("Retries in Healthcheck cannot be negative")


def merged(own: dict[str, Any] | None, image: dict[str, Any] | None) -> dict[str, Any] | None:
    """The container's healthcheck over the image's: what the container does not say, the image does."""
    if not image:
        return own
    if own is None:
        return dict(image)
    out = dict(own)
    for key in ("Test", "Interval", "Timeout", "StartPeriod", "Retries"):
        if not out.get(key) and image.get(key):
            out[key] = image[key]
    return out


@dataclass(frozen=True)
class ProbeResult:
    start: int  # ns since the epoch
    end: int
    exit_code: int
    output: str


@dataclass
class Health:
    """State.Health of one container."""

    status: str = STARTING
    failing_streak: int = 0
    log: list[ProbeResult] = field(default_factory=list)

    def record(self, result: ProbeResult, hc: Healthcheck, started_at: int) -> None:
        """dockerd's handleProbeResult: a success makes it healthy; failures count once the start period
        is over (or it was healthy once), and make it unhealthy at Retries in a row."""
        self.log = [*self.log, result][-MAX_LOG_ENTRIES:]
        if result.exit_code == 0:
            self.failing_streak = 0
            self.status = HEALTHY
            return
        if self.status == STARTING and result.start - started_at < hc.start_period:
            return
        self.failing_streak += 1
        if self.failing_streak >= (hc.retries if hc.retries > 0 else DEFAULT_RETRIES):
            self.status = UNHEALTHY


class HealthMonitor:
    """The probes of running containers (event loop only); their Health stays after they stop."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._health: dict[str, Health] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    def health(self, cid: str) -> Health | None:
        return self._health.get(cid)

    def start(self, cid: str, hc: Healthcheck | None, started_at: int, paused: Callable[[], bool]) -> None:
        """Begin probing a container that has just started (starting again, with a fresh streak)."""
        self.stop(cid)
        if hc is None or hc.argv() is None:
            return
        previous = self._health.get(cid)
        self._health[cid] = Health(log=previous.log if previous else [])
        self._tasks[cid] = asyncio.ensure_future(self._probe_loop(cid, hc, started_at, paused))

    def stop(self, cid: str) -> None:
        task = self._tasks.pop(cid, None)
        if task is not None:
            task.cancel()

    def forget(self, cid: str) -> None:
        self.stop(cid)
        self._health.pop(cid, None)

    def close(self) -> None:
        for cid in list(self._tasks):
            self.stop(cid)

    async def _probe_loop(self, cid: str, hc: Healthcheck, started_at: int, paused: Callable[[], bool]) -> None:
        argv = hc.argv()
        assert argv is not None
        interval = (hc.interval or DEFAULT_INTERVAL_NS) / SECOND_NS
        timeout = (hc.timeout or DEFAULT_TIMEOUT_NS) / SECOND_NS
        while True:
            await asyncio.sleep(interval)
            result = await self._probe(cid, argv, timeout, paused)
            health = self._health.get(cid)
            if health is None:
                return
            health.record(result, hc, started_at)

    async def _probe(self, cid: str, argv: list[str], timeout: float, paused: Callable[[], bool]) -> ProbeResult:
        start = time.time_ns()
        if paused():  # an exec would hang in the frozen cgroup; dockerd's exec refuses it
            return ProbeResult(start, time.time_ns(), -1,
                               f"Container {cid} is paused, unpause the container before exec")
        exec_id = ""
        try:
            exec_id = await asyncio.to_thread(self.runtime.exec_create, cid, argv)
            output, code = await asyncio.wait_for(self._run(exec_id), timeout)
            return ProbeResult(start, time.time_ns(), code, output)
        except asyncio.TimeoutError:
            if exec_id:  # dockerd leaves it running; a probe that hangs would pile up
                with contextlib.suppress(Exception):
                    self.runtime.exec_kill(exec_id, 9)
            return ProbeResult(start, time.time_ns(), -1, f"Health check exceeded timeout ({_seconds(timeout)})")
        except StartFailed as exc:  # not found (127) or not executable (126), as a shell reports it
            return ProbeResult(start, time.time_ns(), exc.exit_code, exc.message)
        except EngineError as exc:
            return ProbeResult(start, time.time_ns(), -1, exc.message)
        finally:
            if exec_id:
                self.runtime.exec_forget(exec_id)

    async def _run(self, exec_id: str) -> tuple[str, int]:
        stream = await self.runtime.exec_start(exec_id)
        assert stream is not None
        out = bytearray()
        try:
            while (chunk := await stream.read()) is not None:
                if len(out) < MAX_OUTPUT_BYTES:
                    out += chunk[1][:MAX_OUTPUT_BYTES - len(out)]
        finally:
            stream.close()
        code = stream.exit_code if stream.exit_code is not None else -1
        return out.decode(errors="replace"), code


def _seconds(value: float) -> str:
    """A duration as Go prints one: 1s, 1.5s, 500ms."""
    if value >= 1:
        return f"{value:g}s"
    return f"{value * 1000:g}ms"
