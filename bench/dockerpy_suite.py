"""docker-py's own integration tests against muslind and the reference dockerd, side by side.

Run (root; everything inside namespaces; nothing is fetched at run time):

    .venv/bin/python bench/dockerpy_suite.py DOCKER_PY_SOURCE [-k EXPR] [--all] [--files F ...]

DOCKER_PY_SOURCE is a checkout of the docker/docker-py repository at tag 7.1.0 (the SDK version this
project pins), for example a `git clone --branch 7.1.0` of it, or `git archive 7.1.0 | tar -x` of a
mirror. Its tests import paramiko and use pytest-timeout; both are pinned in the test extra.

The suite's images are `alpine:3.10` (the API tests) and `alpine` (the model tests); no registry is
reachable here, so both daemons get them as tags of their busybox. Each daemon runs in its own namespace and the suite runs inside that namespace too, as
it would on a Docker host. The table lists every test whose outcome differs (all with --all), then
the count of tests that pass against Docker and fail against muslind, leaving out what the issue
exempts: swarm (by name, or a test that calls `init_swarm`), `commit`, and IPv6. Exit status 1 when
that count is not zero.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from common import REFERENCE_NS, bench_namespace, docker, muslind, reference_dockerd

FILES = ["api_network_test.py", "models_networks_test.py", "api_container_test.py",
         "models_containers_test.py", "api_exec_test.py", "api_healthcheck_test.py"]
EXEMPT = re.compile(r"swarm|commit|ipv6|ip6", re.IGNORECASE)
IMAGE_ALIASES = ("alpine:3.10", "alpine:latest")
SUITE_TIMEOUT_S = 1800
TEST_TIMEOUT_S = 90


def run_suite(source: Path, host: str, namespace: str, files: list[str], select: str | None) -> dict[str, str]:
    """Run the files against one daemon; return test id -> passed|failed|error|skipped."""
    for alias in IMAGE_ALIASES:
        tagged = docker(host, "tag", "busybox:latest", alias)
        if tagged.returncode:
            raise RuntimeError(f"could not tag the suite's image {alias}: {tagged.stderr}")
    with tempfile.TemporaryDirectory(prefix="dockerpy-") as tmp:
        junit = Path(tmp) / "junit.xml"
        # --import-mode=append: the checkout has a `docker` package of its own at its root; the
        # installed SDK (the same version) must win, since the checkout's lacks its generated version file.
        cmd = ["nsenter", f"--net=/run/netns/{namespace}", sys.executable, "-m", "pytest", "-q",
               "-p", "no:cacheprovider", "--import-mode=append", f"--timeout={TEST_TIMEOUT_S}",
               f"--junitxml={junit}", *(["-k", select] if select else []),
               *[f"tests/integration/{f}" for f in files]]
        env = {**os.environ, "DOCKER_HOST": host}
        env.pop("DOCKER_TLS_VERIFY", None)
        try:
            subprocess.run(cmd, cwd=source, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=SUITE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"  the suite did not finish within {SUITE_TIMEOUT_S} s against {host}", flush=True)
        return outcomes(junit) if junit.exists() else {}


def outcomes(junit: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            out[test_id] = "failed"
        elif "error" in kinds:
            out[test_id] = "error"
        elif "skipped" in kinds:
            out[test_id] = "skipped"
        else:
            out[test_id] = "passed"
    return out


def swarm_tests(source: Path, files: list[str]) -> set[str]:
    """Ids (Class::test) of the tests that put the daemon in a swarm (``self.init_swarm()``) before
    checking anything: the issue exempts them, whatever their names say."""
    out = set()
    for name in files:
        tree = ast.parse((source / "tests" / "integration" / name).read_text())
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")):
                if any(isinstance(c, ast.Attribute) and c.attr == "init_swarm" for c in ast.walk(fn)):
                    out.add(f"{cls.name}::{fn.name}")
    return out


def table(ours: dict[str, str], ref: dict[str, str], show_all: bool, swarm: set[str]) -> int:
    """Print the comparison; return how many non-exempt tests pass on Docker and not on muslind."""
    missing = 0
    width = max((len(t) for t in ours | ref), default=10)
    print(f"{'test':{width}s}  {'docker':8s}  {'muslind':8s}")
    for test_id in sorted(ours.keys() | ref.keys()):
        theirs, mine = ref.get(test_id, "-"), ours.get(test_id, "-")
        regress = theirs == "passed" and mine != "passed" and not EXEMPT.search(test_id) and test_id not in swarm
        missing += regress
        if show_all or theirs != mine:
            mark = "  <-- passes on Docker only" if regress else ""
            print(f"{test_id:{width}s}  {theirs:8s}  {mine:8s}{mark}")
    for name, results in (("docker", ref), ("muslind", ours)):
        counts = {k: sum(1 for v in results.values() if v == k) for k in ("passed", "failed", "error", "skipped")}
        print(f"{name:8s} " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    print(f"passes on Docker, not on muslind (swarm, commit and IPv6 exempt): {missing}")
    if swarm:
        print(f"exempt as needing swarm init: {', '.join(sorted(t for t in swarm if t in ours | ref))}")
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="a docker-py 7.1.0 checkout")
    parser.add_argument("--files", nargs="+", default=FILES)
    parser.add_argument("-k", dest="select", help="pytest -k expression")
    parser.add_argument("--all", action="store_true", help="list every test, not only differences")
    args = parser.parse_args()
    if not (args.source / "tests" / "integration" / "api_network_test.py").exists():
        sys.exit(f"{args.source} is not a docker-py checkout (no tests/integration/api_network_test.py)")
    with reference_dockerd() as ref_host:
        if ref_host is None:
            sys.exit("the reference dockerd did not start; see ../shared/reference/reference-dockerd.sh")
        print("docker-py against the reference dockerd ...", flush=True)
        ref = run_suite(args.source, ref_host, REFERENCE_NS, args.files, args.select)
    with muslind() as host:
        print("docker-py against muslind ...", flush=True)
        ours = run_suite(args.source, host, bench_namespace(), args.files, args.select)
    sys.exit(1 if table(ours, ref, args.all, swarm_tests(args.source, args.files)) else 0)


if __name__ == "__main__":
    main()
