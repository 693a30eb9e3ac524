"""The container lifecycle as the docker CLI drives it: kill, pause, restart policies (also across a
muslind restart), update."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import tarfile
import time
from collections.abc import Callable

import docker as docker_sdk
import pytest

from muslin.runtime import Cgroups

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


WAIT_S = 15.0


def inspect(daemon, name: str) -> dict:
    return json.loads(daemon.docker("inspect", name).stdout)[0]


def wait_for(what: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(0.05)


def test_kill_waits_for_death_and_signals_are_checked(daemon) -> None:
    daemon.docker("run", "-d", "--name", "k1", "busybox", "sh", "-c", 'trap "exit 7" USR1; while :; do sleep 0.1; done')
    daemon.docker("kill", "k1")
    state = inspect(daemon, "k1")["State"]  # no wait: SIGKILL's kill returns once it is dead
    assert (state["Running"], state["Status"], state["ExitCode"]) == (False, "exited", 137)
    again = daemon.docker("kill", "k1", check=False)
    assert again.returncode != 0 and "is not running" in again.stderr
    daemon.docker("start", "k1")
    for bad in ("BOGUS", "99", "SIG_IGN"):
        refused = daemon.docker("kill", "-s", bad, "k1", check=False)
        assert refused.returncode != 0 and "Invalid signal" in refused.stderr, refused.stderr
    daemon.docker("kill", "-s", "USR1", "k1")  # delivered: its trap makes it exit
    wait_for(lambda: inspect(daemon, "k1")["State"]["ExitCode"] == 7)


def test_pause_freezes_and_refuses_what_docker_refuses(daemon) -> None:
    daemon.docker("run", "-d", "--name", "p1", "busybox", "sh", "-c", "while true; do date +%s%N > /t; sleep 0.05; done")
    daemon.docker("pause", "p1")
    state = inspect(daemon, "p1")["State"]
    assert (state["Status"], state["Running"], state["Paused"]) == ("paused", True, True)
    assert "(Paused)" in daemon.docker("ps", "--format", "{{.Status}}").stdout
    assert daemon.docker("ps", "-q", "--filter", "status=paused").stdout.strip()
    pid = state["Pid"]
    cgroups = Cgroups.of_pid(pid)
    assert cgroups.frozen() and pid in cgroups.pids()
    for args, message in ((("pause", "p1"), "is already paused"),
                          (("exec", "p1", "true"), "is paused, unpause the container before exec"),
                          (("rm", "p1"), "You cannot remove a paused container")):
        refused = daemon.docker(*args, check=False)
        assert refused.returncode != 0 and message in refused.stderr, (args, refused.stderr)
    daemon.docker("unpause", "p1")
    assert inspect(daemon, "p1")["State"]["Status"] == "running"
    refused = daemon.docker("unpause", "p1", check=False)
    assert refused.returncode != 0 and "is not paused" in refused.stderr
    daemon.docker("exec", "p1", "true")
    daemon.docker("pause", "p1")
    refused = daemon.docker("start", "p1", check=False)
    assert refused.returncode != 0 and "cannot start a paused container, try unpause instead" in refused.stderr
    daemon.docker("stop", "-t", "1", "p1")  # the stop signal thaws it so that it can die, as dockerd
    assert inspect(daemon, "p1")["State"]["Status"] == "exited"
    daemon.docker("start", "p1")
    daemon.docker("pause", "p1")
    daemon.docker("rm", "-f", "p1")
    assert daemon.docker("ps", "-aq").stdout.strip() == ""


def test_restart_policies_back_off_count_and_stop(daemon) -> None:
    daemon.docker("run", "-d", "--name", "f2", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 3")
    wait_for(lambda: (lambda c: c["RestartCount"] == 2 and c["State"]["Status"] == "exited")(inspect(daemon, "f2")))
    time.sleep(0.5)  # the third failure is final: no further restart comes
    info = inspect(daemon, "f2")
    assert (info["RestartCount"], info["State"]["Status"], info["State"]["ExitCode"]) == (2, "exited", 3)
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}

    daemon.docker("run", "-d", "--name", "a1", "--restart", "always", "busybox", "sh", "-c", "sleep 0.3; exit 1")
    wait_for(lambda: inspect(daemon, "a1")["RestartCount"] >= 2)
    statuses: set[str] = set()

    def seen_restarting() -> bool:
        state = inspect(daemon, "a1")["State"]
        statuses.add(state["Status"])
        return state["Restarting"] and state["Running"]

    wait_for(seen_restarting)
    assert "Restarting (1)" in daemon.docker("ps", "--format", "{{.Status}}", "--filter", "name=a1").stdout or \
        inspect(daemon, "a1")["State"]["Status"] in ("running", "restarting")
    refused = daemon.docker("rm", "a1", check=False)
    assert refused.returncode != 0 and "top the container before" in refused.stderr
    daemon.docker("stop", "-t", "1", "a1")
    count = inspect(daemon, "a1")["RestartCount"]
    time.sleep(0.8)
    info = inspect(daemon, "a1")
    assert info["State"]["Status"] == "exited" and info["RestartCount"] == count
    daemon.docker("start", "a1")  # the user's start begins a fresh count
    assert inspect(daemon, "a1")["RestartCount"] == 0

    daemon.docker("run", "-d", "--name", "k2", "--restart", "always", "busybox", "sleep", "1000")
    daemon.docker("kill", "k2")  # killed by the user: not restarted, whatever the policy
    time.sleep(0.5)
    assert inspect(daemon, "k2")["State"]["Status"] == "exited"


def test_a_stop_during_a_policy_restart_leaves_the_container_stopped(daemon) -> None:
    """A stop that lands in the back-off or in the middle of the restart's start: the container ends
    stopped either way (the start is let finish, then stopped), never running on. Its first run fails,
    the restarted one would run for good; the stops come at instants spread over back-off and start."""
    script = "if [ -f /ran ]; then sleep 1000; else touch /ran; exit 1; fi"
    for i, delay in enumerate((0.0, 0.05, 0.1, 0.15, 0.2, 0.3)):
        name = f"rs{i}"
        daemon.docker("run", "-d", "--name", name, "--restart", "always", "busybox", "sh", "-c", script)
        wait_for(lambda: inspect(daemon, name)["RestartCount"] >= 1)  # the first exit handled
        time.sleep(delay)
        daemon.docker("stop", "-t", "0", name)
        time.sleep(0.5)  # a start that was under way has long finished
        state = inspect(daemon, name)["State"]
        assert (state["Status"], state["Running"], state["Restarting"]) == ("exited", False, False), (delay, state)
        daemon.docker("rm", name)


def test_restart_policies_are_checked(daemon) -> None:
    for policy, message in (("always:3", "maximum retry count cannot be used with restart policy 'always'"),
                            ("bogus", "invalid restart policy 'bogus'")):
        refused = daemon.docker("create", "--restart", policy, "busybox", check=False)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    client = docker_sdk.APIClient(base_url=daemon.env["DOCKER_HOST"], version="1.41")
    try:
        with pytest.raises(docker_sdk.errors.APIError) as err:
            client.create_container("busybox", "true", host_config=client.create_host_config(
                auto_remove=True, restart_policy={"Name": "always"}))
        assert err.value.status_code == 400 and "AutoRemove" in str(err.value)
        with pytest.raises(docker_sdk.errors.APIError) as err:
            client.create_container("busybox", "true", host_config=client.create_host_config(
                restart_policy={"Name": "on-failure", "MaximumRetryCount": -1}))
        assert "cannot be negative" in str(err.value)
    finally:
        client.close()
    assert daemon.docker("ps", "-aq").stdout.strip() == ""


def test_restart_policy_after_muslind_restarts(daemon) -> None:
    """As dockerd when it starts: always and unless-stopped containers that had stopped run again,
    unless-stopped ones stopped by the user do not, `always` ones do even then."""
    for name, policy in (("always1", "always"), ("unless1", "unless-stopped"), ("unless2", "unless-stopped"),
                         ("none1", "no"), ("always2", "always")):
        daemon.docker("run", "-d", "--name", name, "--restart", policy, "busybox", "sleep", "1000")
    daemon.docker("stop", "-t", "0", "unless2", "always2")
    pids = [inspect(daemon, n)["State"]["Pid"] for n in ("always1", "unless1", "none1")]
    daemon.stop()
    for pid in pids:  # what a reboot does to them while muslind is away
        os.kill(pid, signal.SIGKILL)
    daemon.start()
    statuses = {n: inspect(daemon, n)["State"]["Status"]
                for n in ("always1", "unless1", "unless2", "none1", "always2")}
    assert statuses == {"always1": "running", "unless1": "running", "unless2": "exited", "none1": "exited",
                        "always2": "running"}


def test_update_applies_limits_to_the_running_container(daemon) -> None:
    daemon.docker("run", "-d", "--name", "u1", "-m", "64m", "busybox", "sleep", "1000")
    pid = inspect(daemon, "u1")["State"]["Pid"]
    cgroups = Cgroups.of_pid(pid)
    assert int(cgroups.read("memory", "memory.limit_in_bytes") or 0) == 64 << 20
    daemon.docker("update", "--memory", "96m", "--memory-swap", "192m", "--cpu-shares", "512", "--pids-limit", "50",
                  "--cpus", "0.5", "--restart", "on-failure:3", "u1")
    host = inspect(daemon, "u1")["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["CpuShares"], host["PidsLimit"], host["NanoCpus"]) == \
        (96 << 20, 192 << 20, 512, 50, 500_000_000)
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert int(cgroups.read("memory", "memory.limit_in_bytes") or 0) == 96 << 20
    assert int(cgroups.read("cpu", "cpu.shares") or 0) == 512
    assert int(cgroups.read("cpu", "cpu.cfs_quota_us") or 0) == 50_000
    assert int(cgroups.read("pids", "pids.max") or 0) == 50
    refused = daemon.docker("update", "--memory", "1m", "u1", check=False)
    assert refused.returncode != 0 and "Minimum memory limit allowed is 6MB" in refused.stderr
    assert inspect(daemon, "u1")["HostConfig"]["Memory"] == 96 << 20
    daemon.docker("restart", "-t", "0", "u1")  # the new limits hold for the next run too
    cgroups = Cgroups.of_pid(inspect(daemon, "u1")["State"]["Pid"])
    assert int(cgroups.read("memory", "memory.limit_in_bytes") or 0) == 96 << 20


def test_healthchecks_in_inspect_ps_and_filters(daemon) -> None:
    daemon.docker("run", "-d", "--name", "h1", "--health-cmd", "test -e /ok && echo fine", "--health-interval", "200ms",
                  "--health-retries", "2", "busybox", "sleep", "1000")
    daemon.docker("run", "-d", "--name", "plain", "busybox", "sleep", "1000")
    info = inspect(daemon, "h1")
    assert info["Config"]["Healthcheck"] == {"Test": ["CMD-SHELL", "test -e /ok && echo fine"],
                                             "Interval": 200_000_000, "Retries": 2}
    assert "Health" not in inspect(daemon, "plain")["State"]
    wait_for(lambda: inspect(daemon, "h1")["State"]["Health"]["Status"] == "unhealthy")
    health = inspect(daemon, "h1")["State"]["Health"]
    assert health["FailingStreak"] >= 2 and health["Log"][-1]["ExitCode"] == 1
    assert "(unhealthy)" in daemon.docker("ps", "--format", "{{.Status}}", "--filter", "name=h1").stdout
    assert daemon.docker("ps", "--format", "{{.Names}}", "--filter", "health=unhealthy").stdout.split() == ["h1"]
    assert daemon.docker("ps", "--format", "{{.Names}}", "--filter", "health=none").stdout.split() == ["plain"]
    refused = daemon.docker("ps", "--filter", "health=sick", check=False)
    assert refused.returncode != 0 and "Unrecognised filter value for health: sick" in refused.stderr
    daemon.docker("exec", "h1", "touch", "/ok")
    wait_for(lambda: inspect(daemon, "h1")["State"]["Health"]["Status"] == "healthy")
    health = inspect(daemon, "h1")["State"]["Health"]
    assert health["FailingStreak"] == 0 and health["Log"][-1]["Output"] == "fine\n"
    assert len(health["Log"]) <= 5
    assert "(healthy)" in daemon.docker("ps", "--format", "{{.Status}}", "--filter", "name=h1").stdout

    daemon.docker("run", "-d", "--name", "h2", "--health-cmd", "sleep 5", "--health-interval", "100ms",
                  "--health-timeout", "200ms", "busybox", "sleep", "1000")
    wait_for(lambda: bool(inspect(daemon, "h2")["State"]["Health"]["Log"]))
    first = inspect(daemon, "h2")["State"]["Health"]["Log"][0]
    assert (first["ExitCode"], first["Output"]) == (-1, "Health check exceeded timeout (200ms)")

    daemon.docker("run", "-d", "--name", "h3", "--no-healthcheck", "busybox", "sleep", "1000")
    info = inspect(daemon, "h3")
    assert info["Config"]["Healthcheck"] == {"Test": ["NONE"]} and "Health" not in info["State"]
    client = docker_sdk.APIClient(base_url=daemon.env["DOCKER_HOST"], version="1.41")
    try:  # the CLI checks these itself; the daemon must too
        for hc, message in (({"test": ["CMD", "true"], "retries": -1}, "Retries in Healthcheck cannot be negative"),
                            ({"test": ["CMD", "true"], "interval": 100}, "Interval in Healthcheck cannot be less than 1ms")):
            with pytest.raises(docker_sdk.errors.APIError) as err:
                client.create_container("busybox", "true", healthcheck=hc)
            assert err.value.status_code == 400 and message in str(err.value)
    finally:
        client.close()


def test_top_and_stats(daemon) -> None:
    daemon.docker("run", "-d", "--name", "t1", "busybox", "sh", "-c", "sleep 1000 & exec sleep 999")
    daemon.docker("run", "-d", "--name", "other", "busybox", "sleep", "998")
    pid = inspect(daemon, "t1")["State"]["Pid"]
    rows = daemon.docker("top", "t1").stdout.splitlines()
    assert rows[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    commands = sorted(" ".join(r.split()[7:]) for r in rows[1:])
    assert commands == ["sleep 1000", "sleep 999"] and str(pid) in rows[1] + rows[2]
    rows = daemon.docker("top", "t1", "-o", "pid,comm").stdout.splitlines()
    assert rows[0].split() == ["PID", "COMMAND"] and len(rows) == 3
    for args, message in ((("top", "t1", "-o", "comm"), "Couldn't find PID field in ps output"),
                          (("top", "t1", "-o", "user=PID"), 'specifying "user=PID" is not allowed')):
        refused = daemon.docker(*args, check=False)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr

    client = docker_sdk.APIClient(base_url=daemon.env["DOCKER_HOST"], version="1.41")
    try:
        daemon.docker("exec", "t1", "ping", "-c", "2", "-W", "1", inspect(daemon, "other")["NetworkSettings"]["IPAddress"])
        one = client.stats("t1", stream=False)
        assert one["name"] == "/t1" and one["pids_stats"]["current"] == 2
        assert one["cpu_stats"]["system_cpu_usage"] > one["precpu_stats"]["system_cpu_usage"] > 0
        assert one["cpu_stats"]["online_cpus"] == os.cpu_count()
        assert 0 < one["memory_stats"]["usage"] <= one["memory_stats"]["limit"]
        assert one["networks"]["eth0"]["tx_packets"] >= 2 and one["networks"]["eth0"]["rx_bytes"] > 0
        shot = client.stats("t1", stream=False, one_shot=True)
        assert shot["precpu_stats"]["cpu_usage"]["total_usage"] == 0 and shot["preread"] == "0001-01-01T00:00:00Z"
        stream = client.stats("t1", decode=True)
        first, second = next(stream), next(stream)
        assert second["precpu_stats"] == first["cpu_stats"]
        stream.close()
    finally:
        client.close()
    line = daemon.docker("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}} {{.NetIO}}", "t1").stdout.split()
    assert line[:2] == ["t1", "2"] and line[2].endswith("B")
    daemon.docker("stop", "-t", "0", "t1")
    refused = daemon.docker("top", "t1", check=False)
    assert refused.returncode != 0 and "is not running" in refused.stderr


def _image_archive(path, healthcheck: dict) -> None:
    """A `docker load` archive of one busybox layer whose image config has a HEALTHCHECK."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.add("/usr/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "sleep", "echo"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    layer_bytes = layer.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "Healthcheck": healthcheck},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]}
                         }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["checked:1"], "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as out:
        for name, data in ((config_name, config), ("layer/layer.tar", layer_bytes), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def test_the_image_healthcheck_is_inherited(daemon, tmp_path) -> None:
    """An image whose config has a HEALTHCHECK: its containers are probed by it, what `docker run` gives
    overriding it field by field."""
    healthcheck = {"Test": ["CMD-SHELL", "echo from-image; exit 1"], "Interval": 100_000_000, "Retries": 1}
    _image_archive(tmp_path / "checked.tar", healthcheck)
    daemon.docker("load", "-i", str(tmp_path / "checked.tar"))
    daemon.docker("run", "-d", "--name", "img1", "checked:1", "sleep", "1000")
    daemon.docker("run", "-d", "--name", "img2", "--health-retries", "3", "checked:1", "sleep", "1000")
    assert inspect(daemon, "img1")["Config"]["Healthcheck"] == healthcheck
    assert inspect(daemon, "img2")["Config"]["Healthcheck"] == {**healthcheck, "Retries": 3}
    wait_for(lambda: inspect(daemon, "img1")["State"]["Health"]["Status"] == "unhealthy")
    assert inspect(daemon, "img1")["State"]["Health"]["Log"][0]["Output"] == "from-image\n"
    daemon.docker("rm", "-f", "img1", "img2")
    daemon.docker("rmi", "checked:1")


def test_memory_limit_and_oom_killed(daemon) -> None:
    daemon.docker("run", "-d", "--name", "oom", "-m", "8m", "busybox", "tail", "/dev/zero")  # one endless line
    host = inspect(daemon, "oom")["HostConfig"]
    assert (host["Memory"], host["MemorySwap"]) == (8 << 20, 16 << 20)  # swap as much again, as dockerd
    wait_for(lambda: inspect(daemon, "oom")["State"]["Status"] == "exited")
    state = inspect(daemon, "oom")["State"]
    assert (state["OOMKilled"], state["ExitCode"]) == (True, 137)
    daemon.docker("run", "-d", "--name", "killed", "-m", "8m", "busybox", "sleep", "1000")
    daemon.docker("kill", "killed")
    assert inspect(daemon, "killed")["State"]["OOMKilled"] is False
