"""docker diff from an overlay's upper directory, a volume's copy-up from the image's layers, and the mount
table checks of a bind's propagation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from muslin.errors import InvalidArgument
from muslin.runtime import Mount
from muslin.runtime.archive import Change, Kind, changes
from muslin.runtime.copyup import copy_image_path
from muslin.runtime.mountinfo import check_propagation, mount_of, parse
from muslin.runtime.rootfs_helper import go_mode, go_time


def make(root: Path, files: dict[str, str], dirs: tuple[str, ...] = ()) -> None:
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)


def test_added_modified_and_parents(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    make(lower, {"bin/sh": "x", "etc/passwd": "root"}, ("tmp",))
    make(upper, {"test": "", "tmp/x/a": "a", "etc/passwd": "root\nnew", "etc/hosts": "", "etc/hostname": ""})
    assert changes(str(upper), [str(lower)]) == [
        Change("/etc", Kind.MODIFIED), Change("/etc/passwd", Kind.MODIFIED), Change("/test", Kind.ADDED),
        Change("/tmp", Kind.MODIFIED), Change("/tmp/x", Kind.ADDED), Change("/tmp/x/a", Kind.ADDED)]


def test_what_runc_makes_for_every_container_is_no_change(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    make(lower, {"etc/passwd": "root"}, ("dev", "proc", "sys"))
    make(upper, {"etc/hosts": "", "etc/resolv.conf": "", "etc/hostname": ""})
    assert changes(str(upper), [str(lower)]) == []


def test_a_changed_directory_mode_is_a_change(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    make(lower, {}, ("srv",))
    make(upper, {}, ("srv",))
    (upper / "srv").chmod(0o700)
    assert changes(str(upper), [str(lower)]) == [Change("/srv", Kind.MODIFIED)]


@pytest.mark.skipif(os.geteuid() != 0, reason="a whiteout is a character device: mknod needs root")
def test_whiteouts_are_deletions(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    make(lower, {"bin/ls": "x", "bin/sh": "x"})
    (upper / "bin").mkdir(parents=True)
    os.mknod(upper / "bin" / "ls", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    assert changes(str(upper), [str(lower)]) == [Change("/bin", Kind.MODIFIED), Change("/bin/ls", Kind.DELETED)]


def test_go_file_modes_and_times() -> None:
    def fake(mode: int) -> os.stat_result:
        return os.stat_result((mode, 0, 0, 1, 0, 0, 0, 0, 0, 0))

    assert go_mode(fake(stat.S_IFDIR | 0o755)) == 2147484141
    assert go_mode(fake(stat.S_IFLNK | 0o777)) == 134218239
    assert go_mode(fake(stat.S_IFREG | 0o644)) == 420
    assert go_mode(fake(stat.S_IFDIR | 0o1777)) == (1 << 31) | (1 << 20) | 0o777
    assert go_time(1_764_610_450_933_245_927) == "2025-12-01T17:34:10.933245927Z"
    assert go_time(1_764_610_450_000_000_000) == "2025-12-01T17:34:10Z"


MOUNTINFO = """\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /srv/shared rw shared:7 - tmpfs tmpfs rw
31 22 0:27 / /srv/slave rw master:7 - tmpfs tmpfs rw
32 22 0:28 / /srv/with\\040space rw - tmpfs tmpfs rw
"""


def test_mount_table_lookups() -> None:
    entries = parse(MOUNTINFO)
    assert mount_of("/srv/shared/x", entries).mount_point == "/srv/shared"
    assert mount_of("/srv/sharedx", entries).mount_point == "/"
    assert mount_of("/srv/with space/a", entries).mount_point == "/srv/with space"


def test_propagation_needs_a_propagating_source() -> None:
    def bind(source: str, propagation: str) -> Mount:
        return Mount("/m", "bind", source, ("rbind", propagation, "rw"))

    check_propagation([bind("/srv/shared/a", "rshared"), bind("/srv/slave/a", "rslave")], MOUNTINFO)
    check_propagation([bind("/tmp/a", "rprivate")], MOUNTINFO)
    with pytest.raises(InvalidArgument, match="path /tmp/a is mounted on / but it is not a shared mount"):
        check_propagation([bind("/tmp/a", "rshared")], MOUNTINFO)
    with pytest.raises(InvalidArgument, match="is mounted on / but it is not a shared or slave mount"):
        check_propagation([bind("/tmp/a", "slave")], MOUNTINFO)


def test_copy_up_merges_the_image_layers(tmp_path: Path) -> None:
    bottom, top, dest = tmp_path / "bottom", tmp_path / "top", tmp_path / "volume"
    make(bottom, {"etc/app/a": "a", "etc/app/b": "old", "etc/app/sub/x": "x"})
    make(top, {"etc/app/b": "new", "etc/app/c": "c"})
    (top / "etc" / "app" / "link").symlink_to("/etc/app/a")
    (top / "etc" / "app").chmod(0o750)
    dest.mkdir()
    assert copy_image_path([str(top), str(bottom)], "/etc/app/", str(dest))
    assert sorted(p.name for p in dest.iterdir()) == ["a", "b", "c", "link", "sub"]
    assert (dest / "b").read_text() == "new" and (dest / "sub" / "x").read_text() == "x"
    assert os.readlink(dest / "link") == "/etc/app/a"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o750  # the volume takes the image directory's mode
    assert not copy_image_path([str(top), str(bottom)], "/nowhere", str(tmp_path / "unused"))


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts (character devices) need root")
def test_copy_up_honours_whiteouts(tmp_path: Path) -> None:
    bottom, top, dest = tmp_path / "bottom", tmp_path / "top", tmp_path / "volume"
    make(bottom, {"srv/gone": "x", "srv/kept": "y"})
    (top / "srv").mkdir(parents=True)
    os.mknod(top / "srv" / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    dest.mkdir()
    copy_image_path([str(top), str(bottom)], "/srv", str(dest))
    assert [p.name for p in dest.iterdir()] == ["kept"]
