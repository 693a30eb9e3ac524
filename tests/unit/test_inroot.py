"""Container paths resolved inside a root (a stopped container's bind targets, a volume's copy-up, docker
diff): the image's symlinks are the container's, so none of them may lead to the host's files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from muslin.errors import InvalidArgument
from muslin.runtime import inroot
from muslin.runtime.archive import Change, Kind, changes
from muslin.runtime.copyup import copy_image_path
from muslin.runtime.layers import merged
from muslin.runtime.spec import resolve_user


def test_absolute_and_relative_links_stay_under_the_root(tmp_path: Path) -> None:
    root, host = tmp_path / "root", tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    host.mkdir()
    (root / "mnt").symlink_to(host)  # absolute: /<host> inside the root
    (root / "up").symlink_to("../../../../../../..")
    (root / "etc" / "loop").symlink_to("loop")
    (root / "etc" / "rel").symlink_to("../etc/./")
    assert inroot.resolve(str(root), "/mnt/foo") == os.path.join(root, str(host).lstrip("/"), "foo")
    assert inroot.resolve(str(root), "/up/x") == os.path.join(root, "x")
    assert inroot.resolve(str(root), "../../a/../b/") == os.path.join(root, "b")
    assert inroot.resolve(str(root), "/etc/rel/rel/f") == os.path.join(root, "etc", "f")
    assert inroot.resolve(str(root), "/") == str(root)
    with pytest.raises(OSError) as exc:
        inroot.resolve(str(root), "/etc/loop/x")
    assert exc.value.errno == errno.ELOOP


def test_links_through_missing_and_plain_files_are_taken_as_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert inroot.resolve(str(tmp_path), "/file/x/..//y") == os.path.join(tmp_path, "file", "y")
    assert inroot.resolve(str(tmp_path), "/none/a") == os.path.join(tmp_path, "none", "a")


def test_a_volume_under_an_image_link_copies_the_images_directory_not_the_hosts(tmp_path: Path) -> None:
    layer, host, dest = tmp_path / "layer", tmp_path / "hostetc", tmp_path / "vol"
    (host / "ssh").mkdir(parents=True)
    (host / "ssh" / "host_key").write_text("secret")
    inside = layer / str(host).lstrip("/") / "ssh"
    inside.mkdir(parents=True)
    (inside / "image_key").write_text("public")
    (layer / "data").symlink_to(host)  # data -> /…/hostetc: in the container, the image's own copy
    dest.mkdir()
    assert copy_image_path([str(layer)], "/data/ssh", str(dest))
    assert sorted(os.listdir(dest)) == ["image_key"]
    (layer / "rel").symlink_to("../../../../../../" + str(host).lstrip("/"))
    (tmp_path / "vol2").mkdir()
    assert copy_image_path([str(layer)], "/rel/ssh", str(tmp_path / "vol2"))  # ".." stops at the image's root
    assert os.listdir(tmp_path / "vol2") == ["image_key"]


def test_a_lower_layers_link_under_an_upper_directory_is_never_followed(tmp_path: Path) -> None:
    lower, upper, host, dest = tmp_path / "lower", tmp_path / "upper", tmp_path / "host", tmp_path / "vol"
    (host / "ssh").mkdir(parents=True)
    (host / "ssh" / "host_key").write_text("secret")
    lower.mkdir()
    (lower / "data").symlink_to(host)
    (upper / "data" / "ssh").mkdir(parents=True)
    (upper / "data" / "ssh" / "mine").write_text("")
    dest.mkdir()
    assert merged([str(upper), str(lower)], ["data", "ssh"]) == [str(upper)]
    assert copy_image_path([str(upper), str(lower)], "/data/ssh", str(dest))
    assert os.listdir(dest) == ["mine"]
    # docker diff does not look through it either: the host's names are no deletion of the container's.
    container = tmp_path / "container"
    (container / "data" / "ssh").mkdir(parents=True)
    os.setxattr(container / "data" / "ssh", "trusted.overlay.opaque", b"y")
    assert changes(str(container), [str(upper), str(lower)]) == [
        Change("/data/ssh", Kind.MODIFIED), Change("/data/ssh/mine", Kind.DELETED)]


def test_an_opaque_or_replaced_directory_hides_the_layers_below(tmp_path: Path) -> None:
    bottom, middle, top = tmp_path / "bottom", tmp_path / "middle", tmp_path / "top"
    (bottom / "srv" / "a").mkdir(parents=True)
    (middle / "srv").mkdir(parents=True)
    os.setxattr(middle / "srv", "trusted.overlay.opaque", b"y")
    (top / "srv" / "b").mkdir(parents=True)
    assert merged([str(top), str(middle), str(bottom)], ["srv"]) == [str(top), str(middle)]
    assert merged([str(top), str(middle), str(bottom)], ["srv", "a"]) == []
    (middle / "srv").rmdir()
    (middle / "srv").write_text("a file")
    assert merged([str(top), str(middle), str(bottom)], ["srv"]) == [str(top)]
    assert merged([str(middle), str(bottom)], ["srv"]) == [str(middle)]


def test_user_names_come_from_the_images_passwd_not_the_hosts(tmp_path: Path) -> None:
    layer, host = tmp_path / "layer", tmp_path / "hostetc"
    host.mkdir()
    (host / "passwd").write_text("hostuser:x:4242:4242::/:/bin/sh\n")
    layer.mkdir()
    (layer / "etc").symlink_to(host)  # etc -> /…/hostetc: the image's own directory of that name
    with pytest.raises(InvalidArgument):
        resolve_user("hostuser", [str(layer)])
    inside = layer / str(host).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "passwd").write_text("app:x:1000:1000::/:/bin/sh\n")
    assert resolve_user("app", [str(layer)]).uid == 1000
