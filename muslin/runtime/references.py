"""Image references as Docker reads them: ``busybox`` is ``busybox:latest`` is ``docker.io/library/busybox:latest``."""

from __future__ import annotations

import re

from .errors import InvalidArgument

_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_DOMAIN = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_HEX = re.compile(r"[0-9a-f]{1,64}")
DEFAULT_DOMAIN_PREFIXES = ("docker.io/library/", "docker.io/", "index.docker.io/library/", "index.docker.io/")


def normalize(ref: str) -> str:
    """The canonical ``name:tag`` for a reference; raises InvalidArgument for a malformed one."""
    name, tag = split(ref)
    return f"{name}:{tag}"


def split(ref: str) -> tuple[str, str]:
    if not ref or ref != ref.strip():
        raise InvalidArgument(f"invalid reference format: {ref!r}")
    name, tag = ref, "latest"
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1 :]
    if "@" in name:
        raise InvalidArgument(f"invalid reference format: digests are not supported: {ref}")
    for prefix in DEFAULT_DOMAIN_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    first, _, rest = name.partition("/")
    path = name
    if rest and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            raise InvalidArgument(f"invalid reference format: {ref}")
        path = rest
    if not _NAME.fullmatch(path) or not _TAG.fullmatch(tag):
        raise InvalidArgument(f"invalid reference format: {ref}")
    return name, tag


def id_prefix(ref: str) -> str | None:
    """The hex an id reference names (``sha256:abc…`` or a bare prefix), or None if it cannot be one."""
    hexpart = ref[len("sha256:") :] if ref.startswith("sha256:") else ref
    return hexpart if _HEX.fullmatch(hexpart) else None
