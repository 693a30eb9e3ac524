"""A container path resolved inside a root directory, as the container would see it, from the host.

``os.path.join(rootfs, "/mnt/foo")`` followed by makedirs, open or mount follows the image's symlinks
on the *host*: an image with ``/mnt -> /etc`` would have ``/etc/foo`` made on the host. Here every
component is looked at in turn and a symlink is read, not followed: an absolute target starts again
at the root, ``..`` never climbs above it, and at most ``MAX_LINKS`` links are taken. What is
returned has no symlink left among its existing components, so creating what is missing of it stays
under the root.

Standard library only: ``rootfs_helper`` (run with ``python3 -I -S``) imports it too.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

MAX_LINKS = 255  # as the kernel's and securejoin's bound on a lookup's links


def resolve_parts(path: str, readlink: Callable[[list[str]], str | None]) -> list[str]:
    """The components of ``path`` inside a root, every symlink among them followed inside it.

    ``readlink(parts)`` gives the target of the entry at ``parts`` (resolved components) if it is a
    symlink, else None (a missing entry too: what follows it is taken as written)."""
    pending = [p for p in reversed(path.split("/")) if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        target = readlink([*resolved, part])
        if target is None:
            resolved.append(part)
            continue
        links += 1
        if links > MAX_LINKS:
            raise OSError(errno.ELOOP, f"too many levels of symbolic links in {path}")
        if target.startswith("/"):
            resolved = []
        pending.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
    return resolved


def resolve(root: str, path: str) -> str:
    """The host path of the container's ``path`` under ``root`` (the root's own symlinks followed inside it)."""

    def readlink(parts: list[str]) -> str | None:
        try:
            return os.readlink(os.path.join(root, *parts))
        except OSError:  # not a link, missing, or under a non-directory
            return None

    return os.path.join(root, *resolve_parts(path, readlink))
