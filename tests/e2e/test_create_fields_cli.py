"""Small create-time fields through the real docker CLI, as dockerd takes them: --group-add, --runtime,
--log-driver/--log-opt (stored, shown, unknown ones refused; `docker logs` of a "none" container refused)."""

from __future__ import annotations

import json

import pytest

from .conftest import Daemon

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


def test_group_add_by_number_and_by_name(daemon: Daemon) -> None:
    out = daemon.docker("run", "--rm", "--group-add", "1000", "--group-add", "daemon", "busybox", "id", "-G").stdout
    assert sorted(out.split(), key=int) == ["0", "1", "1000"]
    unknown = daemon.docker("run", "--rm", "--group-add", "nosuchgroup", "busybox", "id", check=False)
    assert unknown.returncode != 0
    assert "Unable to find group nosuchgroup: no matching entries in group file" in unknown.stderr


def test_runtime_and_log_config(daemon: Daemon) -> None:
    daemon.docker("create", "--name", "plain", "busybox")
    daemon.docker("create", "--name", "opts", "--runtime", "runc", "--log-driver", "local", "--log-opt", "max-file=3",
                  "busybox")
    show = "{{json .HostConfig.Runtime}} {{json .HostConfig.LogConfig}}"
    assert daemon.docker("inspect", "--format", show, "plain").stdout.split(" ", 1) == [
        '"runc"', json.dumps({"Type": "json-file", "Config": {}}, separators=(",", ":")) + "\n"]
    assert json.loads(daemon.docker("inspect", "--format", "{{json .HostConfig.LogConfig}}", "opts").stdout) == \
        {"Type": "local", "Config": {"max-file": "3"}}
    for args, message in ((("--runtime", "kata"), "Unknown runtime specified kata"),
                          (("--log-driver", "asdf"), 'error looking up logging plugin asdf: plugin "asdf" not found'),
                          (("--log-opt", "bogus=1"), "unknown log opt 'bogus' for json-file log driver"),
                          (("--log-opt", "max-size=10m"), "log opt 'max-size' is not supported")):
        refused = daemon.docker("create", "--name", "bad", *args, "busybox", check=False)
        assert refused.returncode != 0 and message in refused.stderr
    assert "bad" not in daemon.docker("ps", "-a", "--format", "{{.Names}}").stdout
    assert daemon.docker("run", "--name", "quiet", "--log-driver", "none", "busybox", "echo", "hi").stdout == "hi\n"
    logs = daemon.docker("logs", "quiet", check=False)
    assert logs.returncode != 0 and "configured logging driver does not support reading" in logs.stderr
