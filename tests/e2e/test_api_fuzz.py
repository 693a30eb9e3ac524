"""The Engine API spec, fuzzed against a muslind in its own namespace (schemathesis).

Every operation of the swagger gets requests built from its schema, valid and not; some aimed at a live
container and network. muslind must answer each without a 5xx (the swarm routes' 503 is Docker's own
answer for a node outside a swarm) and within a timeout, and once everything the fuzz made is removed,
the daemon's namespace holds exactly the links and firewall rules it held before.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from docker.transport import UnixHTTPAdapter
from hypothesis import HealthCheck, Phase, given, settings

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
SPEC_NAME = "specs/docker-engine-api-swagger.yaml"
FIRST_PASS_EXAMPLES = 3  # per operation, whatever the time
BUDGET_SECONDS = 40.0  # then more examples, generation and requests together; the spec has 107 operations
EXAMPLES_PER_OPERATION = 15
REQUEST_TIMEOUT = 10.0
# Operations that hold the connection by design (hijacked streams, waits, event streams): a fuzz
# request to them measures the container's lifetime, not the API.
LONG_POLLS = {("POST", "/containers/{id}/attach"), ("GET", "/containers/{id}/attach/ws"),
              ("POST", "/containers/{id}/wait"), ("POST", "/exec/{id}/start"), ("GET", "/events"),
              ("GET", "/containers/{id}/stats")}
SWARM_PATHS = re.compile(r"^/(swarm|nodes|services|tasks|secrets|configs)(/|$)")
TARGET_CONTAINER = "fuzz-target"
TARGET_NETWORK = "fuzznet"


def spec_path() -> Path:
    """shared/ sits beside the repository (CI's clone, /work/main); a git worktree finds it beside its
    main checkout (its .git file names <main>/.git/worktrees/<name>)."""
    roots = [REPO]
    dot_git = REPO / ".git"
    if dot_git.is_file():
        roots.append(Path(dot_git.read_text().partition("gitdir:")[2].strip()).parents[2])
    candidates = [root.parent / "shared" / SPEC_NAME for root in roots]
    found = next((p for p in candidates if p.is_file()), None)
    assert found is not None, f"the Engine API spec is not at any of {candidates}"
    return found


@schemathesis.serializer("application/x-tar")
def tar_body(ctx: Any, value: Any) -> dict[str, Any]:
    """`docker import`/`load`/`build` bodies: bytes as generated, anything else as JSON (also refused)."""
    return {"data": value if isinstance(value, bytes) else json.dumps(value).encode()}


def kernel_state(daemon) -> tuple[frozenset[str], frozenset[str], object]:  # noqa: ANN001
    links = frozenset(line.split(": ")[1].split("@")[0] for line in daemon.sh("ip", "-o", "link").splitlines()
                      if ": " in line)
    rules = frozenset(line for line in daemon.sh("iptables-save").splitlines()
                      if line.startswith(("-A", ":", "*")) and not line.startswith("#"))
    # Chain counters ("[0:0]") change with traffic, not with what the daemon programs. The firewall's
    # own rules as its backend holds them (with nftables, set elements).
    return (links, frozenset(re.sub(r"\[\d+:\d+\]", "", r) for r in rules),
            daemon.firewall.snapshot(ordered=False))


def aim(case: Any, rng: random.Random, host_root: Path) -> None:
    """Point some cases at live objects, so more than the 404 path of each handler runs."""
    params = case.path_parameters or {}
    path = case.operation.path
    if "id" in params and rng.random() < 0.5:
        if path.startswith("/containers/"):
            params["id"] = TARGET_CONTAINER
        elif path.startswith("/networks/"):
            params["id"] = TARGET_NETWORK
    if path == "/containers/{id}/logs" and isinstance(case.query, dict):
        case.query["follow"] = False  # following would last as long as the container
    if isinstance(case.query, dict) and isinstance(case.query.get("t"), int) and not 0 <= case.query["t"] <= 1:
        case.query["t"] = 1  # a stop told to wait 2510 s (or forever: t < 0) waits that long, as with dockerd
    if path == "/containers/create" and isinstance(case.body, dict):
        if rng.random() < 0.5:
            case.body["Image"] = "busybox"  # past the image lookup, into the body's checks
        confine_host_paths(case.body, host_root)


def confine_host_paths(body: dict[str, Any], host_root: Path) -> None:
    """Bind sources under the test's own directory: dockerd (and muslind) create a missing bind source
    on the host, and a fuzzed "/x:/y" must not make /x on the machine."""
    host = body.get("HostConfig")
    if not isinstance(host, dict):
        return
    binds = host.get("Binds")
    if isinstance(binds, list):
        host["Binds"] = [f"{host_root}{b}" if isinstance(b, str) and b.startswith("/") else b for b in binds]
    mounts = host.get("Mounts")
    if isinstance(mounts, list):
        for mount in mounts:
            if isinstance(mount, dict) and isinstance(mount.get("Source"), str) and mount["Source"].startswith("/"):
                mount["Source"] = f"{host_root}{mount['Source']}"


def test_spec_fuzz_answers_no_5xx_and_leaves_the_kernel_as_it_was(daemon) -> None:
    schema = schemathesis.openapi.from_path(str(spec_path()))
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [op for op in operations if (op.method.upper(), op.path) not in LONG_POLLS]
    assert len(operations) > 90

    links_before, rules_before, firewall_before = kernel_state(daemon)
    session = requests.Session()
    # Every http:// request of this session goes to the daemon's unix socket.
    session.mount("http://", UnixHTTPAdapter(f"http+unix://{daemon.sock}", timeout=REQUEST_TIMEOUT))
    base_url = "http://localhost/v1.50"
    failures: list[str] = []
    calls: dict[str, int] = {}
    rng = random.Random(4242)

    def fuzz(op: Any, examples: int, deadline: float | None) -> None:
        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def one(case: Any) -> None:
            if deadline is not None and time.monotonic() > deadline:
                return
            aim(case, rng, daemon.root / "binds")
            calls[op.label] = calls.get(op.label, 0) + 1
            try:
                response = case.call(base_url=base_url, session=session, timeout=REQUEST_TIMEOUT)
            except requests.RequestException as exc:
                failures.append(f"{op.label}: no answer ({exc!r})\n  {case.as_curl_command()}")
                return
            swarm_503 = response.status_code == 503 and SWARM_PATHS.match(op.path)
            if response.status_code >= 500 and not swarm_503:
                failures.append(f"{op.label}: {response.status_code} {response.text[:300]}\n"
                                f"  {case.as_curl_command()}")

        one()

    try:
        daemon.docker("network", "create", "--subnet", "10.99.0.0/24", TARGET_NETWORK)
        # sleep ignores SIGTERM as pid 1: a short stop timeout keeps each fuzzed stop and restart brief.
        daemon.docker("run", "-d", "--name", TARGET_CONTAINER, "--network", TARGET_NETWORK, "--stop-timeout", "1",
                      "busybox", "sleep", "600")
        # A first pass bounded by count reaches every operation however slow the machine is; the rest
        # of the budget goes to more examples of each.
        for op in operations:
            fuzz(op, FIRST_PASS_EXAMPLES, None)
        deadline = time.monotonic() + BUDGET_SECONDS
        for op in operations:
            if time.monotonic() > deadline:
                break
            fuzz(op, EXAMPLES_PER_OPERATION, deadline)
    finally:
        ids = daemon.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            daemon.docker("rm", "-f", *ids, check=False)
        for net in daemon.docker("network", "ls", "-q", "--filter", "type=custom", check=False).stdout.split():
            daemon.docker("network", "rm", net, check=False)
    never_called = [op.label for op in operations if op.label not in calls]
    assert not never_called, f"operations never called: {never_called}"
    total = sum(calls.values())
    assert not failures, f"{len(failures)} of {total} requests failed:\n" + "\n".join(failures[:20])
    assert daemon.docker("image", "inspect", "busybox", check=False).returncode == 0
    links_after, rules_after, firewall_after = kernel_state(daemon)
    assert links_after == links_before, (links_after ^ links_before)
    assert rules_after == rules_before, (rules_after ^ rules_before)
    assert firewall_after == firewall_before
