"""The container runtime: OCI bundles on disk, one shim per run, runc underneath.

Everything about a container lives in files, so a restarted muslind knows what the last one knew::

    <root>/containers/<id>/   the bundle: config.json, rootfs/ (mount point), upper/, work/,
                              hosts, hostname, resolv.conf, container.json (spec, image, process),
                              container.log, started.json and exit.json (written by the shim), execs/
    <state>/<id>/             the shim's: shim.json, shim.sock, shim.pid, runc's pid files and logs
    <state>/runc/             runc's own state (``runc --root``)

A shim is forked (by a spawner started once per daemon) when something first needs one: attach, a
next-exit wait, or start; it ends after its run. So ``docker run`` is: create (files only, ~1 ms),
attach (fork the shim, ~3 ms), wait, start (``runc run -d`` in the shim, ~20-25 ms, runc's own time).
Blocking methods are short and meant for a worker thread; waits and streams are async.

The shims' mount namespace: runc gives each container a mount namespace cloned from its own, a copy
whose cost grows with every mount there, and a daemon with a thousand containers has a thousand nsfs
pins (one per network namespace) that no container needs: +25 ms per start. So the spawner, and with
it every shim and runc, runs in a mount namespace of its own, a copy of the daemon's taken at its
start whose ``pin_dirs`` are private and empty (every other mount keeps its propagation, so an
``rshared`` bind still reaches the daemon's namespace). A container still joins its pinned network
namespace: the path runc is given goes through ``/proc/<daemon>/root``, the daemon's view, where the
pins are. A mount made in the daemon's namespace after the spawner's start reaches the shims only if
it propagates (a private ``/``, as in many containers, propagates nothing), so before a shim is
spawned the sources of the container's bind mounts are compared in both views, and a stale spawner is
replaced by a fresh one. What a container cannot see is the pins themselves: a bind of a pin
directory, or of a directory above one, shows it without its pins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

from . import archive, client, shim
from .cgroups import Cgroups
from .shim import protocol
from .errors import (Conflict, EngineError, InvalidArgument, NoSuchContainer, NoSuchExec, NotModified, NotRunning,
                     StartFailed)
from .images import ImageStore
from .logs import LogEntry, LogFilter, follow as follow_log, read as read_log
from .mountinfo import check_propagation
from .spec import (ETC_FILES, ID_PATTERN, ContainerSpec, Mount, ProcessConfig, Resources, User, bounding_capabilities,
                   merge_env, oci_config, oci_process, process_env, resolve_groups, resolve_process, resolve_user,
                   with_groups)

# The shim package's directory, run as ``python3 -I -S SHIM_PATH STATE_ROOT`` (see shim/__init__.py).
SHIM_PATH = str(Path(shim.__file__).resolve().parent)
SHIM_READY_SECONDS = 10.0
SHIM_EXIT_SECONDS = 10.0
KILL_WAIT_SECONDS = 10.0
LOG_NAME = "container.log"
ALL_LOGS = LogFilter()  # frozen, so one shared default is safe


@dataclass(frozen=True)
class State:
    """What ``docker inspect`` shows under State (times are ns since the epoch, 0 for never)."""

    id: str
    status: str  # "created" | "running" | "paused" | "exited"
    running: bool  # also while paused, as Docker's State.Running
    pid: int
    exit_code: int
    error: str
    created_at: int
    started_at: int
    finished_at: int
    image_id: str
    process: ProcessConfig
    tty: bool
    open_stdin: bool
    shim_pid: int
    paused: bool = False  # frozen by ``pause`` (the cgroup freezer)
    oom_killed: bool = False  # the OOM killer struck in its memory cgroup during its last run


@dataclass(frozen=True)
class Recovered:
    """A container as ``Runtime.recover`` finds it: whether it runs and how its last run ended, read
    from its run files and its shim's pid alone (a full State also parses the bundle and reads the
    freezer, which for a thousand containers made seconds of muslind's start)."""

    id: str
    running: bool
    started_at: int  # ns since the epoch, 0 for never
    exit_code: int

    @property
    def exited(self) -> bool:
        return bool(self.started_at) and not self.running


@dataclass(frozen=True)
class ExecState:
    id: str
    container_id: str
    running: bool
    exit_code: int | None
    pid: int
    args: list[str]
    tty: bool
    open_stdin: bool
    error: str = ""
    detach_keys: str = ""  # as the client gave them at create; the API interprets them


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _point_namespaces_at(config: dict, daemon_pid: int) -> bool:
    """Rewrite the OCI config's namespace paths as seen through ``/proc/<daemon_pid>/root`` (the
    shims' mount namespace lacks the pins; see the module's docstring). Whether anything changed."""
    changed = False
    prefix = f"/proc/{daemon_pid}/root"
    for namespace in config["linux"]["namespaces"]:
        path = namespace.get("path")
        if path is None or path.startswith(prefix + "/"):
            continue
        if path.startswith("/proc/") and "/root/" in path:  # an earlier daemon's view
            path = "/" + path.split("/root/", 1)[1]
        namespace["path"] = prefix + path
        changed = True
    return changed


