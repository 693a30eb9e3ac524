"""Bind mounts, tmpfs and local named volumes through the real docker CLI, as with dockerd: `-v`, `--mount`,
`--tmpfs`, `docker volume ...`, inspect's Mounts, `docker rm -v`. Nothing may stay behind: no mount on
the host (runc makes them inside the container's mount namespace), no directory of a removed volume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Daemon

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


def host_mounts_under(*paths: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if any(str(p) in line.split()[4] for p in paths)]


def mounts_of(daemon: Daemon, name: str) -> dict[str, dict]:
    found = json.loads(daemon.docker("inspect", "--format", "{{json .Mounts}}", name).stdout)
    return {m["Destination"]: m for m in found}


def test_bind_mounts_read_write_read_only_and_created_host_paths(daemon: Daemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config").write_text("router-id 1\n")
    out = daemon.docker("run", "--name", "rw", "-v", f"{src}:/etc/bird", "busybox",
                        "sh", "-c", "cat /etc/bird/config; echo new > /etc/bird/written").stdout
    assert out == "router-id 1\n" and (src / "written").read_text() == "new\n"
    ro = daemon.docker("run", "--rm", "--mount", f"type=bind,src={src},dst=/cfg,readonly", "busybox",
                       "touch", "/cfg/x", check=False)
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    # -v creates a missing host path, as dockerd does; --mount refuses it and stores nothing.
    missing = tmp_path / "made" / "by" / "docker"
    daemon.docker("run", "--rm", "-v", f"{missing}:/data", "busybox", "true")
    assert missing.is_dir()
    refused = daemon.docker("run", "--name", "nope", "--mount", f"type=bind,src={tmp_path}/absent,dst=/data",
                            "busybox", "true", check=False)
    assert refused.returncode != 0
    assert (f'invalid mount config for type "bind": bind source path does not exist: {tmp_path}/absent'
            in refused.stderr)
    assert "nope" not in daemon.docker("ps", "-a", "--format", "{{.Names}}").stdout
    bad = daemon.docker("create", "-v", f"{src}:/x:bogus", "busybox", check=False)
    assert bad.returncode != 0 and "invalid mode: bogus" in bad.stderr
    mounts = mounts_of(daemon, "rw")
    assert mounts["/etc/bird"] == {"Type": "bind", "Source": str(src), "Destination": "/etc/bird", "Mode": "",
                                   "RW": True, "Propagation": "rprivate"}
    binds = daemon.docker("inspect", "--format", "{{json .HostConfig.Binds}}", "rw").stdout
    assert json.loads(binds) == [f"{src}:/etc/bird"]
    assert host_mounts_under(src, daemon.root / "data") == []


def test_tmpfs_mounts(daemon: Daemon) -> None:
    out = daemon.docker("run", "--name", "tm", "--tmpfs", "/run/app:size=1m", "--mount",
                        "type=tmpfs,dst=/scratch,tmpfs-size=2097152", "busybox",
                        "sh", "-c", "grep -E ' /(run/app|scratch) ' /proc/mounts").stdout
    assert "tmpfs /run/app tmpfs rw,nosuid,nodev,noexec,relatime,size=1024k" in out
    assert "tmpfs /scratch tmpfs rw,nosuid,nodev,noexec,relatime,size=2048k" in out
    # inspect lists the --mount tmpfs only, as dockerd does (HostConfig.Tmpfs shows the other).
    assert list(mounts_of(daemon, "tm")) == ["/scratch"]


def test_named_volumes_outlive_containers_and_the_daemon(daemon: Daemon) -> None:
    daemon.docker("volume", "create", "--label", "lab=bgp", "routes")
    daemon.docker("run", "--name", "writer", "-v", "routes:/data", "busybox", "sh", "-c", "echo 10.0.0.0/8 > /data/table")
    daemon.docker("rm", "writer")
    # --mount type=volume creates a missing volume, as -v does.
    daemon.docker("run", "--rm", "--mount", "type=volume,src=made,dst=/m", "busybox", "true")
    listed = daemon.docker("volume", "ls", "--format", "{{.Driver}} {{.Name}}").stdout.split("\n")
    assert "local routes" in listed and "local made" in listed
    assert daemon.docker("volume", "ls", "-q", "--filter", "label=lab=bgp").stdout.split() == ["routes"]
    info = json.loads(daemon.docker("volume", "inspect", "routes").stdout)[0]
    assert (info["Name"], info["Driver"], info["Labels"], info["Scope"]) == ("routes", "local", {"lab": "bgp"}, "local")
    mountpoint = Path(info["Mountpoint"])
    daemon.stop()
    daemon.start()
    out = daemon.docker("run", "--name", "reader", "-v", "routes:/data:ro", "busybox", "cat", "/data/table").stdout
    assert out == "10.0.0.0/8\n"
    mount = mounts_of(daemon, "reader")["/data"]
    assert mount == {"Type": "volume", "Name": "routes", "Source": str(mountpoint), "Destination": "/data",
                     "Driver": "local", "Mode": "ro", "RW": False, "Propagation": ""}
    in_use = daemon.docker("volume", "rm", "routes", check=False)
    assert in_use.returncode != 0
    cid = daemon.docker("inspect", "--format", "{{.Id}}", "reader").stdout.strip()
    assert f"remove routes: volume is in use - [{cid}]" in in_use.stderr
    assert daemon.docker("volume", "ls", "-q", "--filter", "dangling=true").stdout.split() == ["made"]
    daemon.docker("rm", "reader")
    daemon.docker("volume", "rm", "routes")
    assert not mountpoint.parent.exists()
    missing = daemon.docker("volume", "inspect", "routes", check=False)
    assert missing.returncode != 0 and "no such volume" in missing.stderr
    other = daemon.docker("volume", "create", "-d", "nfs", "x2", check=False)
    assert other.returncode != 0 and 'error looking up volume plugin nfs: plugin "nfs" not found' in other.stderr
    assert host_mounts_under(daemon.root / "data") == []


def test_anonymous_volumes_go_with_rm_v_and_prune(daemon: Daemon) -> None:
    daemon.docker("run", "--name", "an", "-v", "/scratch", "-v", "kept:/kept", "busybox", "touch", "/scratch/x")
    anon = mounts_of(daemon, "an")["/scratch"]
    assert anon["Type"] == "volume" and len(anon["Name"]) == 64 and anon["Mode"] == ""
    assert Path(anon["Source"], "x").exists()
    daemon.docker("rm", "-v", "an")
    assert daemon.docker("volume", "ls", "-q").stdout.split() == ["kept"]
    assert not Path(anon["Source"]).exists()
    # --rm takes its anonymous volumes along too.
    daemon.docker("run", "--rm", "-v", "/tmp/cache", "busybox", "true")
    assert daemon.docker("volume", "ls", "-q").stdout.split() == ["kept"]
    daemon.docker("run", "--name", "bn", "-v", "/other", "busybox", "true")
    daemon.docker("rm", "bn")  # without -v the anonymous volume stays, unused
    left = [v for v in daemon.docker("volume", "ls", "-q").stdout.split() if v != "kept"]
    assert len(left) == 1
    pruned = daemon.docker("volume", "prune", "-f").stdout  # anonymous ones only, as dockerd 23+
    assert left[0] in pruned and daemon.docker("volume", "ls", "-q").stdout.split() == ["kept"]
    daemon.docker("volume", "prune", "-af")
    assert daemon.docker("volume", "ls", "-q").stdout.split() == []
    assert list((daemon.root / "data" / "volumes").iterdir()) == []


def test_bind_form_of_the_local_driver(daemon: Daemon, tmp_path: Path) -> None:
    """compose's `driver_opts: {type: none, o: bind, device: DIR}`: the volume is the host directory."""
    kept = tmp_path / "kept"
    kept.mkdir()
    daemon.docker("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={kept}", "here")
    daemon.docker("run", "--rm", "-v", "here:/data", "busybox", "sh", "-c", "echo 1 > /data/one")
    assert (kept / "one").read_text() == "1\n"
    info = json.loads(daemon.docker("volume", "inspect", "here").stdout)[0]
    assert info["Options"] == {"type": "none", "o": "bind", "device": str(kept)}
    daemon.docker("volume", "rm", "here")
    assert (kept / "one").exists()  # removing the volume leaves the host's directory alone
    refused = daemon.docker("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "tmp", check=False)
    assert refused.returncode != 0 and "muslind's local volumes mount no filesystem" in refused.stderr
    assert daemon.docker("volume", "ls", "-q").stdout.split() == []
    assert host_mounts_under(kept, daemon.root / "data") == []


def test_an_empty_volume_starts_with_the_images_files(daemon: Daemon) -> None:
    out = daemon.docker("run", "--rm", "-v", "etc:/etc", "busybox", "head", "-1", "/etc/passwd").stdout
    assert out == "root:x:0:0:root:/root:/bin/sh\n"
    mountpoint = Path(json.loads(daemon.docker("volume", "inspect", "etc").stdout)[0]["Mountpoint"])
    assert (mountpoint / "group").is_file()
    empty = daemon.docker("run", "--rm", "--mount", "type=volume,src=bare,dst=/etc,volume-nocopy", "busybox",
                          "ls", "/etc").stdout.split()
    assert "passwd" not in empty


def test_volumes_from_another_container(daemon: Daemon, tmp_path: Path) -> None:
    daemon.docker("create", "--name", "store", "-v", "/shared", "-v", f"{tmp_path}:/host", "busybox")
    daemon.docker("run", "--rm", "--volumes-from", "store", "busybox", "sh", "-c", "echo 1 > /shared/one")
    out = daemon.docker("run", "--name", "reader", "--volumes-from", "store:ro", "busybox",
                        "sh", "-c", "cat /shared/one; touch /shared/two", check=False)
    assert out.stdout == "1\n" and "Read-only file system" in out.stderr
    theirs, mine = mounts_of(daemon, "store"), mounts_of(daemon, "reader")
    assert mine["/shared"]["Name"] == theirs["/shared"]["Name"] and mine["/shared"]["RW"] is False
    assert mine["/host"]["Source"] == str(tmp_path)
    daemon.docker("rm", "-v", "reader")  # the volume is store's: it stays
    assert daemon.docker("volume", "ls", "-q").stdout.split() == [theirs["/shared"]["Name"]]
    missing = daemon.docker("create", "--volumes-from", "nobody", "busybox", check=False)
    assert missing.returncode != 0 and "No such container: nobody" in missing.stderr
    daemon.docker("rm", "-v", "store")
    assert daemon.docker("volume", "ls", "-q").stdout.split() == []
