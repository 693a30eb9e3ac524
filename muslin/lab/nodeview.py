"""A lab node's own view of the files at the article's paths: ``/run/flannel``, ``/etc/sysconfig``, ...

Each node keeps its files under ``<root>/<node>/`` (``<root>/node1/run/flannel/subnet.env``). A command run
through this module (``muslin lab exec``, the lab's own ``cat``s) gets a mount namespace of its own in which
``/run`` and ``/etc`` are fresh tmpfs directories holding the host's entries, each bound back from the
host, except the entries the node has itself (``run/flannel``, ``etc/sysconfig``, ``etc/hosts``, ...), which
are bound from the node's directory. So ``cat /run/flannel/subnet.env`` reads the node's file and a write
to ``/etc/sysconfig/flanneld`` lands in the node's copy, while the machine's own /run and /etc are never
written: the mount points are made in the tmpfs, not on the host. Nothing mounted here reaches the host,
and the namespace goes away with the command.

A new mount namespace starts as a copy of every mount, the pins of other network namespaces
(``/run/netns/*``, container sandboxes) included, and a pin keeps its namespace alive: a long-lived command
(the node's agent, an interactive shell) would keep namespaces that others delete. So the copies of those
pins are detached before the command runs (it enters the node's network namespace by a descriptor
opened before); ``ip netns exec`` does not work in the view, ``nsenter --net=/proc/PID/ns/net`` does.

Usage: ``python -m muslin.lab.nodeview NODE_ROOT NETNS_PATH -- COMMAND...`` (the command runs in the node's
network namespace too).
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MNT_DETACH = 2
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 0x80000
VIEWED = ("run", "etc")  # the top directories a node has entries of its own in

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), flags,
                       data and data.encode()), f"mount {source} on {target}")


def _mount_point_like(source: str, target: str) -> None:
    """An empty directory or file at target for source to be bound onto."""
    if stat.S_ISDIR(os.stat(source).st_mode):
        os.mkdir(target)
    else:
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))


def view(top: str, node_dir: str) -> None:
    """Cover /<top> with a tmpfs holding the host's entries, bound back, and the node's own entries."""
    host = os.open(f"/{top}", os.O_PATH | os.O_DIRECTORY)  # the covered directory stays reachable by fd
    node = os.open(node_dir, os.O_PATH | os.O_DIRECTORY) if os.path.isdir(node_dir) else None
    own = set(os.listdir(f"/proc/self/fd/{node}")) if node is not None else set()
    mode = os.stat(f"/{top}").st_mode & 0o7777
    _mount("tmpfs", f"/{top}", "tmpfs", 0, f"mode={mode:o}")
    for name in sorted(os.listdir(f"/proc/self/fd/{host}")):
        if name in own:
            continue
        source, target = f"/proc/self/fd/{host}/{name}", f"/{top}/{name}"
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
            continue
        _mount_point_like(source, target)
        _mount(source, target, None, MS_BIND | MS_REC)
    for name in sorted(own):
        source, target = f"/proc/self/fd/{node}/{name}", f"/{top}/{name}"
        _mount_point_like(source, target)
        _mount(source, target, None, MS_BIND | MS_REC)
    os.close(host)
    if node is not None:
        os.close(node)


def _namespace_pins() -> list[str]:
    """Mount points of nsfs mounts (namespace pins), deepest first."""
    pins = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, fs = line.partition(" - ")
            if fs.split()[0] == "nsfs":
                # mountinfo escapes space, tab, newline and backslash as octal
                pins.append(fields.split()[4].encode().decode("unicode_escape"))
    return sorted(pins, key=lambda p: p.count("/"), reverse=True)


def enter(node_root: str, netns_path: str) -> None:
    """Give this process the node's view and network namespace (the host's mounts stay as they were)."""
    netns = os.open(netns_path, os.O_RDONLY)
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_SLAVE)  # nothing we mount here reaches the host
    # Before the views: a pin their tmpfs covered could not be reached. Pins stacked on one path take a
    # pass each; a bounded number of passes, as a pin that cannot go must not hang us.
    for _ in range(8):
        pins = _namespace_pins()
        for pin in pins:
            _libc.umount2(pin.encode(), MNT_DETACH)  # one already gone with its parent is fine
        if not pins or _namespace_pins() == pins:
            break
    for top in VIEWED:
        view(top, os.path.join(node_root, top))
    _check(_libc.setns(netns, CLONE_NEWNET), f"setns({netns_path})")
    os.close(netns)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m muslin.lab.nodeview NODE_ROOT NETNS_PATH -- COMMAND...", file=sys.stderr)
        return 2
    node_root, netns_path, cmd = argv[0], argv[1], argv[3:]
    enter(node_root, netns_path)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        print(f"{cmd[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached: execvp replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
