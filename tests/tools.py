"""The external commands tests run, found through the repository's ``tools`` list: the same list
setup.sh installs from, so a test never needs a command that a fresh machine would lack."""

from __future__ import annotations

import shutil
from functools import cache
from pathlib import Path

import pytest

TOOLS_FILE = Path(__file__).resolve().parent.parent / "tools"


@cache
def listed() -> dict[str, str]:
    """command -> Debian package, as ``tools`` lists them."""
    tools: dict[str, str] = {}
    for line in TOOLS_FILE.read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            command, package = fields
            tools[command] = package
    return tools


def require(command: str) -> str:
    """The path of a listed command. A command missing from ``tools`` is a mistake in the test; a listed
    one that is not installed fails the test with what to run (a skip would hide a machine not set up)."""
    package = listed().get(command)
    if package is None:
        raise AssertionError(f"{command!r} is not in {TOOLS_FILE}: add it there with its package")
    path = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{command} is not installed: run ./setup.sh (it installs {package})")
    return path
