"""Images without a registry, container options, and a muslind killed with SIGKILL."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tarfile
import time

import docker as docker_sdk
import pytest

from ..firewall_view import Forward

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


def _rootfs_tar(tmp_path) -> str:
    """A tiny root filesystem: busybox and one file of our own."""
    path = tmp_path / "rootfs.tar"
    with tarfile.open(path, "w") as tar:
        tar.add("/usr/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "cat"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        data = b"made by the test\n"
        info = tarfile.TarInfo("etc/marker")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_import_save_load_rmi_and_pull(daemon, tmp_path) -> None:
    images = daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert images == ["busybox:latest"]
    tar = _rootfs_tar(tmp_path)
    with open(tar, "rb") as f:
        subprocess.run(["docker", "import", "-c", 'CMD ["cat", "/etc/marker"]', "-", "mine:1"], stdin=f,
                       env=daemon.env, check=True, capture_output=True)
    assert daemon.docker("run", "--rm", "mine:1").stdout == "made by the test\n"
    started = time.monotonic()
    missing = daemon.docker("run", "--rm", "nosuch:image", check=False)
    assert missing.returncode != 0 and "Unable to find image" in missing.stderr and "no registry" in missing.stderr
    pull = daemon.docker("pull", "alpine", check=False)
    assert pull.returncode != 0 and "no registry" in pull.stderr
    # dockerd's words for a repository the registry lacks: docker-py's run() then raises ImageNotFound.
    assert "pull access denied for alpine, repository does not exist" in pull.stderr
    client = docker_sdk.DockerClient(base_url=f"unix://{daemon.sock}")
    try:
        with pytest.raises(docker_sdk.errors.ImageNotFound, match="no registry"):
            client.containers.run("nosuch_image_for_sdk", "true")
    finally:
        client.close()
    assert time.monotonic() - started < 10  # at once, never a hang on a registry
    load = subprocess.run(["docker", "load", "-i", _save_archive(tmp_path, tar)], env=daemon.env,
                          capture_output=True, text=True, check=True)
    assert "Loaded image: loaded:1" in load.stdout
    assert daemon.docker("run", "--rm", "loaded:1").stdout == "made by the test\n"
    daemon.docker("rmi", "mine:1", "loaded:1")
    assert daemon.docker("images", "--format", "{{.Repository}}").stdout.split() == ["busybox"]
    in_use = daemon.docker("run", "-d", "--name", "user", "busybox", "sleep", "30")
    assert daemon.docker("rmi", "busybox", check=False).returncode != 0, in_use
    daemon.docker("rm", "-f", "user")


def _save_archive(tmp_path, layer_tar: str) -> str:
    """What `docker save` writes: manifest.json, the image config, one layer."""
    import hashlib

    layer = open(layer_tar, "rb").read()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["cat", "/etc/marker"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["loaded:1"], "Layers": ["l1/layer.tar"]}]).encode()
    path = tmp_path / "saved.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest.json", manifest), (config_name, config), ("l1/layer.tar", layer)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_container_options_ip_mac_alias_random_ports_rename_kill_restart(daemon) -> None:
    daemon.docker("network", "create", "--subnet", "10.70.0.0/24", "opts")
    daemon.docker("run", "-d", "--name", "svc", "--network", "opts", "--ip", "10.70.0.50",
                  "--mac-address", "02:42:0a:46:00:99", "--network-alias", "db", "--hostname", "svchost",
                  "-P", "--expose", "9000", "busybox", "sleep", "300")
    (doc,) = json.loads(daemon.docker("inspect", "svc").stdout)
    net = doc["NetworkSettings"]["Networks"]["opts"]
    assert net["IPAddress"] == "10.70.0.50" and net["MacAddress"] == "02:42:0a:46:00:99"
    assert net["Aliases"] == ["db", doc["Id"][:12], "svchost"]  # dockerd 20.10 adds the short id and hostname
    port = doc["NetworkSettings"]["Ports"]["9000/tcp"][0]
    assert 32768 <= int(port["HostPort"]) < 61000
    assert Forward("tcp", int(port["HostPort"]), "10.70.0.50:9000") in daemon.firewall.forwards()
    assert daemon.docker("exec", "svc", "hostname").stdout.strip() == "svchost"
    taken = daemon.docker("run", "-d", "--network", "opts", "--ip", "10.70.0.50", "busybox", "sleep", "1", check=False)
    assert taken.returncode != 0 and "already in use" in taken.stderr
    daemon.docker("rename", "svc", "svc2")
    assert daemon.docker("ps", "--format", "{{.Names}}").stdout.split() == ["svc2"]
    daemon.docker("restart", "-t", "0", "svc2")
    (after,) = json.loads(daemon.docker("inspect", "svc2").stdout)
    assert after["State"]["Running"] and after["NetworkSettings"]["Networks"]["opts"]["IPAddress"] == "10.70.0.50"
    daemon.docker("kill", "-s", "KILL", "svc2")
    assert daemon.docker("wait", "svc2").stdout.strip() == "137"
    (killed,) = json.loads(daemon.docker("inspect", "svc2").stdout)
    assert killed["State"]["ExitCode"] == 137 and not killed["State"]["Running"]
    assert killed["NetworkSettings"]["Networks"]["opts"]["IPAddress"] == ""  # released while stopped
    assert "10.70.0.50" not in daemon.firewall.listing()
    daemon.docker("rm", "svc2")
    daemon.docker("network", "rm", "opts")


def test_containers_survive_muslind_being_killed(daemon) -> None:
    daemon.docker("run", "-d", "--name", "longlived", "busybox", "sleep", "300")
    (before,) = json.loads(daemon.docker("inspect", "longlived").stdout)
    daemon.stop(signal.SIGKILL)
    assert os.path.exists(f"/proc/{before['State']['Pid']}")
    daemon.docker("run", "--rm", "busybox", "true", check=False)  # nobody is listening: fails, changes nothing
    daemon.start()
    (after,) = json.loads(daemon.docker("inspect", "longlived").stdout)
    assert after["State"]["Pid"] == before["State"]["Pid"] and after["State"]["Running"]
    assert daemon.docker("exec", "longlived", "echo", "still here").stdout == "still here\n"
    daemon.docker("stop", "-t", "1", "longlived")
    daemon.docker("rm", "longlived")
    assert "veth" not in daemon.sh("ip", "link")


def test_starting_a_running_rm_container_leaves_it_running(daemon) -> None:
    """`docker start` of a running --rm container is a no-op (304), not a failed start: dockerd does not
    remove it, and neither may muslind."""
    daemon.docker("run", "-d", "--rm", "--name", "keeper", "busybox", "sleep", "300")
    assert daemon.docker("start", "keeper").returncode == 0
    assert daemon.docker("ps", "--filter", "name=keeper", "--format", "{{.Names}}").stdout.split() == ["keeper"]
    daemon.docker("rm", "-f", "keeper")


def test_capabilities_privileged_and_sysctls_for_network_labs(daemon) -> None:
    """--cap-add NET_ADMIN lets a container change its own routes, --sysctl tunes its own network
    namespace, --privileged gives every capability the daemon holds; bad values are refused cleanly."""
    route = ["ip", "route", "add", "10.99.99.0/24", "dev", "eth0"]
    denied = daemon.docker("run", "--rm", "busybox", *route, check=False)
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr
    daemon.docker("run", "--rm", "--cap-add", "NET_ADMIN", "busybox", *route)
    daemon.docker("run", "--rm", "--cap-add", "net_admin", "--cap-drop", "all", "busybox", *route)
    unknown = daemon.docker("run", "--rm", "--cap-add", "FOO", "busybox", "true", check=False)
    assert unknown.returncode != 0 and 'invalid CapAdd: unknown capability: "CAP_FOO"' in unknown.stderr

    ttl = daemon.docker("run", "--rm", "--sysctl", "net.ipv4.ip_default_ttl=33", "busybox",
                        "cat", "/proc/sys/net/ipv4/ip_default_ttl").stdout.strip()
    assert ttl == "33" and daemon.sh("cat", "/proc/sys/net/ipv4/ip_default_ttl").strip() == "64"
    on_host = daemon.docker("run", "--rm", "--network", "host", "--sysctl", "net.ipv4.ip_default_ttl=33",
                            "busybox", "true", check=False)
    assert on_host.returncode != 0 and "not allowed in host network namespace" in on_host.stderr
    client = docker_sdk.DockerClient(base_url=f"unix://{daemon.sock}")
    try:
        with pytest.raises(docker_sdk.errors.APIError, match="is not allowed: only namespaced ones"):
            client.containers.run("busybox", "true", sysctls={"vm.swappiness": "1"}, remove=True)
    finally:
        client.close()
    assert daemon.docker("ps", "-aq").stdout.strip() == ""  # refused before anything was made

    with open("/proc/self/status") as f:
        bounding = next(line.split()[1] for line in f if line.startswith("CapBnd:"))
    privileged = daemon.docker("run", "--rm", "--privileged", "busybox", "sh", "-c",
                               "sysctl -w net.ipv4.ip_default_ttl=40 >/dev/null && grep CapEff /proc/self/status").stdout
    assert privileged.split() == ["CapEff:", bounding]

    hosts = daemon.docker("run", "--rm", "--add-host", "host.docker.internal:host-gateway", "busybox",
                          "cat", "/etc/hosts").stdout
    assert "172.17.0.1\thost.docker.internal" in hosts  # the default bridge's gateway, as dockerd
    daemon.docker("run", "-d", "--name", "router", "--cap-add", "NET_ADMIN", "--sysctl", "net.ipv4.ip_forward=1",
                  "busybox", "sleep", "300")
    daemon.docker("exec", "router", *route)  # an exec has its container's capabilities
    daemon.docker("run", "-d", "--name", "plain", "busybox", "sleep", "300")
    assert daemon.docker("exec", "plain", *route, check=False).returncode != 0
    daemon.docker("exec", "--privileged", "plain", *route)  # or all of them with --privileged
    daemon.docker("rm", "-f", "plain")
    (doc,) = json.loads(daemon.docker("inspect", "router").stdout)
    assert doc["HostConfig"]["CapAdd"] == ["CAP_NET_ADMIN"]
    assert doc["HostConfig"]["Sysctls"] == {"net.ipv4.ip_forward": "1"}
    daemon.docker("rm", "-f", "router")


def test_storage_opt_refused_with_dockerds_message_and_nothing_created(daemon) -> None:
    """dockerd's overlay2 without xfs project quotas refuses a size; muslind has no quota at all."""
    sized = daemon.docker("create", "--name", "sized", "--storage-opt", "size=1G", "busybox", check=False)
    assert sized.returncode != 0
    assert "--storage-opt is supported only for overlay over xfs with 'pquota' mount option" in sized.stderr
    unknown = daemon.docker("create", "--name", "sized", "--storage-opt", "foo=1", "busybox", check=False)
    assert unknown.returncode != 0 and "Unknown option foo" in unknown.stderr
    assert daemon.docker("ps", "-aq").stdout.strip() == ""
