"""Healthchecks: the configuration (dockerd's checks, the image's inherited) and the state machine."""

from __future__ import annotations

import pytest

from muslin.engine.health import (DEFAULT_RETRIES, HEALTHY, MAX_LOG_ENTRIES, SECOND_NS, STARTING, UNHEALTHY, Health,
                                  Healthcheck, ProbeResult, check, merged)


def result(code: int, at_s: float = 100.0) -> ProbeResult:
    start = int(at_s * SECOND_NS)
    return ProbeResult(start, start + 1000, code, "out\n")


def test_probe_commands() -> None:
    assert Healthcheck(("CMD", "true")).argv() == ["true"]
    assert Healthcheck(("CMD-SHELL", "echo hi && true")).argv() == ["/bin/sh", "-c", "echo hi && true"]
    assert Healthcheck(("NONE",)).argv() is None and Healthcheck().argv() is None
    assert Healthcheck.of(None) is None
    assert Healthcheck.of({"Test": ["CMD", "true"], "Interval": SECOND_NS}).to_json() == \
        {"Test": ["CMD", "true"], "Interval": SECOND_NS}


def test_checks_as_dockerd() -> None:
    check({"Test": ["CMD", "true"], "Interval": 1_000_000, "Retries": 0})
    for raw, message in (({"Interval": 100}, "Interval in Healthcheck cannot be less than 1ms"),
                         ({"Timeout": -5}, "Timeout in Healthcheck cannot be less than 1ms"),
                         ({"StartPeriod": 10}, "StartPeriod"), ({"Retries": -1}, "Retries in Healthcheck cannot be negative")):
        with pytest.raises(ValueError, match=message):
            check({"Test": ["CMD", "true"], **raw})


def test_image_healthcheck_is_inherited_where_the_container_is_silent() -> None:
    image = {"Test": ["CMD-SHELL", "check"], "Interval": 5 * SECOND_NS, "Retries": 2}
    assert merged(None, image) == image
    assert merged({"Interval": SECOND_NS}, image) == {"Test": ["CMD-SHELL", "check"], "Interval": SECOND_NS, "Retries": 2}
    assert merged({"Test": ["NONE"]}, image)["Test"] == ["NONE"]
    assert merged({"Test": ["CMD", "x"]}, None) == {"Test": ["CMD", "x"]}


def test_failures_turn_unhealthy_after_retries_and_a_success_heals() -> None:
    hc, h = Healthcheck(("CMD", "false")), Health()
    for i in range(DEFAULT_RETRIES - 1):
        h.record(result(1), hc, 0)
        assert (h.status, h.failing_streak) == (STARTING, i + 1)
    h.record(result(1), hc, 0)
    assert (h.status, h.failing_streak) == (UNHEALTHY, DEFAULT_RETRIES)
    h.record(result(0), hc, 0)
    assert (h.status, h.failing_streak) == (HEALTHY, 0)
    for _ in range(10):
        h.record(result(1), Healthcheck(("CMD", "false"), retries=1), 0)
    assert h.status == UNHEALTHY and h.failing_streak == 10 and len(h.log) == MAX_LOG_ENTRIES


def test_start_period_failures_do_not_count_until_it_is_over() -> None:
    hc, h = Healthcheck(("CMD", "false"), start_period=3 * SECOND_NS, retries=1), Health()
    started = int(100 * SECOND_NS)
    h.record(result(1, 101), hc, started)
    h.record(result(1, 102.5), hc, started)
    assert (h.status, h.failing_streak) == (STARTING, 0)
    h.record(result(1, 103.5), hc, started)
    assert (h.status, h.failing_streak) == (UNHEALTHY, 1)
