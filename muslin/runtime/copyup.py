"""dockerd's volume copy-up: an empty volume mounted where the image has files starts with a copy of them.

The image's view of a directory is its layers merged as overlayfs merges them (the lowest first; a
whiteout removes what a lower layer had, an opaque directory hides it all), so the copy is made
layer by layer from the bottom, with owners, modes and times kept. The volume's path is resolved in
the image as runc resolves the mount's destination in the container's root (a symlink's target taken
inside the image, ``layers.resolve_in_image``), and each layer is only ever descended through its real directories: a
layer's symlink never leads the copy to the host's files.
"""

from __future__ import annotations

import os
import shutil
import stat

from .layers import is_opaque, is_whiteout, resolve_in_image


def _clear(path: str) -> None:
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


def _keep_metadata(src: str, st: os.stat_result, dest: str) -> None:
    os.lchown(dest, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dest, stat.S_IMODE(st.st_mode))
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))


def _merge_layer(src: str, dest: str) -> None:
    """One layer's directory onto what the lower layers gave ``dest`` (an existing directory)."""
    if is_opaque(src):
        _clear(dest)
    for name in sorted(os.listdir(src)):
        from_path, to_path = os.path.join(src, name), os.path.join(dest, name)
        st = os.lstat(from_path)
        replaced = os.path.lexists(to_path) and not (stat.S_ISDIR(st.st_mode) and os.path.isdir(to_path)
                                                      and not os.path.islink(to_path))
        if is_whiteout(st) or replaced:
            if os.path.isdir(to_path) and not os.path.islink(to_path):
                shutil.rmtree(to_path)
            elif os.path.lexists(to_path):
                os.unlink(to_path)
        if is_whiteout(st):
            continue
        if stat.S_ISDIR(st.st_mode):
            os.makedirs(to_path, exist_ok=True)
            _merge_layer(from_path, to_path)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(from_path), to_path)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(from_path, to_path, follow_symlinks=False)
        else:
            os.mknod(to_path, st.st_mode, st.st_rdev)  # fifos and devices, as the image has them
        _keep_metadata(from_path, st, to_path)


def copy_image_path(lower_dirs: list[str], path: str, dest: str) -> bool:
    """Copy the image's ``path`` (its layers, topmost first, as overlayfs takes them) into the empty
    directory ``dest``, which takes the image directory's owner and mode too; False if the image has
    no directory there."""
    parts, layers = resolve_in_image(lower_dirs, path)
    top = os.path.join(layers[0], *parts) if layers else ""
    if not layers or os.path.islink(top) or not os.path.isdir(top):
        return False
    for layer in reversed(layers):
        layer_dir = os.path.join(layer, *parts)
        _merge_layer(layer_dir, dest)
        _keep_metadata(layer_dir, os.lstat(layer_dir), dest)
    return True
