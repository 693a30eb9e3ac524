"""Concurrent clients, muslind vs the reference dockerd in the same run (issue #11, requirement 2).

(a) 8 docker CLI clients at once, each doing a bounded mix of `run --rm busybox true`, `run -d -p` +
    `rm -f` and `network create` + `network rm`: the total wall time of each daemon and the ratio
    (goal <= 0.25), and the same mix with one client for comparison.
(b) 50 clients at once for up to 60 s (each bounded by a count of operations too), over the Engine API
    socket itself (50 CLI processes on 2 cores would measure the CLI): errors (goal: none) and p50/p99
    latency of each operation on each daemon.

Run: flock -o /tmp/muslin-refdocker.lock .venv/bin/python bench/bench_concurrency.py [--clients 8] [--rounds 3]
     [--load-clients 50] [--load-seconds 60] [--only a|b]   (root; everything inside namespaces)
     --baseline CHECKOUT: also the muslind of another checkout (a `git worktree add` of an older commit,
     say), in the same run and this virtualenv, for before/after figures.
     .venv/bin/python bench/bench_concurrency.py --profile FILE [...]: muslind alone, under a sampling
     profiler of its threads (sampled_muslind.py), its report written to FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import docker, muslind, reference_dockerd

API = "/v1.41"  # the reference is Docker 20.10; muslind answers every version up to its own
LOAD_OPS_PER_CLIENT = 400  # the count bound of each load client (the time bound usually ends it first)


# -- (a) concurrent CLI clients ----------------------------------------------------------------------------
def cli_mix(host: str, client: int, rounds: int) -> None:
    """One client's bounded mix; any failing command fails the run."""
    for r in range(rounds):
        steps = [
            ("run", "--rm", "busybox", "true"),
            ("run", "-d", "--name", f"cc-{client}-{r}", "-p", "80", "busybox", "sleep", "60"),
            ("rm", "-f", f"cc-{client}-{r}"),
            ("network", "create", f"cn-{client}-{r}"),
            ("network", "rm", f"cn-{client}-{r}"),
        ]
        for args in steps:
            proc = docker(host, *args)
            if proc.returncode:
                raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr.strip()}")


def cli_wall(host: str, clients: int, rounds: int) -> float:
    docker(host, "run", "--rm", "busybox", "true")  # warm: the image and the first network are ready
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for fut in [pool.submit(cli_mix, host, c, rounds) for c in range(clients)]:
            fut.result()
    return time.perf_counter() - t0


# -- (b) many API clients for a while ----------------------------------------------------------------------
class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class ApiError(Exception):
    pass


def call(sock: str, method: str, path: str, body: object | None = None, ok: tuple[int, ...] = (200, 201, 204)) -> object:
    conn = UnixHTTPConnection(sock, timeout=120)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, API + path, body=data, headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status not in ok:
            raise ApiError(f"{method} {path}: {resp.status} {raw[:200]!r}")
        return json.loads(raw) if raw and resp.getheader("Content-Type", "").startswith("application/json") else None
    finally:
        conn.close()


def op_run(sock: str, tag: str, client: int) -> None:
    """What `docker run --rm busybox true` asks of the engine (create, start, wait, remove)."""
    created = call(sock, "POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"]})
    cid = created["Id"]  # type: ignore[index]
    try:
        call(sock, "POST", f"/containers/{cid}/start")
        call(sock, "POST", f"/containers/{cid}/wait")
    finally:
        call(sock, "DELETE", f"/containers/{cid}?force=1")


def op_run_published(sock: str, tag: str, client: int) -> None:
    """`docker run -d -p 80 busybox sleep` then `docker rm -f`."""
    created = call(sock, "POST", "/containers/create", {
        "Image": "busybox", "Cmd": ["sleep", "60"], "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": ""}]}}})
    cid = created["Id"]  # type: ignore[index]
    try:
        call(sock, "POST", f"/containers/{cid}/start")
    finally:
        call(sock, "DELETE", f"/containers/{cid}?force=1")


def op_network(sock: str, tag: str, client: int) -> None:
    """With a subnet of the client's own: Docker 20.10's default pools hold about 30 networks, fewer
    than 50 clients may have at once."""
    created = call(sock, "POST", "/networks/create", {
        "Name": f"load-{tag}", "IPAM": {"Config": [{"Subnet": f"10.99.{client}.0/24"}]}})
    call(sock, "DELETE", f"/networks/{created['Id']}")  # type: ignore[index]