def _sees_as_daemon(pid: int, mounts: list[dict], pin_dirs: tuple[Path, ...]) -> bool:
    """Whether process ``pid`` sees each bind mount's source as this daemon does (same file); a source
    in a pin directory differs by design, which no new spawner would change."""
    for mount in mounts:
        if mount["type"] != "bind" or any(Path(mount["source"]).is_relative_to(d) for d in pin_dirs):
            continue
        try:
            ours, theirs = os.stat(mount["source"]), os.stat(f"/proc/{pid}/root{mount['source']}")
        except OSError:
            return False
        if (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino):
            return False
    return True


def _shim_alive(pid: int, state_dir: Path) -> bool:
    """Is ``pid`` a live shim of this state directory? (A shim works in its state directory, so a
    reused pid does not count.)"""
    try:
        if os.readlink(f"/proc/{pid}/cwd") != str(state_dir):
            return False
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` becomes readable within ``timeout`` seconds. poll, not select: a daemon with a
    thousand containers holds descriptors above select's limit of 1024."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return _readable(fd, timeout)
    finally:
        os.close(fd)


def shim_processes(under: Path) -> list[int]:
    """Pids of the shims and shim spawners whose state root is ``under`` or below it, whichever daemon
    started them (a shim outlives its daemon): what a teardown after a crash must stop. Matched by
    command line: the shim package run on a state root, nothing that merely names the path."""
    path, prefix = SHIM_PATH.encode(), str(under).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            continue
        if path in cmdline and any(arg.startswith(prefix) for arg in cmdline):
            pids.append(int(entry))
    return pids


class ExitWaiter:
    """A container's exit, awaited through a wait request its shim has already acknowledged."""

    def __init__(self, runtime: "Runtime", cid: str, stream: client.Stream | None) -> None:
        self._runtime = runtime
        self._cid = cid
        self._stream = stream

    async def wait(self) -> int:
        stream = self._stream
        if stream is None:
            return self._runtime._exit_code(self._cid)
        try:
            while await stream.read() is not None:
                pass
        finally:
            stream.close()
        return stream.exit_code if stream.exit_code is not None else self._runtime._exit_code(self._cid)

    def cancel(self) -> None:
        if self._stream is not None:
            self._stream.close()


class Runtime:
    def __init__(self, root: Path, state: Path, images: ImageStore, runc: str = "runc",
                 python: str = sys.executable, pin_dirs: tuple[Path, ...] = ()) -> None:
        (Path(root) / "containers").mkdir(parents=True, exist_ok=True)
        (Path(state) / "runc").mkdir(parents=True, exist_ok=True)
        # Canonical paths: a shim is recognised by its working directory, which the kernel reports resolved.
        self.root = Path(root).resolve()
        self.state_root = Path(state).resolve()
        self.images = images
        self.runc = shutil.which(runc) or runc
        self.python = python
        self.runc_root = self.state_root / "runc"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._execs: dict[str, dict] = {}
        self._spawner_proc: subprocess.Popen | None = None
        self._spawner_lock = threading.Lock()
        self.pin_dirs = tuple(Path(d).resolve() for d in pin_dirs)  # mounts the shims' namespace goes without

    # -- paths --------------------------------------------------------------------------------
    def _dir(self, cid: str) -> Path:
        return self.root / "containers" / cid

    def _state_dir(self, cid: str) -> Path:
        return self.state_root / cid

    def _lock(self, cid: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(cid, threading.Lock())

    def _meta(self, cid: str) -> dict:
        if not ID_PATTERN.fullmatch(cid):
            raise NoSuchContainer(cid)
        meta = _read_json(self._dir(cid) / "container.json")
        if meta is None:
            raise NoSuchContainer(cid)
        return meta

    def etc_path(self, cid: str, name: str) -> Path:
        """The file bind-mounted at /etc/<name> (hosts, hostname, resolv.conf) of the container."""
        return self._dir(cid) / name

    def log_path(self, cid: str) -> str:
        self._meta(cid)
        return str(self._dir(cid) / LOG_NAME)

    # -- create -------------------------------------------------------------------------------
    def create(self, spec: ContainerSpec) -> ProcessConfig:
        """Write the bundle. Nothing runs yet; returns the process after the image's defaults."""
        if not ID_PATTERN.fullmatch(spec.id):
            raise InvalidArgument(f"invalid container id {spec.id!r}")
        if spec.netns_path is not None and not os.path.exists(spec.netns_path):
            raise InvalidArgument(f"network namespace {spec.netns_path} does not exist")
        image = self.images.get(spec.image)
        process = resolve_process(spec, image)
        lower_dirs = self.images.lower_dirs(image)
        user = with_groups(resolve_user(process.user, lower_dirs), resolve_groups(spec.group_add, lower_dirs))
        hostname = spec.hostname or spec.id[:12]
        oci = oci_process(process.args, process_env(process.env, hostname, spec.tty), process.cwd, user, spec.tty,
                          spec.console_size, list(spec.capabilities))
        bundle = self._dir(spec.id)
        config = oci_config(spec, oci, lower_dirs, bundle)
        _point_namespaces_at(config, os.getpid())
        try:
            bundle.mkdir()
        except FileExistsError:
            raise Conflict(f"container {spec.id} already exists") from None
        try:
            for sub in ("rootfs", "upper", "work", "execs"):
                (bundle / sub).mkdir()
            contents = {"hosts": spec.hosts, "hostname": hostname + "\n", "resolv.conf": spec.resolv_conf}
            for name in ETC_FILES:
                (bundle / name).write_text(contents[name])
            (bundle / LOG_NAME).touch(0o640)
            _write_json(bundle / "config.json", config)
            _write_json(bundle / "container.json", {
                "spec": asdict(spec), "image_id": image.id, "created_at": time.time_ns(),
                "process": asdict(process), "oci_process": oci,
            })
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)
            raise
        return process

    def set_start_env(self, cid: str, extra: list[str]) -> None:
        """Variables the caller works out at each start (a legacy link's child address), put before
        Config.Env, which overrides them, as dockerd's daemon environment; execs get them too."""
        meta = self._meta(cid)
        spec, bundle = meta["spec"], self._dir(cid)
        env = process_env(merge_env(list(extra), list(meta["process"]["env"])), spec["hostname"] or cid[:12],
                          spec["tty"])
        if meta["oci_process"]["env"] == env:
            return
        config = _read_json(bundle / "config.json")
        if config is None:
            raise NoSuchContainer(cid)
        config["process"]["env"] = env
        meta["oci_process"]["env"] = env
        _write_json(bundle / "config.json", config)
        _write_json(bundle / "container.json", meta)

    def write_etc(self, cid: str, hosts: str | None = None, resolv_conf: str | None = None) -> None:
        """Rewrite /etc/hosts or /etc/resolv.conf in place (the bind mount follows the inode)."""
        self._meta(cid)
        for name, content in (("hosts", hosts), ("resolv.conf", resolv_conf)):
            if content is not None:
                with open(self._dir(cid) / name, "r+") as f:
                    f.truncate(0)
                    f.write(content)

    # -- the shim -----------------------------------------------------------------------------
    def _shim_pid(self, cid: str) -> int:
        try:
            pid = int((self._state_dir(cid) / protocol.PID_NAME).read_text())
        except (FileNotFoundError, ValueError):
            return 0
        return pid if _shim_alive(pid, self._state_dir(cid)) else 0

    def _ensure_shim(self, cid: str) -> None:
        """Make sure a shim for this container listens that has not yet finished its run."""
        state_dir = self._state_dir(cid)
        with self._lock(cid):
            # Read under the lock: callers off the engine's worker (a next-exit wait, an attach) may race
            # a delete, which holds the lock while it removes the container; a shim spawned after that
            # would outlive it.
            meta = self._meta(cid)
            try:
                client.request(str(state_dir), {"op": "status"})
                return
            except (client.ShimGone, OSError):
                pass
            # A shim that stopped listening may still be finishing its run in this state directory: it
            # `runc delete`s the container (until then a new `runc run` finds the id taken) and removes
            # shim.pid and runc's files there, which would by then be the new shim's.
            old = self._shim_pid(cid)
            if old and not _wait_pid_gone(old, SHIM_EXIT_SECONDS):
                raise EngineError(f"the shim of container {cid} does not finish")
            self._spawn_shim(cid, meta)

    def _end_shim(self, cid: str, grace: float) -> None:
        """Give the shim of ``cid`` (if any) ``grace`` seconds to finish, then SIGKILL it."""
        pid = self._shim_pid(cid)
        if pid and not _wait_pid_gone(pid, grace):
            os.kill(pid, signal.SIGKILL)
            _wait_pid_gone(pid, SHIM_EXIT_SECONDS)

    def _namespaces_for_this_daemon(self, cid: str) -> None:
        """The bundle's namespace paths through this daemon's ``/proc/<pid>/root``: a container
        created by an earlier muslind names that one's, gone since."""
        config = _read_json(self._dir(cid) / "config.json")
        if config is not None and _point_namespaces_at(config, os.getpid()):
            _write_json(self._dir(cid) / "config.json", config)

    def _spawn_shim(self, cid: str, meta: dict) -> None:
        state_dir = self._state_dir(cid)
        state_dir.mkdir(parents=True, exist_ok=True)
        _write_json(state_dir / protocol.CONFIG_NAME, {
            "id": cid, "runc": self.runc, "runc_root": str(self.runc_root), "bundle": str(self._dir(cid)),
            "tty": meta["spec"]["tty"], "open_stdin": meta["spec"]["open_stdin"],
            "log": str(self._dir(cid) / LOG_NAME), "run_dir": str(self._dir(cid)),
        })
        with self._spawner_lock:
            spawner = self._spawner()
            if not _sees_as_daemon(spawner.pid, meta["spec"].get("mounts", []), self.pin_dirs):
                self._stop_spawner()  # a mount came after its start and did not propagate to it
                spawner = self._spawner()
            assert spawner.stdin is not None and spawner.stdout is not None
            try:
                spawner.stdin.write(str(state_dir).encode() + b"\n")
                answer = self._spawner_line(spawner)
            except OSError as exc:
                answer = f"error the spawner is gone: {exc}".encode()
            if not answer:
                self._stop_spawner()  # out of step with us; the next spawn starts a fresh one
        if answer.strip() != b"ready":
            err = state_dir / protocol.ERR_NAME
            detail = err.read_text().strip() if err.exists() else answer.decode(errors="replace").strip()
            raise EngineError(f"the shim of container {cid} did not start: {detail or 'no answer'}")

    def _spawner(self) -> subprocess.Popen:
        """The shim spawner, started on first use (a Python start-up once, not per container)."""
        if self._spawner_proc is not None and self._spawner_proc.poll() is None:
            return self._spawner_proc
        self._stop_spawner()
        # Unbuffered pipes: select() must see every byte the spawner wrote, none may sit in a buffer.
        proc = subprocess.Popen([self.python, "-I", "-S", SHIM_PATH, str(self.state_root), *map(str, self.pin_dirs)],
                                bufsize=0,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        self._spawner_proc = proc
        if self._spawner_line(proc).strip() != b"ready":
            self._stop_spawner()
            raise EngineError("the shim spawner did not start")
        return proc

    @staticmethod
    def _spawner_line(proc: subprocess.Popen) -> bytes:
        assert proc.stdout is not None
        if not _readable(proc.stdout.fileno(), SHIM_READY_SECONDS):
            return b""
        return proc.stdout.readline()

    def _stop_spawner(self) -> None:
        proc, self._spawner_proc = self._spawner_proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()  # its stdin closing is what tells it to leave
        try:
            proc.wait(SHIM_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def close(self) -> None:
        """Stop the spawner. Shims and their containers run on (that is the point of them)."""
        with self._spawner_lock:
            self._stop_spawner()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, cid: str) -> int:
        """Run the container (``runc run -d`` in its shim); returns its pid.

        The shim is asked first: after an attach or a next-exit wait (``docker run``) one is waiting,
        and a running one refuses. Only when none listens is one spawned.
        """
        meta = self._meta(cid)
        check_propagation([Mount(**{**m, "options": tuple(m["options"])}) for m in meta["spec"].get("mounts", [])])
        if meta["spec"].get("netns_path"):
            self._namespaces_for_this_daemon(cid)
        state_dir = str(self._state_dir(cid))
        try:
            try:
                reply = client.request(state_dir, {"op": "start"}, timeout=60.0)
            except client.NotListening:
                self._ensure_shim(cid)
                reply = client.request(state_dir, {"op": "start"}, timeout=60.0)
        except client.ShimGone as exc:
            raise EngineError(f"the shim of container {cid} went away: {exc}") from exc
        except client.ShimError as exc:
            if exc.message.startswith("container is "):  # another start got there first
                raise NotModified(f"container {cid} is already started") from None
            exit_info = _read_json(self._dir(cid) / "exit.json") or {}
            raise StartFailed(exc.message, exit_info.get("exit_code", 128)) from None
        return int(reply["pid"])

    async def exit_waiter(self, cid: str, next_run: bool = False) -> "ExitWaiter":
        """Register for the container's exit; registered when this returns, so no exit can slip by.

        ``next_run=False`` (``docker wait``): a container that is not running is done already.
        ``next_run=True`` (``condition=next-exit``, asked before start): the exit of the run that is
        going on or, if none is, of the next one.
        """
        if next_run:
            await asyncio.to_thread(self._ensure_shim, cid)
        elif not self._running(cid):
            return ExitWaiter(self, cid, None)
        try:
            stream = await client.Stream.open(str(self._state_dir(cid)), {"op": "wait"})
        except client.ShimGone:
            stream = None  # the run ended in between: exit.json has it
        return ExitWaiter(self, cid, stream)

    async def wait_exit(self, cid: str, next_run: bool = False) -> int:
        """``await (await exit_waiter(cid, next_run)).wait()``, for callers that need no split."""
        return await (await self.exit_waiter(cid, next_run)).wait()

    def _exit_code(self, cid: str) -> int:
        exit_info = _read_json(self._dir(cid) / "exit.json")
        return int(exit_info["exit_code"]) if exit_info else 255

    async def attach(self, cid: str, stdin: bool = False, stdout: bool = True, stderr: bool = True,
                     stdin_once: bool = False) -> client.Stream:
        """A stream of the container's output (from the moment this returns) and, if asked, its stdin.

        With a TTY everything comes as "stdout". ``stdin_once``: closing our stdin closes the container's.
        The stream ends (``read()`` gives None, ``exit_code`` is set) when the container exits.
        """
        await asyncio.to_thread(self._ensure_shim, cid)
        req = {"op": "attach", "stdin": stdin, "stdout": stdout, "stderr": stderr, "stdin_once": stdin_once}
        try:
            return await client.Stream.open(str(self._state_dir(cid)), req)
        except client.ShimGone:
            # The run ended between the two calls: a fresh shim waits for the next start.
            await asyncio.to_thread(self._ensure_shim, cid)
            return await client.Stream.open(str(self._state_dir(cid)), req)

    def _shim_request(self, cid: str, req: dict) -> dict:
        self._meta(cid)
        try:
            return client.request(str(self._state_dir(cid)), req)
        except client.ShimGone:
            raise NotRunning(cid) from None
        except client.ShimError as exc:
            if "is not running" in exc.message or "container is" in exc.message:
                raise NotRunning(cid) from None
            raise

    def kill(self, cid: str, sig: int = signal.SIGKILL, thaw: bool = False) -> None:
        """Signal the container's init; ``thaw``: unpause it after, so that a paused one acts on it (as
        dockerd does for SIGKILL and the stop signal)."""
        if not self.state(cid).running:
            raise NotRunning(cid)
        self._signal(cid, sig, thaw)

    def _signal(self, cid: str, sig: int, thaw: bool) -> None:
        self._shim_request(cid, {"op": "kill", "signal": int(sig)})
        if thaw:
            self._thaw(cid)

    def resize(self, cid: str, height: int, width: int) -> None:
        if height <= 0 or width <= 0:
            raise InvalidArgument(f"invalid TTY size {height}x{width}")
        try:
            self._shim_request(cid, {"op": "resize", "height": height, "width": width})
        except client.ShimError as exc:
            raise Conflict(exc.message) from None

    def _runc(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([self.runc, "--root", str(self.runc_root), *args], input=stdin,
                              capture_output=True, check=False, timeout=30)

    def _runc_error(self, proc: subprocess.CompletedProcess) -> str:
        return proc.stderr.decode(errors="replace").strip().splitlines()[-1:][0] if proc.stderr.strip() else "runc failed"

    def pause(self, cid: str) -> None:
        """Freeze every process of the container (runc pause: the cgroup freezer)."""
        if not self.state(cid).running:
            raise NotRunning(cid)
        proc = self._runc("pause", cid)
        if proc.returncode:
            raise EngineError(f"cannot pause container {cid}: {self._runc_error(proc)}")

    def unpause(self, cid: str) -> None:
        if not self.state(cid).running:
            raise NotRunning(cid)
        proc = self._runc("resume", cid)
        if proc.returncode:
            raise EngineError(f"cannot unpause container {cid}: {self._runc_error(proc)}")

    def _thaw(self, cid: str) -> None:
        """Let a paused container act on the signal it was just sent (dying needs it to run)."""
        if self.state(cid).paused:
            with contextlib.suppress(EngineError, NotRunning):
                self.unpause(cid)

    def update(self, cid: str, resources: Resources) -> None:
        """Apply new cgroup limits to the running container (runc update) and keep them for its next run."""
        bundle = self._dir(cid) / "config.json"
        config = json.loads(bundle.read_text())
        config["linux"]["resources"] = {**config["linux"].get("resources", {}), **resources.to_oci()}
        if self.state(cid).running:
            proc = self._runc("update", "--resources", "-", cid, stdin=json.dumps(resources.to_oci()).encode())
            if proc.returncode:
                raise InvalidArgument(f"Cannot update container {cid}: {self._runc_error(proc)}")
        _write_json(bundle, config)

    async def stop(self, cid: str, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
        """Signal, wait up to ``timeout`` seconds, then SIGKILL. False if it was not running."""
        if not self.state(cid).running:
            return False
        try:
            waiter = await client.Stream.open(str(self._state_dir(cid)), {"op": "wait"})
        except client.ShimGone:
            return False
        try:
            with contextlib.suppress(NotRunning):
                await asyncio.to_thread(self._signal, cid, sig, True)
            if not await self._drain(waiter, timeout):
                with contextlib.suppress(NotRunning):
                    await asyncio.to_thread(self._signal, cid, signal.SIGKILL, True)
                if not await self._drain(waiter, KILL_WAIT_SECONDS):
                    raise EngineError(f"container {cid} did not die after SIGKILL")
        finally:
            waiter.close()
        return True

    @staticmethod
    async def _drain(stream: client.Stream, timeout: float) -> bool:
        """Read a wait stream to its end; False on timeout."""
        async def to_end() -> None:
            while await stream.read() is not None:
                pass

        try:
            await asyncio.wait_for(to_end(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            return False
        return True

    async def restart(self, cid: str, timeout: float = 10.0) -> int:
        await self.stop(cid, timeout)
        return await asyncio.to_thread(self.start, cid)  # which waits for the stopped run's shim to finish

    def delete(self, cid: str, force: bool = False) -> None:
        """Remove the container and everything it had: shim, runc state, files. ``force`` kills it first."""
        state = self.state(cid)
        if state.running and not force:
            raise Conflict(f"cannot remove container {cid}: container is running: stop the container before "
                           f"removing or force remove")
        with self._lock(cid):
            state_dir = str(self._state_dir(cid))
            if state.running:
                with contextlib.suppress(client.ShimGone, client.ShimError, OSError):
                    client.request(state_dir, {"op": "kill", "signal": int(signal.SIGKILL)})
                self._thaw(cid)  # a frozen process cannot die
            else:
                with contextlib.suppress(client.ShimGone, client.ShimError, OSError):
                    client.request(state_dir, {"op": "shutdown"})
            self._end_shim(cid, SHIM_EXIT_SECONDS)
            self._delete_runc_leftover(cid)
            shutil.rmtree(self._state_dir(cid), ignore_errors=True)
            shutil.rmtree(self._dir(cid), ignore_errors=True)
        with self._locks_guard:
            self._locks.pop(cid, None)
        for exec_id in [e for e, x in self._execs.items() if x["container_id"] == cid]:
            del self._execs[exec_id]

    def _delete_runc_leftover(self, cid: str) -> bool:
        """``runc delete --force`` a container whose shim is gone (killed, say); True if there was one."""
        if not (self.runc_root / cid).exists():
            return False
        subprocess.run([self.runc, "--root", str(self.runc_root), "delete", "--force", cid],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return True

    # -- state --------------------------------------------------------------------------------
    def _running(self, cid: str) -> bool:
        """``state(cid).running`` from the run files and the shim alone (no bundle parsed, no freezer
        read): what a wait asks, for each of a thousand containers when muslind starts."""
        bundle = self._dir(cid)
        if not ID_PATTERN.fullmatch(cid) or not (bundle / "container.json").exists():
            raise NoSuchContainer(cid)
        started = _read_json(bundle / "started.json") or {}
        return bool(started.get("started_at")) and not _read_json(bundle / "exit.json") and bool(self._shim_pid(cid))

    def state(self, cid: str) -> State:
        meta = self._meta(cid)
        bundle = self._dir(cid)
        started = _read_json(bundle / "started.json") or {}
        exited = _read_json(bundle / "exit.json") or {}
        shim_pid = self._shim_pid(cid)
        started_at = int(started.get("started_at", 0))
        finished_at = int(exited.get("finished_at", 0))
        running = bool(started_at) and not exited and bool(shim_pid)
        paused = running and self._frozen(int(started.get("pid", 0)))
        if paused:
            status = "paused"
        elif running:
            status = "running"
        elif started_at:
            status = "exited"
        else:
            status = "created"
        exit_code = int(exited.get("exit_code", 0)) if exited else (0 if running or not started_at else 255)
        spec = meta["spec"]
        return State(id=cid, status=status, running=running, pid=int(started.get("pid", 0)) if running else 0,
                     exit_code=exit_code, error=exited.get("error", ""), created_at=meta["created_at"],
                     started_at=started_at, finished_at=finished_at, image_id=meta["image_id"],
                     process=ProcessConfig(**meta["process"]), tty=spec["tty"], open_stdin=spec["open_stdin"],
                     shim_pid=shim_pid, paused=paused, oom_killed=bool(exited.get("oom_killed")))

    @staticmethod
    def _frozen(pid: int) -> bool:
        try:
            return Cgroups.of_pid(pid).frozen()
        except (OSError, ValueError):  # exited in between: not paused
            return False

    def cgroups(self, cid: str) -> Cgroups:
        """The running container's cgroup directories (NotRunning if it is not)."""
        state = self.state(cid)
        if not state.running:
            raise NotRunning(cid)
        try:
            return Cgroups.of_pid(state.pid)
        except (OSError, ValueError):
            raise NotRunning(cid) from None

    def rw_size(self, cid: str) -> int:
        """Bytes of the container's writable layer (what Docker's SizeRw and prune's SpaceReclaimed count):
        the files of upper/, each inode once."""
        total, seen = 0, set()
        for root, dirs, files in os.walk(self._dir(cid) / "upper"):
            for name in files + dirs:
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(root, name))
                    if (st.st_dev, st.st_ino) not in seen and not os.path.isdir(os.path.join(root, name)):
                        seen.add((st.st_dev, st.st_ino))
                        total += st.st_size
        return total

    def list(self) -> list[State]:
        ids = sorted(p.name for p in (self.root / "containers").iterdir() if (p / "container.json").exists())
        out = []
        for cid in ids:
            with contextlib.suppress(NoSuchContainer):
                out.append(self.state(cid))
        return out

    def images_in_use(self) -> dict[str, str]:
        """Image id -> a container using it (for ``ImageStore.remove``)."""
        return {s.image_id: s.id for s in self.list()}

    def recover(self) -> list[Recovered]:
        """After a muslind restart: settle what a dead shim left, return every container's run status.

        Live shims keep running their containers and are found through their sockets as before. A
        container whose shim died without recording an exit is killed (its output has no reader) and
        recorded as exited with 255, as Docker does when it loses a container's supervisor. Each
        container costs a few small file reads: no bundle is parsed, no freezer read.
        """
        ids = []
        for entry in (self.root / "containers").iterdir():
            if (entry / "container.json").exists():
                ids.append(entry.name)
            else:
                shutil.rmtree(entry, ignore_errors=True)  # a create cut short
        known = set(ids)
        for orphan in self.state_root.iterdir():  # a delete cut short: shim state without a container
            if orphan.name != "runc" and orphan.name not in known:
                if ID_PATTERN.fullmatch(orphan.name):
                    self._end_shim(orphan.name, 0)
                self._delete_runc_leftover(orphan.name)
                shutil.rmtree(orphan, ignore_errors=True)
        found = []
        for cid in sorted(ids):
            bundle = self._dir(cid)
            started = _read_json(bundle / "started.json") or {}
            exited = _read_json(bundle / "exit.json") or {}
            started_at = int(started.get("started_at", 0))
            shim_alive = bool(self._shim_pid(cid))
            if not shim_alive:
                if (self._delete_runc_leftover(cid) or started_at) and not exited:
                    exited = {"exit_code": 255, "error": "the container's shim died", "finished_at": time.time_ns()}
                    _write_json(bundle / "exit.json", exited)
                shutil.rmtree(self._state_dir(cid), ignore_errors=True)
            running = bool(started_at) and not exited and shim_alive
            exit_code = int(exited.get("exit_code", 0)) if exited else (0 if running or not started_at else 255)
            found.append(Recovered(cid, running, started_at, exit_code))
        return found

    def _files_of(self, cid: str) -> dict:
        """Where the helper finds the container's files: a running one's root, or a stopped one's bundle."""
        st = self.state(cid)
        return {"pid": st.pid} if st.running and st.pid else {"bundle": str(self._dir(cid))}

    async def stat_path(self, cid: str, path: str, ref: str) -> archive.PathStat:
        """``ref``: the container as the client named it, for the not-found message."""
        return await archive.stat_path(self.python, self._files_of(cid), path, ref)

    async def get_archive(self, cid: str, path: str, ref: str) -> tuple[archive.PathStat, AsyncIterator[bytes]]:
        return await archive.get_archive(self.python, self._files_of(cid), path, ref)

    async def put_archive(self, cid: str, path: str, ref: str, data: bytes, no_overwrite_dir_non_dir: bool) -> None:
        await archive.put_archive(self.python, self._files_of(cid), path, ref, data, no_overwrite_dir_non_dir)

    def changes(self, cid: str) -> list[archive.Change]:
        meta = self._meta(cid)
        return archive.changes(str(self._dir(cid) / "upper"), self.images.lower_dirs(self.images.get(meta["image_id"])))

    # -- logs ---------------------------------------------------------------------------------
    def logs(self, cid: str, flt: LogFilter = ALL_LOGS) -> list[LogEntry]:
        return read_log(self.log_path(cid), flt)

    async def follow_logs(self, cid: str, flt: LogFilter = ALL_LOGS) -> AsyncIterator[LogEntry]:
        def running() -> bool:
            try:
                return self.state(cid).running
            except NoSuchContainer:  # removed while followed (--rm): the log has ended
                return False

        async for entry in follow_log(self.log_path(cid), flt, running):
            yield entry

    # -- exec ---------------------------------------------------------------------------------
    def exec_create(self, cid: str, args: list[str], env: list[str] | None = None, workdir: str = "",
                    user: str = "", tty: bool = False, stdin: bool = False,
                    console_size: tuple[int, int] | None = None, privileged: bool = False,
                    detach_keys: str = "") -> str:
        meta = self._meta(cid)
        if not self.state(cid).running:
            raise NotRunning(cid)
        if not args:
            raise InvalidArgument("no exec command specified")
        if workdir and not workdir.startswith("/"):
            raise InvalidArgument(f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
        base = meta["oci_process"]
        if user:
            who = resolve_user(user, self.images.lower_dirs(self.images.get(meta["image_id"])))
        else:
            who = User(base["user"]["uid"], base["user"]["gid"], tuple(base["user"].get("additionalGids", ())))
        hostname = meta["spec"]["hostname"] or cid[:12]
        process = oci_process(list(args), process_env(merge_env(list(base["env"]), list(env or [])), hostname, tty),
                              workdir or base["cwd"], who, tty, console_size,
                              # An exec has its container's capabilities, or all with --privileged.
                              bounding_capabilities() if privileged else base["capabilities"]["bounding"])
        exec_id = uuid.uuid4().hex + uuid.uuid4().hex
        self._execs[exec_id] = {"container_id": cid, "process": process, "tty": tty, "stdin": stdin,
                                "args": list(args), "started": False,
                                "detach_keys": detach_keys}
        return exec_id

    def _exec(self, exec_id: str) -> dict:
        found = self._execs.get(exec_id)
        if found is None:
            raise NoSuchExec(exec_id)
        return found

    async def exec_start(self, exec_id: str, detach: bool = False) -> client.Stream | None:
        """Run the exec; a stream of its output (and stdin if asked) that ends when it exits."""
        ex = self._exec(exec_id)
        if ex["started"]:  # dockerd's words, which tell a finished exec from a running one
            if self.exec_inspect(exec_id).exit_code is not None:
                raise Conflict(f"Error: Exec command {exec_id} has already run")
            raise Conflict(f"Error: Exec command {exec_id} is already running")
        ex["started"] = True
        cid = ex["container_id"]
        req = {"op": "exec", "exec_id": exec_id, "process": ex["process"], "tty": ex["tty"],
               "stdin": ex["stdin"], "stdin_once": True, "detach": detach}
        try:
            stream = await client.Stream.open(str(self._state_dir(cid)), req)
        except client.ShimGone:
            raise NotRunning(cid) from None
        except client.ShimError as exc:
            if "is not running" in exc.message:
                raise NotRunning(cid) from None
            record = _read_json(self._dir(cid) / "execs" / f"{exec_id}.json") or {}
            raise StartFailed(exc.message, record.get("exit_code", 126)) from None
        if detach:
            stream.close()
            return None
        return stream

    def exec_inspect(self, exec_id: str) -> ExecState:
        ex = self._exec(exec_id)
        record = _read_json(self._dir(ex["container_id"]) / "execs" / f"{exec_id}.json") or {}
        exit_code = record.get("exit_code")
        running = bool(record) and exit_code is None and self.state(ex["container_id"]).running
        return ExecState(id=exec_id, container_id=ex["container_id"], running=running, exit_code=exit_code,
                         pid=int(record.get("pid", 0)), args=ex["args"], tty=ex["tty"], open_stdin=ex["stdin"],
                         error=record.get("error", ""), detach_keys=ex["detach_keys"])

    def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        ex = self._exec(exec_id)
        if height <= 0 or width <= 0:
            raise InvalidArgument(f"invalid TTY size {height}x{width}")
        try:
            self._shim_request(ex["container_id"], {"op": "resize", "exec_id": exec_id,
                                                    "height": height, "width": width})
        except client.ShimError as exc:
            raise Conflict(exc.message) from None

    def exec_forget(self, exec_id: str) -> None:
        """Drop a finished exec's record (the healthchecks' probes, which nobody inspects)."""
        ex = self._execs.pop(exec_id, None)
        if ex is not None:
            with contextlib.suppress(OSError):
                (self._dir(ex["container_id"]) / "execs" / f"{exec_id}.json").unlink()

    def exec_kill(self, exec_id: str, sig: int) -> None:
        ex = self._exec(exec_id)
        self._shim_request(ex["container_id"], {"op": "kill", "exec_id": exec_id, "signal": int(sig)})
