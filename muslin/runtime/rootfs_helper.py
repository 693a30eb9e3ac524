"""A container's filesystem, seen from inside it: stat a path, tar it out, untar into it (docker cp).

Run by the runtime as ``python3 -I -S rootfs_helper.py REQUEST_JSON`` (stdlib only, like the shim), one
process per request, so that it can change its own root without touching muslind's:

* a running container: ``chroot /proc/<pid>/root``, which is the container's root with every mount
  the container has (binds, volumes);
* a stopped one: a mount namespace of its own (made private first, so nothing propagates to the host),
  the container's overlay and its bind mounts as in config.json, then chroot into it. The namespace,
  and every mount in it, ends with this process.

Inside the chroot every path, absolute symlinks included, resolves as it would in the container, and
nothing can reach the host's files. Output on stdout: one JSON line (``{"stat": ...}`` or
``{"error": ..., "kind": "notfound"|"invalid"}``), then for ``get`` the tar stream.
"""

from __future__ import annotations

import bz2  # noqa: F401  (tarfile's decompressors, imported before the chroot hides the stdlib)
import ctypes
import datetime
import gzip  # noqa: F401
import json
import lzma  # noqa: F401
import os
import stat
import sys
import tarfile

if __package__:
    from . import inroot
else:  # run as a script (-I: its own directory is not on the path)
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    import inroot

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
# Go's os.FileMode bits, which dockerd's X-Docker-Container-Path-Stat carries.
GO_DIR, GO_SYMLINK, GO_DEVICE, GO_PIPE, GO_SOCKET = 1 << 31, 1 << 27, 1 << 26, 1 << 25, 1 << 24
GO_SETUID, GO_SETGID, GO_CHARDEV, GO_STICKY = 1 << 23, 1 << 22, 1 << 21, 1 << 20
CHUNK = 1 << 16


class Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _libc_call("mount", enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))


def enter_stopped(bundle: str) -> None:
    """Assemble the stopped container's filesystem in a private mount namespace and chroot into it."""
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    rootfs = os.path.join(bundle, "rootfs")
    _libc_call("unshare", CLONE_NEWNS)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # before anything: no mount of ours reaches the host
    mounts = config["mounts"]
    _mount("overlay", rootfs, "overlay", 0, mounts[0]["options"][0])
    for m in mounts[1:]:
        if m["type"] != "bind":
            continue  # proc, sysfs, tmpfs: a stopped container has none of them, as with dockerd
        if not os.path.lexists(m["source"]):
            continue
        # The image's symlinks are the container's: followed inside the rootfs, never on the host.
        target = inroot.resolve(rootfs, m["destination"])
        if os.path.isdir(m["source"]):
            os.makedirs(target, exist_ok=True)
        elif not os.path.lexists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        _mount(m["source"], target, None, MS_BIND | MS_REC)
        if "ro" in m["options"]:
            _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    os.chroot(rootfs)
    os.chdir("/")


def enter_running(pid: int) -> None:
    os.chroot(f"/proc/{pid}/root")
    os.chdir("/")


def go_mode(st: os.stat_result) -> int:
    mode = stat.S_IMODE(st.st_mode) & 0o777
    fmt = stat.S_IFMT(st.st_mode)
    mode |= {stat.S_IFDIR: GO_DIR, stat.S_IFLNK: GO_SYMLINK, stat.S_IFIFO: GO_PIPE, stat.S_IFSOCK: GO_SOCKET,
             stat.S_IFBLK: GO_DEVICE, stat.S_IFCHR: GO_DEVICE | GO_CHARDEV}.get(fmt, 0)
    if st.st_mode & stat.S_ISUID:
        mode |= GO_SETUID
    if st.st_mode & stat.S_ISGID:
        mode |= GO_SETGID
    if st.st_mode & stat.S_ISVTX:
        mode |= GO_STICKY
    return mode


def go_time(ns: int) -> str:
    """Go's RFC 3339 with nanoseconds, trailing zeros dropped, in UTC."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def resolve(path: str) -> str:
    """dockerd's rule: a trailing "/" or "/." follows the last component, else a symlink is itself."""
    if not path.startswith("/"):
        path = "/" + path
    if path.endswith("/") or path.endswith("/."):
        return os.path.realpath(path)
    parent, base = os.path.split(path.rstrip("/") or "/")
    return os.path.join(os.path.realpath(parent), base) if base else "/"


def path_stat(path: str, shown: str) -> dict:
    try:
        st = os.lstat(path)
    except OSError:
        raise Refused("notfound", shown) from None
    link = os.path.realpath(path) if stat.S_ISLNK(st.st_mode) else ""
    name = os.path.basename(shown.rstrip("/")) or "/"
    if shown.endswith("/."):
        name = "."
    return {"name": name, "size": st.st_size, "mode": go_mode(st), "mtime": go_time(st.st_mtime_ns),
            "linkTarget": link}


def _reply(obj: dict) -> None:
    sys.stdout.buffer.write(json.dumps(obj).encode() + b"\n")
    sys.stdout.buffer.flush()


def get(path: str, shown: str) -> None:
    info = path_stat(path, shown)
    _reply({"stat": info})
    # The archive's top entry: the path's own name, or "." for "dir/." (its contents only).
    arcname = "." if shown.endswith("/.") else info["name"]
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(path, arcname=arcname, recursive=True)


def put(path: str, shown: str, no_overwrite_dir_non_dir: bool) -> None:
    try:
        st = os.stat(path)
    except OSError:
        raise Refused("notfound", shown) from None
    if not stat.S_ISDIR(st.st_mode):
        raise Refused("invalid", "extraction point is not a directory")

    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        if no_overwrite_dir_non_dir:
            target = os.path.join(dest, member.name)
            if os.path.lexists(target) and os.path.isdir(target) != member.isdir():
                what = ("directory", "non-directory") if os.path.isdir(target) else ("non-directory", "directory")
                raise Refused("invalid", f'cannot overwrite {what[0]} "{target}" with {what[1]} "{member.name}"')
        return member

    try:
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|*") as tar:
            for member in tar:
                tar.extract(member, path, numeric_owner=True, filter=lambda m, d: check(m, d))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise Refused("invalid", f"Error processing tar file: {exc}") from None
    _reply({"done": True})


def main() -> int:
    request = json.loads(sys.argv[1])
    shown = request["path"]
    try:
        if request.get("pid"):
            enter_running(int(request["pid"]))
        else:
            enter_stopped(request["bundle"])
        path = resolve(shown)
        if request["op"] == "stat":
            _reply({"stat": path_stat(path, shown)})
        elif request["op"] == "get":
            get(path, shown)
        else:
            put(path, shown, bool(request.get("no_overwrite_dir_non_dir")))
    except Refused as exc:
        _reply({"error": str(exc), "kind": exc.kind})
    except OSError as exc:
        _reply({"error": str(exc), "kind": "failed"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
