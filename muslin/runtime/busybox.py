"""The ``busybox:latest`` image, built locally from the host's busybox-static (no registry needed).

One layer: ``/bin/busybox``, a symlink per applet where ``busybox --list-full`` puts it, the usual
top-level directories and a minimal passwd/group so ``--user nobody`` resolves. Every entry carries
the binary's mtime and root ownership, so the same busybox always gives the same layer and image id.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

HOST_BUSYBOX = Path("/usr/bin/busybox")
CMD = ["sh"]
ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
DIRECTORIES = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555, "root": 0o700,
               "sbin": 0o755, "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755,
               "usr/sbin": 0o755, "var": 0o755, "var/spool": 0o755, "var/www": 0o755}
FILES = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
                  b"nobody:x:65534:65534:nobody:/home:/bin/false\n",
    "etc/group": b"root:x:0:\ndaemon:x:1:\nnobody:x:65534:\n",
}


def applet_paths(binary: Path = HOST_BUSYBOX) -> list[str]:
    listing = subprocess.run([str(binary), "--list-full"], capture_output=True, text=True, check=True).stdout
    return sorted({line.strip() for line in listing.splitlines() if "/" in line.strip()} - {"bin/busybox"})


def layer_tar(binary: Path = HOST_BUSYBOX) -> tuple[bytes, int]:
    """The layer as an uncompressed tar, and the mtime it is stamped with."""
    mtime = int(binary.stat().st_mtime)
    out = io.BytesIO()

    def entry(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, size, link, mtime
        return info

    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, mode in sorted(DIRECTORIES.items()):
            tar.addfile(entry(name, tarfile.DIRTYPE, mode))
        data = binary.read_bytes()
        tar.addfile(entry("bin/busybox", tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
        for name, content in sorted(FILES.items()):
            tar.addfile(entry(name, tarfile.REGTYPE, 0o644, len(content)), io.BytesIO(content))
        for path in applet_paths(binary):
            if os.path.dirname(path) in DIRECTORIES:
                tar.addfile(entry(path, tarfile.SYMTYPE, 0o777, link="/bin/busybox"))
    return out.getvalue(), mtime
