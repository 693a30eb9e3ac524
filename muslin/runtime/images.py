"""The image store: configs named by the sha256 of their bytes (as Docker), layers unpacked once.

Layout under ``root``::

    repositories.json          {"busybox:latest": "sha256:…"}
    configs/<hex>.json         the image config, byte for byte (its sha256 is the image id)
    layers/<hex>/fs/           a layer unpacked, named by its diff id; an overlay lower dir
    layers/<hex>/size          its uncompressed size
    tmp/                       staging; anything here is garbage from an interrupted call

A new layer is unpacked into ``tmp`` and renamed into place, so a layer directory is either complete
or absent. Every input is checked before anything is written, and a call that fails half-way removes
what it made: bad input changes nothing. Imports and loads unpack without the store's lock (a slow
upload holds up no reader: a container's create, a list) and take it only to place their layers and
write their config and tags.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shlex
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import busybox, layers, references
from .errors import Conflict, InvalidArgument, NoSuchImage

BUSYBOX = "busybox:latest"
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
_CHANGE_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER",
                        "VOLUME", "WORKDIR")


@dataclass(frozen=True)
class Image:
    id: str  # "sha256:<hex>" of the config bytes
    repo_tags: list[str]
    created: str  # RFC 3339, from the config
    size: int  # uncompressed bytes of all layers
    config: dict  # the container defaults: Cmd, Entrypoint, Env, WorkingDir, User, ExposedPorts, Labels…
    diff_ids: list[str]
    architecture: str = ""
    os: str = "linux"
    raw: dict = field(default_factory=dict, repr=False)  # the whole config document

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


def _rfc3339(seconds: float) -> str:
    whole = int(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{nanos:09d}Z"


def _container_config(cmd: list[str] | None = None, env: list[str] | None = None) -> dict:
    return {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
            "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": env,
            "Cmd": cmd, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None, "OnBuild": None,
            "Labels": None}


def _argv(value: str) -> list[str]:
    """A Dockerfile argument list: JSON array (exec form) or a shell command (shell form)."""
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise InvalidArgument(f"invalid JSON array {value!r}: {exc}") from exc
        if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
            raise InvalidArgument(f"{value!r} is not a JSON array of strings")
        return parsed
    return ["/bin/sh", "-c", value]


def _pairs(value: str) -> list[tuple[str, str]]:
    words = shlex.split(value)
    if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV key value with spaces`
        return [(words[0], value.split(None, 1)[1])]
    pairs = []
    for word in words:
        key, sep, val = word.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{word!r} is not of the form key=value")
        pairs.append((key, val))
    return pairs


def apply_changes(config: dict, changes: Iterable[str]) -> dict:
    """``docker import --change``: Dockerfile instructions applied to a container config (a new dict)."""
    out = json.loads(json.dumps(config))
    for change in changes:
        instruction, _, value = change.strip().partition(" ")
        instruction, value = instruction.upper(), value.strip()
        if instruction not in _CHANGE_INSTRUCTIONS:
            raise InvalidArgument(f"{instruction} is not a valid change command")
        if not value:
            raise InvalidArgument(f"{instruction} requires an argument")
        if instruction in ("CMD", "ENTRYPOINT"):
            out["Cmd" if instruction == "CMD" else "Entrypoint"] = _argv(value)
        elif instruction == "ENV":
            env = [e for e in out.get("Env") or []]
            for key, val in _pairs(value):
                env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={val}"]
            out["Env"] = env
        elif instruction == "LABEL":
            out["Labels"] = {**(out.get("Labels") or {}), **dict(_pairs(value))}
        elif instruction == "EXPOSE":
            ports = dict(out.get("ExposedPorts") or {})
            for port in value.split():
                number, _, proto = port.partition("/")
                if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("", "tcp", "udp", "sctp"):
                    raise InvalidArgument(f"invalid port {port!r}")
                ports[f"{int(number)}/{proto or 'tcp'}"] = {}
            out["ExposedPorts"] = ports
        elif instruction == "VOLUME":
            out["Volumes"] = {**(out.get("Volumes") or {}), **{v: {} for v in _argv_or_words(value)}}
        elif instruction == "ONBUILD":
            out["OnBuild"] = [*(out.get("OnBuild") or []), value]
        else:
            out[{"USER": "User", "WORKDIR": "WorkingDir", "STOPSIGNAL": "StopSignal"}[instruction]] = value
    return out


def _argv_or_words(value: str) -> list[str]:
    return _argv(value) if value.startswith("[") else value.split()


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.RLock()
        for sub in ("configs", "layers", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for leftover in (self.root / "tmp").iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    # -- reading ------------------------------------------------------------------------------
    def _tags(self) -> dict[str, str]:
        try:
            return json.loads((self.root / "repositories.json").read_text())
        except FileNotFoundError:
            return {}

    def _save_tags(self, tags: Mapping[str, str]) -> None:
        tmp = self.root / "repositories.json.tmp"
        tmp.write_text(json.dumps(dict(sorted(tags.items())), indent=1))
        os.replace(tmp, self.root / "repositories.json")

    def _ids(self) -> list[str]:
        return ["sha256:" + p.stem for p in (self.root / "configs").glob("*.json")]

    def _image(self, image_id: str, tags: Mapping[str, str]) -> Image:
        raw = json.loads((self.root / "configs" / f"{image_id.removeprefix('sha256:')}.json").read_bytes())
        diff_ids = list(raw.get("rootfs", {}).get("diff_ids") or [])
        size = sum(self._layer_size(d) for d in diff_ids)
        return Image(id=image_id, repo_tags=sorted(t for t, i in tags.items() if i == image_id),
                     created=raw.get("created", ""), size=size, config=raw.get("config") or {},
                     diff_ids=diff_ids, architecture=raw.get("architecture", ""), os=raw.get("os", "linux"),
                     raw=raw)

    def _layer_dir(self, diff_id: str) -> Path:
        return self.root / "layers" / diff_id.removeprefix("sha256:")

    def _layer_size(self, diff_id: str) -> int:
        try:
            return int((self._layer_dir(diff_id) / "size").read_text())
        except FileNotFoundError:
            return 0

    def _resolve(self, ref: str) -> str:
        tags = self._tags()
        try:
            name = references.normalize(ref)
        except InvalidArgument:
            name = None
        if name is not None and name in tags:
            return tags[name]
        prefix = references.id_prefix(ref)
        if prefix is not None:
            matches = [i for i in self._ids() if i.removeprefix("sha256:").startswith(prefix)]
            if len(matches) == 1:
                return matches[0]
        raise NoSuchImage(ref)

    def get(self, ref: str) -> Image:
        """The image a tag or an id (prefix) names; raises NoSuchImage."""
        with self._lock:
            return self._image(self._resolve(ref), self._tags())

    def list(self) -> list[Image]:
        with self._lock:
            tags = self._tags()
            return sorted((self._image(i, tags) for i in self._ids()), key=lambda im: im.created, reverse=True)

    def lower_dirs(self, image: Image) -> list[str]:
        """The image's layer directories for overlayfs's ``lowerdir``: topmost first."""
        return [str(self._layer_dir(d) / "fs") for d in reversed(image.diff_ids)]

    # -- writing ------------------------------------------------------------------------------
    def _unpack_layer(self, source: BinaryIO) -> tuple[str, Path]:
        """A layer unpacked into a staging directory of its own, and its diff id; no lock needed (nothing
        visible changes). The caller places it (``_place``) and removes the staging directory."""
        staging = Path(tempfile.mkdtemp(prefix="layer-", dir=self.root / "tmp"))
        try:
            (staging / "fs").mkdir()
            diff_id, size = layers.unpack(source, str(staging / "fs"))
            (staging / "size").write_text(str(size))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return diff_id, staging

    def _place(self, diff_id: str, staging: Path, made: list[Path]) -> None:
        """Under the store's lock: a staged layer kept (named by diff id) unless the store has it already."""
        final = self._layer_dir(diff_id)
        if not final.exists():
            os.rename(staging, final)
            made.append(final)

    def _add(self, config_bytes: bytes, tags: Iterable[str]) -> str:
        image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        path = self.root / "configs" / f"{image_id.removeprefix('sha256:')}.json"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(config_bytes)
            os.replace(tmp, path)
        if tags:
            current = self._tags()
            current.update({t: image_id for t in tags})
            self._save_tags(current)
        return image_id

    def ensure_busybox(self) -> Image:
        """``busybox:latest`` from the host's busybox-static, built the first time it is needed."""
        with self._lock:
            if BUSYBOX in self._tags():
                return self.get(BUSYBOX)
            tar, mtime = busybox.layer_tar()
            made: list[Path] = []
            diff_id, staging = self._unpack_layer(io.BytesIO(tar))
            try:
                self._place(diff_id, staging, made)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            created = _rfc3339(mtime)
            doc = {"architecture": _ARCHES.get(platform.machine(), platform.machine()), "os": "linux",
                   "created": created, "config": _container_config(busybox.CMD, busybox.ENV),
                   "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                   "history": [{"created": created, "created_by": "muslin: busybox-static from the host"}]}
            self._add(_canonical(doc), [BUSYBOX])
            return self.get(BUSYBOX)

    def import_tar(self, source: BinaryIO, repo_tag: str | None = None, changes: Iterable[str] = (),
                   message: str = "") -> Image:
        """``docker import``: a root filesystem tarball (optionally compressed) as a one-layer image."""
        changes = list(changes)
        tag = references.normalize(repo_tag) if repo_tag else None
        config = apply_changes(_container_config(), changes)
        diff_id, staging = self._unpack_layer(source)
        try:
            with self._lock:
                made: list[Path] = []
                try:
                    self._place(diff_id, staging, made)
                    created = _rfc3339(time.time())
                    history = {"created": created, "comment": message or "Imported from -"}
                    doc = {"architecture": _ARCHES.get(platform.machine(), platform.machine()), "os": "linux",
                           "created": created, "config": config, "comment": message or "Imported from -",
                           "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "history": [history]}
                    image_id = self._add(_canonical(doc), [tag] if tag else [])
                except BaseException:
                    for path in made:
                        shutil.rmtree(path, ignore_errors=True)
                    raise
                return self._image(image_id, self._tags())
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def load(self, source: BinaryIO) -> list[str]:
        """``docker load``: a ``docker save`` tarball. Returns the tags loaded (the id if untagged)."""
        with tempfile.TemporaryFile(dir=self.root / "tmp") as spool:
            shutil.copyfileobj(source, spool, 1 << 20)
            spool.seek(0)
            try:
                archive = tarfile.open(fileobj=spool, mode="r:")
            except tarfile.TarError as exc:
                raise InvalidArgument(f"invalid image archive: {exc}") from exc
            with archive:
                return self._load_archive(archive)

    def _load_archive(self, archive: tarfile.TarFile) -> list[str]:
        def read(name: str) -> bytes:
            try:
                member = archive.extractfile(name)
            except KeyError:
                member = None
            if member is None:
                raise InvalidArgument(f"invalid image archive: {name} is missing")
            return member.read()

        try:
            manifest = json.loads(read("manifest.json"))
        except ValueError as exc:
            raise InvalidArgument(f"invalid image archive: manifest.json: {exc}") from exc
        plans: list[tuple[bytes, list[str], list[str], list[str]]] = []
        for entry in manifest if isinstance(manifest, list) else []:
            config_bytes = read(entry["Config"])
            try:
                doc = json.loads(config_bytes)
            except ValueError as exc:
                raise InvalidArgument(f"invalid image config {entry['Config']}: {exc}") from exc
            diff_ids = (doc.get("rootfs") or {}).get("diff_ids") or []
            if len(diff_ids) != len(entry.get("Layers") or []):
                raise InvalidArgument(f"invalid image archive: {entry['Config']} lists {len(diff_ids)} layers, "
                                      f"the manifest {len(entry.get('Layers') or [])}")
            tags = [references.normalize(t) for t in entry.get("RepoTags") or []]
            plans.append((config_bytes, diff_ids, entry["Layers"], tags))
        if not plans:
            raise InvalidArgument("invalid image archive: manifest.json lists no image")
        staged: dict[str, Path] = {}  # diff id → its staging directory
        loaded: list[str] = []
        try:
            # One image after the other, as dockerd: an image that fails leaves those before it loaded.
            for config_bytes, diff_ids, layer_names, tags in plans:
                # Unpacked without the store's lock: the slow part holds up no reader.
                for expected, name in zip(diff_ids, layer_names):
                    if expected in staged or self._layer_dir(expected).exists():
                        continue
                    member = archive.extractfile(name)
                    if member is None:
                        raise InvalidArgument(f"invalid image archive: layer {name} is missing")
                    got, staging = self._unpack_layer(member)
                    staged[expected] = staging
                    if got != expected:
                        raise InvalidArgument(f"layer {name} has diff id {got}, the config says {expected}")
                with self._lock:
                    image_id = self._publish_loaded(config_bytes, diff_ids, tags, staged)
                loaded.extend(tags or [image_id])
        finally:
            for staging in staged.values():
                shutil.rmtree(staging, ignore_errors=True)
        return loaded

    def _publish_loaded(self, config_bytes: bytes, diff_ids: list[str], tags: list[str],
                        staged: Mapping[str, Path]) -> str:
        """Under the store's lock: a loaded image's staged layers placed, its config and tags written."""
        for diff_id in diff_ids:
            if diff_id not in staged and not self._layer_dir(diff_id).exists():
                raise Conflict(f"layer {diff_id} was removed (with its image) while this archive was loaded: "
                               "load it again")
        made: list[Path] = []
        try:
            for diff_id in diff_ids:
                if diff_id in staged:
                    self._place(diff_id, staged[diff_id], made)
            return self._add(config_bytes, tags)
        except BaseException:
            for path in made:
                shutil.rmtree(path, ignore_errors=True)
            raise

    def tag(self, ref: str, repo_tag: str) -> None:
        name = references.normalize(repo_tag)
        with self._lock:
            image_id = self._resolve(ref)
            tags = self._tags()
            tags[name] = image_id
            self._save_tags(tags)

    def remove(self, ref: str, force: bool = False, in_use: Mapping[str, str] | None = None) -> list[dict]:
        """``docker rmi``. ``in_use`` maps image ids to a container using them (the engine knows).

        Returns Docker's answer: ``[{"Untagged": tag}, …, {"Deleted": id}]``.
        """
        in_use = in_use or {}
        with self._lock:
            image_id = self._resolve(ref)
            tags = self._tags()
            own_tags = sorted(t for t, i in tags.items() if i == image_id)
            try:
                by_tag = references.normalize(ref) in tags
            except InvalidArgument:
                by_tag = False
            short = image_id.removeprefix("sha256:")[:12]
            user = in_use.get(image_id)
            if user and not force and (not by_tag or len(own_tags) == 1):
                what = f'repository reference "{ref}"' if by_tag else short
                raise Conflict(f"conflict: unable to {'remove' if by_tag else 'delete'} {what} (must force) - "
                               f"container {user[:12]} is using its referenced image {short}")
            if not by_tag and len(own_tags) > 1 and not force:
                raise Conflict(f"conflict: unable to delete {short} (must be forced) - "
                               f"image is referenced in multiple repositories")
            untag = [references.normalize(ref)] if by_tag else own_tags
            answer: list[dict] = [{"Untagged": t} for t in untag]
            for t in untag:
                tags.pop(t, None)
            self._save_tags(tags)
            if user or image_id in tags.values():
                return answer
            (self.root / "configs" / f"{image_id.removeprefix('sha256:')}.json").unlink()
            answer.append({"Deleted": image_id})
            kept = {d for i in self._ids() for d in self._image(i, tags).diff_ids}
            for diff_id in self._unreferenced_layers(kept):
                shutil.rmtree(self._layer_dir(diff_id), ignore_errors=True)
            return answer

    def _unreferenced_layers(self, kept: set[str]) -> list[str]:
        present = {"sha256:" + p.name for p in (self.root / "layers").iterdir() if p.is_dir()}
        return sorted(present - kept)


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
