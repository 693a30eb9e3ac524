"""The container runtime under muslind: images, OCI bundles, runc, and a shim per container run.

Its own concern, beside the engine rather than in it: it knows nothing of networks (the engine hands it
a network namespace's path) and depends only on ``muslin.errors``. What the engine, the API layer and the
lab may use is what this module exports, listed below; everything else in the package is detail.

``ImageStore(root)``
    ``ensure_busybox() -> Image``                      busybox:latest from the host's busybox-static
    ``import_tar(fileobj, repo_tag=None, changes=(), message="") -> Image``     ``docker import``
    ``load(fileobj) -> list[str]``                      ``docker load``: the tags loaded (ids if untagged)
    ``get(ref) -> Image``                               tag, ``docker.io/library/…``, id or id prefix;
                                                        raises NoSuchImage ("No such image: X", 404)
    ``list() -> list[Image]``;  ``tag(ref, repo_tag)``
    ``remove(ref, force=False, in_use=Runtime.images_in_use()) -> [{"Untagged": t} | {"Deleted": id}]``
    ``Image``: id ("sha256:" of the config bytes), repo_tags, created, size, config (Docker's container
    config: Cmd, Env, Entrypoint, WorkingDir, User, ExposedPorts, Labels, …), diff_ids, architecture, os.

``Runtime(root, state, images, runc="runc", python=sys.executable, pin_dirs=())``   root persists, state is /run-like
    ``create(ContainerSpec) -> ProcessConfig``          files only; the process after image defaults
    ``async attach(id, stdin=False, stdout=True, stderr=True, stdin_once=False) -> Stream``
    ``async exit_waiter(id, next_run=False) -> ExitWaiter``; ``await waiter.wait() -> exit code``
        registered when it returns: call it (next_run=True) before start for ``condition=next-exit``
    ``async wait_exit(id, next_run=False) -> int``      the two above in one
    ``start(id) -> pid``                                raises StartFailed(.exit_code 127/126/128),
                                                        NotModified if running
    ``kill(id, sig, thaw=False)``;  ``async stop(id, timeout=10, sig=SIGTERM) -> bool``;  ``async restart(id, timeout)``
    ``pause(id)``;  ``unpause(id)``                     runc pause/resume (the freezer); State.paused
    ``update(id, Resources)``                           runc update of a running one; kept in config.json
    ``cgroups(id) -> Cgroups``                          the running container's cgroup directories
                                                        (``pids()``, ``read(controller, file)``, ``frozen()``)
    ``rw_size(id) -> int``                              bytes of the writable layer
    ``resize(id, height, width)``;  ``write_etc(id, hosts=None, resolv_conf=None)``
    ``set_start_env(id, extra)``                        variables before Config.Env from the next start on
    ``delete(id, force=False)``                         Conflict if running and not forced
    ``state(id) -> State``;  ``list() -> list[State]``;  ``images_in_use() -> {image_id: container_id}``
    ``recover() -> list[Recovered]``                    after a daemon restart: live shims are kept,
                                                        a container whose shim died is settled (255);
                                                        ``Recovered``: id, running, started_at, exit_code
    ``logs(id, LogFilter(stdout, stderr, since, until, tail)) -> list[LogEntry(stream, time, data)]``
    ``follow_logs(id, LogFilter)``                      async iterator, ends when the container stops
    ``exec_create(id, args, env=None, workdir="", user="", tty=False, stdin=False, …, detach_keys="") -> exec_id``
    ``async exec_start(exec_id, detach=False) -> Stream | None``; raises StartFailed(.exit_code 126, as dockerd)
    ``exec_forget(exec_id)``                            drop a finished exec's record
    ``exec_inspect(exec_id) -> ExecState``;  ``exec_resize(exec_id, h, w)``;  ``exec_kill(exec_id, sig)``
    ``close()``                                         stops the shim spawner; containers run on

    ``async stat_path(id, path, ref) -> PathStat``;  ``async get_archive(id, path, ref) -> (PathStat, chunks)``
    ``async put_archive(id, path, ref, tar_bytes, no_overwrite_dir_non_dir)``   docker cp, running or not
    ``changes(id) -> list[Change(path, kind)]``          docker diff (kind 0 modified, 1 added, 2 deleted)

``Stream`` (attach and exec)
    ``async read() -> ("stdout" | "stderr", bytes) | None``  (None: ended; then ``exit_code`` is set if the
    process exited); ``write(bytes)``; ``async drain()``; ``close_stdin()``; ``close()``.
    With a TTY everything is "stdout" and raw. Docker's 8-byte framing is the API layer's.

``shim_processes(under) -> [pid]``
    the shims and shim spawners of every runtime whose state root is ``under`` or below it (they
    outlive their daemon): what a teardown after a crash stops, as the lab's does.

``Mount(destination, type, source, options)``: a bind or tmpfs mount of ``ContainerSpec.mounts`` (runc
makes it inside the container's mount namespace; shared/slave propagation is checked at start).

``copy_image_path(lower_dirs, path, dest) -> bool``: an empty volume's first content, the image's files at
``path`` (dockerd's copy-up; ``ImageStore.lower_dirs(image)`` gives the layers).

``capabilities(cap_add, cap_drop, privileged) -> [CAP_...]`` and ``check_sysctls(sysctls, host_network)``
validate ``docker run --cap-add/--cap-drop/--privileged/--sysctl`` for ``ContainerSpec``.

Blocking calls are short (a fork, one runc run) and belong on a worker thread; everything that waits
on a container is async. Networking is the engine's: it passes the network namespace's path in
``ContainerSpec.netns_path`` (None shares the daemon's own, for ``--network host``).
"""

from .archive import Change, PathStat
from .cgroups import Cgroups
from .client import Stream
from .copyup import copy_image_path
from .errors import NoSuchContainer, NoSuchExec, NoSuchImage, NotRunning, StartFailed
from .images import Image, ImageStore
from .logs import LogEntry, LogFilter
from .runtime import ExecState, ExitWaiter, Recovered, Runtime, State, shim_processes
from .spec import ContainerSpec, Mount, ProcessConfig, Resources, capabilities, check_sysctls, normalize_capability

__all__ = ["Cgroups", "Change", "ContainerSpec", "ExecState", "ExitWaiter", "Image", "ImageStore", "LogEntry", "LogFilter",
           "Mount", "NoSuchContainer", "NoSuchExec", "NoSuchImage", "NotRunning", "PathStat", "ProcessConfig", "Recovered", "Resources",
           "Runtime", "StartFailed",
           "State", "Stream", "capabilities", "check_sysctls", "copy_image_path", "normalize_capability", "shim_processes"]
