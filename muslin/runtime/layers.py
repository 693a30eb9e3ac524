"""Unpacking image layers: a (possibly compressed) tar stream into a directory overlayfs can stack.

The diff id Docker names a layer by is the sha256 of the *uncompressed* tar, so the stream is hashed
after decompression while it is unpacked, in one pass. Docker's whiteouts (``.wh.NAME``, and
``.wh..wh..opq`` for an opaque directory) become overlayfs's (a 0/0 character device, the
``trusted.overlay.opaque`` xattr). Nothing in a tar may land outside the layer directory, whether by
``..``, an absolute name, or a path through a symlink the same tar made.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import stat
import tarfile
from typing import BinaryIO

from . import inroot
from .errors import InvalidArgument

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
CHUNK = 1 << 20


class _Reader(io.RawIOBase):
    """A raw stream over ``head`` then ``source``, hashing and counting what passes when asked to."""

    def __init__(self, source: BinaryIO, head: bytes = b"", hashing: bool = False) -> None:
        self.source = source
        self.head = head
        self.digest = hashlib.sha256() if hashing else None
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        if self.head:
            data, self.head = self.head[: len(buf)], self.head[len(buf) :]
        else:
            data = self.source.read(len(buf))
        n = len(data)
        buf[:n] = data
        if self.digest is not None:
            self.digest.update(data)
        self.size += n
        return n


def _uncompressed(source: BinaryIO) -> BinaryIO:
    """The stream, decompressed if it starts with a gzip, bzip2 or xz header."""
    head = source.read(6)
    rest: BinaryIO = io.BufferedReader(_Reader(source, head), CHUNK)  # type: ignore[assignment]
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=rest)  # type: ignore[return-value]
    if head[:3] == b"BZh":
        return bz2.BZ2File(rest)  # type: ignore[return-value]
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(rest)  # type: ignore[return-value]
    if head[:4] == b"\x28\xb5\x2f\xfd":
        raise InvalidArgument("zstd-compressed layers are not supported")
    return rest


def is_whiteout(st: os.stat_result) -> bool:
    """overlayfs's whiteout: a 0/0 character device hides the lower layers' entry of that name."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    """An opaque directory hides everything the lower layers have under it."""
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def merged(layers: list[str], parts: list[str]) -> list[str]:
    """The layers (topmost first) whose entries make the image's ``parts`` as overlayfs merges them: the
    topmost entry's layer, then, while that is a directory, the lower layers' directories it is merged
    with (down to a whiteout, a non-directory or an opaque directory); empty if the image has nothing
    there. Each layer is looked into only through the directories it has above the path."""
    for depth in range(1, len(parts) + 1):
        kept: list[str] = []
        for layer in layers:
            entry = os.path.join(layer, *parts[:depth])
            try:
                st = os.lstat(entry)
            except OSError:
                continue
            if is_whiteout(st) or kept and not stat.S_ISDIR(st.st_mode):
                break
            kept.append(layer)
            if not stat.S_ISDIR(st.st_mode) or is_opaque(entry):
                break
        layers = kept
    return layers


def resolve_in_image(layers: list[str], path: str) -> tuple[list[str], list[str]]:
    """``path``'s components in the image (layers topmost first), its symlinks followed inside the image,
    never on the host, and the layers that make what is there (``merged``)."""

    def readlink(parts: list[str]) -> str | None:
        found = merged(layers, parts)
        entry = os.path.join(found[0], *parts) if found else ""
        return os.readlink(entry) if found and os.path.islink(entry) else None

    parts = inroot.resolve_parts(path, readlink)
    return parts, merged(layers, parts)


def _clean_name(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"layer entry {name!r} points outside the layer")
    return "/".join(parts)


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        for dirpath, dirnames, filenames in os.walk(path, topdown=False):
            for name in filenames:
                os.unlink(os.path.join(dirpath, name))
            for name in dirnames:
                full = os.path.join(dirpath, name)
                os.unlink(full) if os.path.islink(full) else os.rmdir(full)
        os.rmdir(path)
    elif os.path.lexists(path):
        os.unlink(path)


class _Unpacker:
    def __init__(self, dest: str) -> None:
        self.root = os.path.realpath(dest)

    def filter(self, member: tarfile.TarInfo, _dest: str) -> tarfile.TarInfo | None:
        name = _clean_name(member.name)
        if not name:
            return None  # the layer root itself
        parent, base = os.path.split(name)
        parent_path = os.path.join(self.root, parent)
        if not _inside(self.root, parent_path):
            raise InvalidArgument(f"layer entry {member.name!r} goes through a link out of the layer")
        if base == OPAQUE_MARKER:
            os.makedirs(parent_path, exist_ok=True)
            os.setxattr(parent_path, OPAQUE_XATTR, b"y")
            return None
        if base.startswith(WHITEOUT_PREFIX):
            os.makedirs(parent_path, exist_ok=True)
            target = os.path.join(parent_path, base[len(WHITEOUT_PREFIX) :])
            _remove(target)
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            return None
        target = os.path.join(self.root, name)
        # Never write through what is already there (a symlink from earlier in this tar, say).
        if os.path.lexists(target) and not (member.isdir() and os.path.isdir(target) and not os.path.islink(target)):
            _remove(target)
        changes: dict = {"name": name}
        if member.islnk():
            link = _clean_name(member.linkname)
            if not _inside(self.root, os.path.join(self.root, link)):
                raise InvalidArgument(f"hard link {member.name!r} points out of the layer")
            changes["linkname"] = link
        return member.replace(**changes, deep=False)


def unpack(source: BinaryIO, dest: str) -> tuple[str, int]:
    """Unpack a layer tar into ``dest`` (which must exist); returns (diff id, uncompressed size)."""
    hashing = _Reader(_uncompressed(source), hashing=True)
    unpacker = _Unpacker(dest)
    try:
        with tarfile.open(fileobj=io.BufferedReader(hashing, CHUNK), mode="r|") as tar:
            for member in tar:
                tar.extract(member, dest, numeric_owner=True, filter=unpacker.filter)
        while hashing.read(CHUNK):
            pass  # the zero padding after the end marker is part of what Docker hashes
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, gzip.BadGzipFile) as exc:
        raise InvalidArgument(f"invalid layer tar: {exc}") from exc
    return "sha256:" + hashing.digest.hexdigest(), hashing.size
