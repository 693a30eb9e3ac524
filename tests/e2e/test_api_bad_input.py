"""Bad input over the API of a real muslind: a 4xx with Docker's message, nothing stored, lists intact."""

from __future__ import annotations

import pytest
import requests
from docker.transport import UnixHTTPAdapter

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(shared_daemon):
    """One muslind for the module, put back as it started after each test (tests/e2e/conftest.py's DaemonPool)."""
    return shared_daemon


def session_for(daemon) -> tuple[requests.Session, str]:  # noqa: ANN001
    session = requests.Session()
    session.mount("http://", UnixHTTPAdapter(f"http+unix://{daemon.sock}", timeout=30))
    return session, "http://localhost/v1.50"


def test_bad_container_fields_are_refused_and_nothing_is_stored(daemon) -> None:
    api, base = session_for(daemon)
    links_before, rules_before = daemon.sh("ip", "-o", "link"), daemon.firewall.snapshot()
    cases = [
        ({"Image": "busybox", "ExposedPorts": {"abc/tcp": {}}}, 'invalid port specification: "abc"'),
        ({"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "99999"}]}}},
         'invalid port specification: "99999"'),
        ({"Image": "busybox", "MacAddress": "02:42:zz"}, "is not a valid mac address"),
        ({"Image": "busybox", "HostConfig": {"Dns": ["not-an-ip"]}}, "IP address is not correctly formatted"),
        ({"Image": "busybox", "HostConfig": {"ExtraHosts": ["nohost"]}}, "bad format for add-host"),
        ({"Image": "busybox", "Tty": "yes"}, "of type bool"),
        ({"Image": "busybox", "StopSignal": "SIGNOPE"}, "Invalid signal: SIGNOPE"),
    ]
    for body, message in cases:
        answer = api.post(f"{base}/containers/create", json=body)
        assert answer.status_code == 400 and message in answer.json()["message"], (body, answer.text)
    answer = api.post(f"{base}/containers/create", params={"name": "test 01"}, json={"Image": "busybox"})
    assert answer.status_code == 400 and "Invalid container name (test 01)" in answer.json()["message"]
    # Nothing was stored: the list answers, empty; the kernel holds what it held.
    listed = api.get(f"{base}/containers/json", params={"all": "1"})
    assert listed.status_code == 200 and listed.json() == []
    assert daemon.sh("ip", "-o", "link") == links_before
    assert daemon.firewall.snapshot() == rules_before


def test_path_parameters_are_percent_decoded_and_queries_checked(daemon) -> None:
    api, base = session_for(daemon)
    daemon.docker("create", "--name", "web01", "busybox", "true")
    assert api.get(f"{base}/containers/web%301/json").json()["Name"] == "/web01"
    missing = api.get(f"{base}/containers/test%2001/json")
    assert missing.status_code == 404 and missing.json()["message"] == "No such container: test 01"
    assert api.get(f"{base}/containers/json", params={"limit": "abc"}).status_code == 400
    assert api.get(f"{base}/containers/json", params={"filters": "{not json"}).status_code == 400
    assert api.get(f"{base}/networks", params={"filters": '{"name":"x"}'}).status_code == 400
    assert api.post(f"{base}/containers/web01/kill", params={"signal": "NOPE"}).status_code == 400
    resize = api.post(f"{base}/exec/nosuchexec/resize", params={"h": "10", "w": "10"})
    assert resize.status_code == 404 and "No such exec instance" in resize.json()["message"]


def test_oversized_body_is_413_and_swarm_answers_as_dockerd_outside_one(daemon) -> None:
    api, base = session_for(daemon)
    big = api.post(f"{base}/containers/create", data=b" " * (9 * 1024 * 1024),
                   headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    leave = api.post(f"{base}/swarm/leave")
    assert leave.status_code == 503 and leave.json()["message"] == "This node is not part of a swarm"
    assert api.get(f"{base}/nodes").status_code == 503
    proc = daemon.docker("swarm", "leave", check=False)
    assert proc.returncode != 0 and "not part of a swarm" in proc.stderr
    assert daemon.docker("ps", "-a", "-q").stdout == ""
