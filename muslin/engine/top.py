"""`docker top`: the host's `ps` over a container's processes, as dockerd runs and reads it."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from muslin.errors import EngineError, InvalidArgument

DEFAULT_PS_ARGS = "-ef"
PS_TIMEOUT_S = 10.0
# dockerd refuses renaming a column to PID ("-o user=PID"): the PID column must be the real one.
PID_RENAME = re.compile(r"\s+([^\s]*)=\s*(PID[^\s]*)")


@dataclass(frozen=True)
class ProcessTable:
    titles: list[str]
    processes: list[list[str]]


def check_ps_args(ps_args: str) -> None:
    for key, value in PID_RENAME.findall(ps_args):
        if key != "pid":
            raise InvalidArgument(f'specifying "{key}={value}" is not allowed')


def _fields(line: str) -> list[str]:
    """Split on ASCII whitespace only, as dockerd does (a command may hold other spaces)."""
    return [f for f in re.split(r"[ \t\n\v\f\r]+", line) if f]


def parse_ps(output: str, pids: set[int]) -> ProcessTable:
    """dockerd's parsePSOutput: the rows of the container's pids (and the thread rows under them, "-")."""
    lines = output.split("\n")
    titles = _fields(lines[0])
    if "PID" not in titles:
        raise InvalidArgument("Couldn't find PID field in ps output")
    pid_index = titles.index("PID")
    processes: list[list[str]] = []
    in_container = False
    for line in lines[1:]:
        fields = _fields(line)
        if len(fields) <= pid_index:
            continue
        if fields[pid_index] == "-":  # a thread of the process above (ps -m)
            if in_container:
                processes.append(_row(fields, len(titles)))
            continue
        try:
            pid = int(fields[pid_index])
        except ValueError:
            raise InvalidArgument(f"Unexpected pid '{fields[pid_index]}'") from None
        in_container = pid in pids
        if in_container:
            processes.append(_row(fields, len(titles)))
    return ProcessTable(titles, processes)


def _row(fields: list[str], columns: int) -> list[str]:
    """The last column (the command) keeps its spaces."""
    return [*fields[:columns - 1], " ".join(fields[columns - 1:])]


def top(ps: str, pids: list[int], ps_args: str) -> ProcessTable:
    """Run ``ps`` on the host, limited to the container's pids where ps allows it (dockerd's ``-q``)."""
    ps_args = ps_args or DEFAULT_PS_ARGS
    check_ps_args(ps_args)
    args = ps_args.split(" ")
    selected = "-q" + ",".join(str(p) for p in pids)
    proc = _run_ps([ps, *args, selected])
    if proc.returncode != 0:
        # Some options (f, say) cannot go with -q: dockerd then lists everything and filters.
        proc = _run_ps([ps, *args])
        if proc.returncode != 0:
            first = proc.stderr.split("\n", 1)[0] or f"exit status {proc.returncode}"
            raise InvalidArgument(f"ps: {first}")
    return parse_ps(proc.stdout, set(pids))


def _run_ps(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=PS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # dockerd reports a ps that fails as "Error running ps: ..." (a 500 with that message).
        raise EngineError(f"Error running ps: {argv[0]} gave no answer within {PS_TIMEOUT_S:g} s") from None