def op_list(sock: str, tag: str, client: int) -> None:
    call(sock, "GET", "/networks")
    call(sock, "GET", "/containers/json?all=1")


LOAD_OPS: list[tuple[str, Callable[[str, str, int], None]]] = [
    ("run --rm", op_run), ("run -d -p + rm -f", op_run_published), ("network create + rm", op_network),
    ("network ls + ps -a", op_list)]


def load(host: str, clients: int, seconds: float) -> tuple[dict[str, list[float]], list[str]]:
    sock = host.removeprefix("unix://")
    deadline = time.monotonic() + seconds
    latencies: dict[str, list[float]] = {name: [] for name, _ in LOAD_OPS}
    errors: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(LOAD_OPS_PER_CLIENT):
            if time.monotonic() >= deadline:
                return
            name, op = LOAD_OPS[(n + i) % len(LOAD_OPS)]
            t0 = time.perf_counter()
            try:
                op(sock, f"{os.getpid()}-{n}-{i}", n)
            except Exception as exc:  # noqa: BLE001 - counted and shown, the load goes on
                with lock:
                    errors.append(f"{name}: {exc}")
                continue
            with lock:
                latencies[name].append(time.perf_counter() - t0)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        for fut in [pool.submit(client, n) for n in range(clients)]:
            fut.result()
    return latencies, errors


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def report_load(label: str, latencies: dict[str, list[float]], errors: list[str]) -> None:
    print(f"{label}: {sum(len(v) for v in latencies.values())} operations, {len(errors)} errors (goal 0)")
    for name, values in latencies.items():
        if values:
            print(f"  {name:24s} n={len(values):4d} p50 {statistics.median(values) * 1000:8.1f} ms"
                  f"  p99 {percentile(values, 99) * 1000:8.1f} ms")
    for line in errors[:5]:
        print(f"  error: {line}")


def measure(host: str, args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    if args.only in ("", "a"):
        out["one"] = cli_wall(host, 1, args.rounds)
        out["many"] = cli_wall(host, args.clients, args.rounds)
    if args.only in ("", "b"):
        out["load"] = load(host, args.load_clients, args.load_seconds)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--load-clients", type=int, default=50)
    p.add_argument("--load-seconds", type=float, default=60.0)
    p.add_argument("--only", choices=["", "a", "b"], default="")
    p.add_argument("--profile", default="", help="muslind alone, profiled; the report goes to this file")
    p.add_argument("--baseline", default="", help="a checkout whose muslind is measured too (before/after)")
    p.add_argument("--no-reference", action="store_true", help="muslind only (no lock on the reference needed)")
    args = p.parse_args()
    command = None
    if args.profile:
        os.environ["MUSLIN_PROFILE_OUT"] = str(Path(args.profile).resolve())
        command = [sys.executable, str(Path(__file__).with_name("sampled_muslind.py"))]
    results: dict[str, dict[str, object]] = {}
    if args.baseline:
        checkout = str(Path(args.baseline).resolve())
        run_checkout = f"import sys; sys.path.insert(0, {checkout!r}); from muslin.daemon import main; sys.exit(main())"
        with muslind(command=[sys.executable, "-c", run_checkout]) as host:
            results["muslind (baseline)"] = measure(host, args)
    with muslind(command=command) as host:
        results["muslind"] = ours = measure(host, args)
    with (reference_dockerd() if not (args.profile or args.no_reference) else contextlib.nullcontext()) as ref_host:
        if ref_host:
            theirs = results["docker"] = measure(ref_host, args)
    for label, got in results.items():
        if "one" not in got:
            continue
        for key, what in (("one", "1 CLI client"), ("many", f"{args.clients} CLI clients")):
            line = f"{label:18s} {what:14s} x {args.rounds} rounds of the mix: {got[key]:6.2f} s"
            if label != "docker" and "docker" in results:
                line += f" | docker {theirs[key]:6.2f} s | ratio {got[key] / theirs[key]:5.2f}"  # type: ignore[operator]
                line += " (goal <= 0.25)" if key == "many" else ""
            print(line, flush=True)
    for label, got in results.items():
        if "load" in got:
            report_load(f"{label}, {args.load_clients} API clients for {args.load_seconds:.0f} s", *got["load"])  # type: ignore[misc]


if __name__ == "__main__":
    main()
