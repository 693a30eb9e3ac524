"""Network namespace handles: create, enter, remove, and netlink sockets bound to one.

A namespace is named by the path of a bind-mounted nsfs file (``/run/netns/NAME`` for the ones
``ip netns`` knows, ``<exec-root>/netns/<id>`` for container sandboxes). Entering is per thread
(``setns`` only moves the calling thread), so the engine can wire a container's namespace from a worker
thread while the event loop stays where it is. Sockets keep the namespace they were created in, which is
how one process holds netlink handles into many namespaces without pyroute2 forking a helper each time.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import struct
import sys
import threading
from collections.abc import Iterator, Sequence

from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MS_REC = 0x4000
MNT_DETACH = 0x2
NETLINK_ROUTE = 0
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
IFREQ = struct.Struct("=16sH22x")  # struct ifreq: the name, then ifr_flags in the union
IFF_UP = 0x1
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)
NETNS_RUN_DIR = "/run/netns"
AT_FDCWD = -100
STATX_BASIC_STATS = 0x7FF
STATX_ATTR_MOUNT_ROOT = 0x2000  # statx's stx_attributes: the path is the root of a mount
STATX_ATTRIBUTES, STATX_ATTRIBUTES_MASK = 8, 56  # byte offsets of those two u64 fields in struct statx

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def _mount_bind(source: str, target: str) -> None:
    _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND, None), f"mount {target}")


def _umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def set_sysctl(path: str, value: str) -> None:
    """Write /proc/sys/<path>; /proc/sys/net resolves against the calling thread's namespace."""
    with open(f"/proc/sys/{path}", "w") as f:
        f.write(value)


def get_sysctl(path: str) -> str:
    """Read /proc/sys/<path> (stripped); "" when there is no such setting (a link that is gone)."""
    try:
        with open(f"/proc/sys/{path}") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def path_for(name_or_path: str) -> str:
    """``node1`` means /run/netns/node1; anything with a slash is already a path."""
    return name_or_path if "/" in name_or_path else os.path.join(NETNS_RUN_DIR, name_or_path)


def exists(name_or_path: str) -> bool:
    return _is_nsfs(path_for(name_or_path))


def ensure_pin_directory(directory: str) -> None:
    """Make the pin directory a shared mount of its own, as `ip netns add` does before its first pin.

    Otherwise a later `ip netns add` binds the directory over itself and hides the pins made before,
    which then can neither be unmounted nor unlinked through the directory (three namespaces of an
    early test run stayed so until the directory's mount was lifted). Also what lets another mount
    namespace go without the pins: it unmounts the directory's mount there."""
    os.makedirs(directory, exist_ok=True)
    real = os.path.realpath(directory)
    if _is_mount_root(real):
        return
    _mount_bind(real, real)
    _check(_libc.mount(b"none", real.encode(), None, MS_SHARED | MS_REC, None), f"make {real} shared")


def _is_mount_root(path: str) -> bool:
    """Whether ``path`` is where something is mounted. Asked at every pin, so statx's answer, O(1): the
    mount table it would otherwise be read from has a line per pin (1,000 containers: 1,000 lines)."""
    buf = ctypes.create_string_buffer(256)  # struct statx
    if _libc.statx(AT_FDCWD, path.encode(), 0, STATX_BASIC_STATS, buf) == 0:
        mask = int.from_bytes(buf.raw[STATX_ATTRIBUTES_MASK:STATX_ATTRIBUTES_MASK + 8], sys.byteorder)
        if mask & STATX_ATTR_MOUNT_ROOT:
            attributes = int.from_bytes(buf.raw[STATX_ATTRIBUTES:STATX_ATTRIBUTES + 8], sys.byteorder)
            return bool(attributes & STATX_ATTR_MOUNT_ROOT)
    with open("/proc/self/mountinfo") as f:  # a kernel before 5.8 tells no mount roots
        return any(line.split()[4] == path for line in f)


def _is_nsfs(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        # An nsfs file answers NS_GET_NSTYPE; a plain file left behind by a crash does not.
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False
    finally:
        os.close(fd)


def create(name_or_path: str, sysctls: dict[str, str] | None = None) -> str:
    """Create a new network namespace pinned at the path; returns the path. Idempotent.

    ``sysctls`` (``net/ipv6/conf/default/disable_ipv6``: ``1``, ...) are set inside it before anyone
    can use it."""
    path = path_for(name_or_path)
    if _is_nsfs(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ensure_pin_directory(os.path.dirname(path))
    if not os.path.exists(path):
        with open(path, "x"):
            pass
    error: list[BaseException] = []

    def pin() -> None:
        # unshare() moves this thread only; it is a throwaway thread, so nothing needs restoring.
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare")
            for key, value in (sysctls or {}).items():
                set_sysctl(key, value)
            _loopback_up()
            _mount_bind(f"/proc/self/task/{threading.get_native_id()}/ns/net", path)
        except BaseException as exc:  # reported to the caller below
            error.append(exc)

    worker = threading.Thread(target=pin, name="netns-create")
    worker.start()
    worker.join()
    if error:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise error[0]
    return path


def _loopback_up() -> None:
    """``lo`` of the calling thread's namespace up, by the interface ioctls ifconfig uses: from the
    thread already inside the new namespace, without opening a netlink handle into it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        request = bytearray(IFREQ.pack(b"lo", 0))
        fcntl.ioctl(sock, SIOCGIFFLAGS, request)
        flags = IFREQ.unpack(request)[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, IFREQ.pack(b"lo", flags | IFF_UP))


def remove(name_or_path: str) -> None:
    """Unpin and delete; the namespace dies when the last process and socket in it are gone."""
    path = path_for(name_or_path)
    try:
        _umount(path)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def entered(name_or_path: str) -> Iterator[None]:
    """Run the body with the calling thread inside the namespace; always come back."""
    target = os.open(path_for(name_or_path), os.O_RDONLY | os.O_CLOEXEC)
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


def socket_in(name_or_path: str | None, proto: int = NETLINK_ROUTE) -> socket.socket:
    """A netlink socket living in the given namespace (None: the caller's)."""
    if name_or_path is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, proto)
    with entered(name_or_path):
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, proto)


def inet_sockets_in(name_or_path: str, kinds: Sequence[int]) -> list[socket.socket]:
    """Non-blocking IPv4 sockets of these kinds (SOCK_DGRAM, SOCK_STREAM) living in the namespace, made
    in one visit to it (servers the caller's process runs there). The caller binds them: a bind acts in
    the socket's namespace, wherever the thread is."""
    made: list[socket.socket] = []
    try:
        with entered(name_or_path):
            for kind in kinds:
                made.append(socket.socket(socket.AF_INET, kind))
        for sock in made:
            sock.setblocking(False)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def iproute(name_or_path: str | None = None) -> IPRoute:
    """An IPRoute handle into the namespace, without a helper process."""
    if name_or_path is None:
        return IPRoute()
    return IPRoute(fileno=socket_in(name_or_path).detach())


def current_inode() -> int:
    return os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
