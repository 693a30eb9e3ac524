"""`docker top`: dockerd's reading of ps's output, and a ps that hangs answered as an engine error."""

from __future__ import annotations

import subprocess

import pytest

from muslin.engine import top
from muslin.errors import EngineError, InvalidArgument

PS_OUTPUT = """UID          PID    PPID  C STIME TTY          TIME CMD
root        4242       1  0 10:00 ?        00:00:00 sh -c sleep 1000
root        4250    4242  0 10:00 ?        00:00:00 sleep 1000
root        9999       1  0 10:00 ?        00:00:00 other thing
"""


def test_rows_of_the_containers_pids_only() -> None:
    table = top.parse_ps(PS_OUTPUT, {4242, 4250})
    assert table.titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert [row[1] for row in table.processes] == ["4242", "4250"]
    assert table.processes[0][-1] == "sh -c sleep 1000"


def test_renaming_a_column_to_pid_is_refused() -> None:
    with pytest.raises(InvalidArgument, match='specifying "user=PID" is not allowed'):
        top.check_ps_args("-o user=PID")


def test_a_ps_that_does_not_answer_in_time_is_an_engine_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def hanging_ps(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])  # type: ignore[arg-type]

    monkeypatch.setattr(top.subprocess, "run", hanging_ps)
    with pytest.raises(EngineError) as info:
        top.top("ps", [4242], "")
    assert type(info.value) is EngineError and info.value.status == 500
    assert info.value.message.startswith("Error running ps: ")
    assert calls == [["ps", "-ef", "-q4242"]]
