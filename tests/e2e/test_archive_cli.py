"""docker cp both ways and docker diff through the real docker CLI, on running and stopped containers
(a stopped container's files, volumes included, are assembled in a mount namespace that dies with the
request: no mount may be left on the host)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from ..tools import require
from .conftest import Daemon

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


def overlay_mounts_of(daemon: Daemon) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(daemon.root) in line and " - overlay " in line]


def test_cp_and_diff_on_a_stopped_container(daemon: Daemon, tmp_path: Path) -> None:
    daemon.docker("run", "--name", "st", "-v", "/vol", "busybox",
                  "sh", "-c", "touch /test; mkdir -p /tmp/x; echo a > /tmp/x/a; rm /bin/ls; echo v > /vol/v")
    assert daemon.docker("diff", "st").stdout.split("\n")[:-1] == [
        "C /bin", "D /bin/ls", "A /test", "C /tmp", "A /tmp/x", "A /tmp/x/a", "A /vol"]  # /vol: the mount point
    daemon.docker("cp", "st:/tmp/x", str(tmp_path / "out"))
    assert (tmp_path / "out" / "a").read_text() == "a\n"
    daemon.docker("cp", "st:/vol/v", str(tmp_path / "v"))  # from the container's anonymous volume
    assert (tmp_path / "v").read_text() == "v\n"
    (tmp_path / "in.txt").write_text("copied in\n")
    daemon.docker("cp", str(tmp_path / "in.txt"), "st:/tmp/in.txt")
    daemon.docker("cp", str(tmp_path / "in.txt"), "st:/vol/")
    daemon.docker("start", "-a", "st", check=False)  # runs its command again: fine, it is idempotent
    assert "A /tmp/in.txt" in daemon.docker("diff", "st").stdout
    source = json.loads(daemon.docker("inspect", "--format", "{{json .Mounts}}", "st").stdout)[0]["Source"]
    assert Path(source, "in.txt").read_text() == "copied in\n"
    missing = daemon.docker("cp", "st:/nope", str(tmp_path / "n"), check=False)
    assert missing.returncode != 0 and "Could not find the file /nope in container st" in missing.stderr
    assert overlay_mounts_of(daemon) == []


def test_cp_and_diff_on_a_running_container(daemon: Daemon, tmp_path: Path) -> None:
    src = tmp_path / "bind"
    src.mkdir()
    daemon.docker("run", "-d", "--name", "ru", "-v", f"{src}:/srv", "busybox", "sleep", "300")
    (tmp_path / "conf").write_text("hello\n")
    daemon.docker("cp", str(tmp_path / "conf"), "ru:/etc/app.conf")
    daemon.docker("cp", str(tmp_path / "conf"), "ru:/srv/")  # lands in the bind-mounted host directory
    assert daemon.docker("exec", "ru", "cat", "/etc/app.conf").stdout == "hello\n"
    assert (src / "conf").read_text() == "hello\n"
    daemon.docker("exec", "ru", "sh", "-c", "mkdir /work && echo 1 > /work/one && ln -s /work/one /work/link")
    out = subprocess.run([require("docker"), "cp", "ru:/work", "-"], env=daemon.env, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["work", "work/link", "work/one"]
    assert members["work/link"].issym() and members["work/link"].linkname == "/work/one"
    assert daemon.docker("diff", "ru").stdout.split("\n")[:-1] == [
        "C /etc", "A /etc/app.conf", "A /srv", "A /work", "A /work/link", "A /work/one"]
    assert overlay_mounts_of(daemon) == []
