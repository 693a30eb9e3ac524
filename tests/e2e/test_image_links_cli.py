"""An image's symlinks are the container's: a bind under ``/mnt -> /etc`` of a stopped container (docker
cp assembles its files) and a volume under ``/data -> /etc`` (its copy-up) resolve inside the image,
never on the host (here the link points at a directory of the test's, which must stay untouched)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from .conftest import Daemon

pytestmark = pytest.mark.root


def import_image(daemon: Daemon, tmp_path: Path, links: dict[str, str], files: dict[str, str], name: str) -> None:
    src = tmp_path / "image"
    for path, content in files.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_text(content)
    for path, target in links.items():
        (src / path).symlink_to(target)
    with tarfile.open(tmp_path / "image.tar", "w") as tar:
        tar.add(src, arcname=".")
    daemon.docker("import", str(tmp_path / "image.tar"), name)


def test_image_links_never_lead_a_bind_or_a_copy_up_to_the_host(daemon: Daemon, tmp_path: Path) -> None:
    hostside = tmp_path / "hostside"
    (hostside / "ssh").mkdir(parents=True)
    (hostside / "ssh" / "host_key").write_text("secret\n")
    inside = str(hostside).lstrip("/")
    import_image(daemon, tmp_path, {"mnt": str(hostside), "up": "../../../../../../../../" + inside, "data": str(hostside)},
                 {f"{inside}/ssh/image_key": "public\n"}, "links:1")
    bind = tmp_path / "bind"
    bind.mkdir()
    (bind / "f").write_text("bound\n")
    daemon.docker("create", "--name", "ln", "-v", f"{bind}:/mnt/foo", "-v", f"{bind}:/up/bar:ro",
                  "-v", "/data/ssh", "links:1", "true")
    try:
        daemon.docker("cp", "ln:/mnt/foo/f", str(tmp_path / "out"))  # the stopped container's binds, assembled
        assert (tmp_path / "out").read_text() == "bound\n"
        daemon.docker("cp", "ln:/up/bar/f", str(tmp_path / "out2"))
        assert (tmp_path / "out2").read_text() == "bound\n"
        assert sorted(p.name for p in hostside.iterdir()) == ["ssh"]  # no foo, no bar made on the host
        volume = next(m for m in json.loads(daemon.docker("inspect", "--format", "{{json .Mounts}}", "ln").stdout)
                      if m["Destination"] == "/data/ssh")
        assert sorted(p.name for p in Path(volume["Source"]).iterdir()) == ["image_key"]  # the image's, not the host's
    finally:
        daemon.docker("rm", "-v", "ln", check=False)
        daemon.docker("rmi", "links:1", check=False)
