"""Legacy links and endpoint links through the real docker CLI, as dockerd 20.10 gives them: variables,
/etc/hosts lines, inspect, `docker rm --link`, DNS aliases on user-defined networks, refusals."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


def _env(daemon, *args: str) -> dict[str, str]:
    out = daemon.docker("run", "--rm", *args, "busybox", "env").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_link_on_the_default_bridge_gives_variables_hosts_line_and_inspect(daemon) -> None:
    daemon.docker("run", "-d", "--name", "db", "-e", "FOO=bar", "--expose", "5432", "--hostname", "dbhost",
                  "busybox", "sleep", "300")
    db_ip = daemon.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "db").stdout.strip()
    env = _env(daemon, "--name", "web", "--link", "db:my-db")
    assert env["MY_DB_NAME"] == "/web/my-db"
    assert env["MY_DB_ENV_FOO"] == "bar"
    assert "MY_DB_ENV_PATH" not in env
    assert env["MY_DB_PORT"] == f"tcp://{db_ip}:5432"
    assert env["MY_DB_PORT_5432_TCP_ADDR"] == db_ip
    assert env["MY_DB_PORT_5432_TCP_PROTO"] == "tcp"
    hosts = daemon.docker("run", "--rm", "--link", "db:my-db", "busybox", "cat", "/etc/hosts").stdout
    assert f"{db_ip}\tmy-db dbhost db" in hosts.splitlines()
    # The parent reaches the child by its alias.
    daemon.docker("run", "--rm", "--link", "db:my-db", "busybox", "ping", "-c1", "-W2", "my-db")

    daemon.docker("create", "--name", "app", "--link", "db:al", "busybox", "sleep", "300")
    links = json.loads(daemon.docker("inspect", "-f", "{{json .HostConfig.Links}}", "app").stdout)
    assert links == ["/db:/app/al"]
    names = daemon.docker("ps", "-a", "--no-trunc", "--format", "{{.Names}}", "--filter", "name=db").stdout
    assert sorted(names.strip().split(",")) == ["app/al", "db"]


def test_link_follows_the_childs_address_and_rm_link_removes_only_the_link(daemon) -> None:
    daemon.docker("create", "--name", "filler", "busybox", "sleep", "300")
    daemon.docker("run", "-d", "--name", "child", "busybox", "sleep", "300")
    daemon.docker("run", "-d", "--name", "parent", "--link", "child:kid", "busybox", "sleep", "300")
    # The child comes back with another address: the running parent's /etc/hosts follows.
    daemon.docker("stop", "-t", "0", "child")
    daemon.docker("start", "filler")
    daemon.docker("start", "child")
    new_ip = daemon.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "child").stdout.strip()
    hosts = daemon.docker("exec", "parent", "cat", "/etc/hosts").stdout
    assert any(line.startswith(f"{new_ip}\tkid ") for line in hosts.splitlines())

    # The link outlives a restart of muslind (the parent keeps running meanwhile).
    daemon.stop()
    daemon.start()
    assert json.loads(daemon.docker("inspect", "-f", "{{json .HostConfig.Links}}", "parent").stdout) == ["/child:/parent/kid"]
    daemon.docker("restart", "-t", "0", "parent")
    assert daemon.docker("exec", "parent", "sh", "-c", "echo $KID_NAME").stdout.strip() == "/parent/kid"

    daemon.docker("rm", "--link", "/parent/kid")
    assert daemon.docker("inspect", "-f", "{{json .HostConfig.Links}}", "parent").stdout.strip() == "null"
    assert "kid" not in daemon.docker("exec", "parent", "cat", "/etc/hosts").stdout
    assert sorted(daemon.docker("ps", "--format", "{{.Names}}").stdout.split()) == ["child", "filler", "parent"]
    assert "parent/kid" not in daemon.docker("ps", "--no-trunc", "--format", "{{.Names}}").stdout
    # A removed child stays named in the parent's links, which then cannot start (as with dockerd).
    daemon.docker("run", "-d", "--name", "gone", "busybox", "sleep", "300")
    daemon.docker("create", "--name", "orphan", "--link", "gone:g", "busybox", "sleep", "300")
    daemon.docker("rm", "-f", "gone")
    assert json.loads(daemon.docker("inspect", "-f", "{{json .HostConfig.Links}}", "orphan").stdout) == ["/gone:/orphan/g"]
    failed = daemon.docker("start", "orphan", check=False)
    assert failed.returncode != 0 and "Cannot link to a non running container: /gone AS /orphan/g" in failed.stderr
    # A container's own name is no link.
    gone = daemon.docker("rm", "--link", "child", check=False)
    assert gone.returncode != 0 and "cannot remove the default link name" in gone.stderr


def test_links_to_missing_or_stopped_containers_are_refused(daemon) -> None:
    missing = daemon.docker("create", "--name", "p1", "--link", "nosuch:al", "busybox", check=False)
    assert missing.returncode != 0
    assert "could not get container for nosuch" in missing.stderr
    assert daemon.docker("ps", "-aq").stdout.strip() == ""
    daemon.docker("create", "--name", "stopped", "busybox", "true")
    refused = daemon.docker("run", "--name", "p2", "--link", "stopped:s", "busybox", "true", check=False)
    assert refused.returncode != 0
    assert "Cannot link to a non running container: /stopped AS /p2/s" in refused.stderr
    # The refused start left no endpoint behind.
    assert daemon.docker("network", "inspect", "-f", "{{len .Containers}}", "bridge").stdout.strip() == "0"
    host = daemon.docker("run", "--network", "host", "--link", "stopped:s", "busybox", "true", check=False)
    assert host.returncode != 0 and "host type networking can't be used with links" in host.stderr


def test_links_on_a_user_network_are_dns_aliases_of_the_linking_container_only(daemon) -> None:
    daemon.docker("network", "create", "--subnet", "10.77.0.0/24", "un1")
    daemon.docker("run", "-d", "--name", "u1", "--network", "un1", "busybox", "sleep", "300")
    u1_ip = daemon.docker("inspect", "-f", "{{.NetworkSettings.Networks.un1.IPAddress}}", "u1").stdout.strip()
    daemon.docker("run", "-d", "--name", "asker", "--network", "un1", "--link", "u1:db", "busybox", "sleep", "300")
    endpoint = json.loads(daemon.docker("inspect", "-f", "{{json .NetworkSettings.Networks.un1}}", "asker").stdout)
    assert endpoint["Links"] == ["u1:db"]
    answer = daemon.docker("exec", "asker", "nslookup", "db").stdout
    assert u1_ip in answer
    daemon.docker("run", "-d", "--name", "other", "--network", "un1", "busybox", "sleep", "300")
    assert daemon.docker("exec", "other", "nslookup", "db", check=False).returncode != 0

    # network connect --link: the alias resolves for that container, also to a container made later.
    daemon.docker("create", "--name", "late", "--network", "un1", "busybox", "sleep", "300")
    daemon.docker("network", "disconnect", "un1", "late")
    daemon.docker("network", "connect", "--link", "upstream:bar", "un1", "late")
    daemon.docker("start", "late")
    daemon.docker("run", "-d", "--name", "upstream", "--network", "un1", "busybox", "sleep", "300")
    up_ip = daemon.docker("inspect", "-f", "{{.NetworkSettings.Networks.un1.IPAddress}}", "upstream").stdout.strip()
    assert up_ip in daemon.docker("exec", "late", "nslookup", "bar").stdout
    bad = daemon.docker("network", "connect", "--link", "a:b:c", "un1", "other", check=False)
    assert bad.returncode != 0 and "bad format for links: a:b:c" in bad.stderr


def test_aliases_on_the_default_bridge_are_refused_as_dockerd_does(daemon) -> None:
    daemon.docker("create", "--name", "c4", "busybox", "sleep", "300")
    daemon.docker("network", "disconnect", "bridge", "c4")
    refused = daemon.docker("network", "connect", "--alias", "xx", "bridge", "c4", check=False)
    assert refused.returncode != 0
    assert "network-scoped alias is supported only for containers in user defined networks" in refused.stderr
    assert daemon.docker("inspect", "-f", "{{len .NetworkSettings.Networks}}", "c4").stdout.strip() == "0"
