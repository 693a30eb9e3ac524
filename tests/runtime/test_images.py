"""The image store: busybox built locally, import, load, tags, removal, and refusing bad archives."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import tarfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from muslin.errors import Conflict, InvalidArgument
from muslin.runtime import ContainerSpec, ImageStore, NoSuchImage, Runtime
from muslin.runtime.images import apply_changes

from .conftest import collect

pytestmark = pytest.mark.root


def tar_of(entries: list[tuple[str, bytes | str | None]]) -> bytes:
    """A tar: (name, bytes) is a file, (name, None) a directory, (name, "->target") a symlink."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content.removeprefix("->")
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def save_archive(images: list[tuple[list[str], list[bytes], dict]], claimed: list[bytes] | None = None) -> bytes:
    """A `docker save` tarball: for each image (tags, layer tars, container config). ``claimed``: the
    layers the configs say they have, when a test wants them to lie."""
    out = io.BytesIO()
    manifest = []
    with tarfile.open(fileobj=out, mode="w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for tags, layer_tars, config in images:
            names = []
            for layer in layer_tars:
                digest = hashlib.sha256(layer).hexdigest()
                names.append(f"blobs/sha256/{digest}")
                add(names[-1], layer)
            doc = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                              "config": config, "rootfs": {"type": "layers", "diff_ids": [
                                  "sha256:" + hashlib.sha256(t).hexdigest() for t in claimed or layer_tars]}}).encode()
            config_name = f"blobs/sha256/{hashlib.sha256(doc).hexdigest()}"
            add(config_name, doc)
            manifest.append({"Config": config_name, "RepoTags": tags, "Layers": names})
        add("manifest.json", json.dumps(manifest).encode())
    return out.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def layer_dirs(store: ImageStore) -> list[str]:
    return sorted(os.listdir(store.root / "layers"))


def test_busybox_is_built_locally_with_a_docker_style_id(store: ImageStore) -> None:
    image = store.ensure_busybox()
    assert image.repo_tags == ["busybox:latest"]
    config_bytes = (store.root / "configs" / f"{image.id.removeprefix('sha256:')}.json").read_bytes()
    assert image.id == "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    assert image.config["Cmd"] == ["sh"] and image.config["Env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    assert store.ensure_busybox().id == image.id  # built once, and the same bytes every time
    for ref in ("busybox", "docker.io/library/busybox:latest", image.id, image.short_id):
        assert store.get(ref).id == image.id
    (fs,) = store.lower_dirs(image)
    assert os.readlink(os.path.join(fs, "bin/sh")) == "/bin/busybox"
    assert os.path.islink(os.path.join(fs, "usr/bin/wget"))
    assert image.size > 1_000_000
    with pytest.raises(NoSuchImage, match="No such image: nginx:latest"):
        store.get("nginx:latest")


def test_import_applies_changes_and_hashes_the_uncompressed_layer(store: ImageStore) -> None:
    layer = tar_of([("etc", None), ("etc/motd", b"hello\n"), ("bin", None)])
    image = store.import_tar(io.BytesIO(gzip.compress(layer)), "mine:v1",
                             ["CMD [\"cat\", \"/etc/motd\"]", "ENV A=1 B=two", "WORKDIR /etc", "EXPOSE 80"])
    assert image.repo_tags == ["mine:v1"]
    assert image.diff_ids == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert image.size == len(layer)
    assert image.config["Cmd"] == ["cat", "/etc/motd"] and image.config["Env"] == ["A=1", "B=two"]
    assert image.config["WorkingDir"] == "/etc" and image.config["ExposedPorts"] == {"80/tcp": {}}
    assert (Path(store.lower_dirs(image)[0]) / "etc/motd").read_bytes() == b"hello\n"
    assert [i.id for i in store.list()] == [image.id]
    untagged = store.import_tar(io.BytesIO(layer))
    assert untagged.repo_tags == [] and untagged.diff_ids == image.diff_ids and len(layer_dirs(store)) == 1


def test_hard_links_and_modes_survive_unpacking(store: ImageStore) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, mode in (("tmp", 0o1777), ("bin", 0o755)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tool = tarfile.TarInfo("bin/tool")
        tool.size, tool.mode, tool.uid, tool.gid = 3, 0o4755, 1000, 1000
        tar.addfile(tool, io.BytesIO(b"bin"))
        alias = tarfile.TarInfo("bin/alias")
        alias.type, alias.linkname = tarfile.LNKTYPE, "bin/tool"
        alias.mode, alias.uid, alias.gid = tool.mode, tool.uid, tool.gid  # as tar(1) writes a hard link
        tar.addfile(alias)
    fs = Path(store.lower_dirs(store.import_tar(io.BytesIO(out.getvalue())))[0])
    assert os.stat(fs / "bin/alias").st_ino == os.stat(fs / "bin/tool").st_ino
    assert oct(os.stat(fs / "tmp").st_mode & 0o7777) == oct(0o1777)
    tool_stat = os.stat(fs / "bin/tool")
    assert (oct(tool_stat.st_mode & 0o7777), tool_stat.st_uid) == (oct(0o4755), 1000)  # numeric owners, setuid


def test_change_commands_follow_dockerfile_forms() -> None:
    config = apply_changes({"Env": ["A=1"]}, ["CMD echo hi", "ENTRYPOINT [\"/bin/sh\"]", "ENV A 2 3",
                                              "LABEL x=y", "USER nobody"])
    assert config["Cmd"] == ["/bin/sh", "-c", "echo hi"] and config["Entrypoint"] == ["/bin/sh"]
    assert config["Env"] == ["A=2 3"] and config["Labels"] == {"x": "y"} and config["User"] == "nobody"
    for bad in ("RUN echo", "CMD", "CMD [1, 2]", "EXPOSE 99999", "ENV =x"):
        with pytest.raises(InvalidArgument):
            apply_changes({}, [bad])


@pytest.mark.parametrize("entries", [
    [("../escape", b"x")],
    [("link", "->/"), ("link/escape", b"x")],
    [("dir", None), ("dir/../../escape", b"x")],
])
def test_a_tar_reaching_outside_its_layer_is_refused_and_leaves_nothing(store: ImageStore, tmp_path: Path,
                                                                        entries) -> None:
    with pytest.raises(InvalidArgument):
        store.import_tar(io.BytesIO(tar_of(entries)), "evil:latest")
    assert not (tmp_path / "escape").exists() and not Path("/escape").exists()
    assert store.list() == [] and layer_dirs(store) == [] and os.listdir(store.root / "tmp") == []


def test_bad_import_input_changes_nothing(store: ImageStore) -> None:
    layer = tar_of([("file", b"x")])
    with pytest.raises(InvalidArgument):
        store.import_tar(io.BytesIO(layer), "Bad:Tag!")
    with pytest.raises(InvalidArgument):
        store.import_tar(io.BytesIO(layer), "ok:tag", ["FROM scratch"])
    with pytest.raises(InvalidArgument):
        store.import_tar(io.BytesIO(b"this is not a tar at all" * 40), "ok:tag")
    assert store.list() == [] and layer_dirs(store) == []


def test_load_reads_docker_save_archives_and_checks_layer_digests(store: ImageStore) -> None:
    base = tar_of([("bin", None), ("bin/tool", b"v1"), ("data", None), ("data/a", b"a"), ("data/b", b"b")])
    top = tar_of([("bin", None), ("bin/tool", b"v2"), ("data", None), ("data/.wh.a", b""),
                  ("fresh", None), ("fresh/.wh..wh..opq", b"")])
    archive = save_archive([(["app:1", "app:latest"], [base, top], {"Cmd": ["/bin/tool"]})])
    assert store.load(io.BytesIO(archive)) == ["app:1", "app:latest"]
    image = store.get("app:1")
    assert image.repo_tags == ["app:1", "app:latest"] and image.config["Cmd"] == ["/bin/tool"]
    upper, lower = (Path(d) for d in store.lower_dirs(image))
    assert (upper / "bin/tool").read_bytes() == b"v2" and (lower / "bin/tool").read_bytes() == b"v1"
    whiteout = os.lstat(upper / "data/a")
    assert os.major(whiteout.st_rdev) == 0 and os.minor(whiteout.st_rdev) == 0 and not os.path.isfile(upper / "data/a")
    assert os.getxattr(upper / "fresh", "trusted.overlay.opaque") == b"y"
    assert store.load(io.BytesIO(archive)) == ["app:1", "app:latest"]  # loading again changes nothing
    assert len(layer_dirs(store)) == 2

    forged = save_archive([(["forged:1"], [tar_of([("evil", b"1")])], {})], claimed=[tar_of([("good", b"1")])])
    with pytest.raises(InvalidArgument):
        store.load(io.BytesIO(forged))
    with pytest.raises(InvalidArgument):
        store.load(io.BytesIO(tar_of([("not-a-manifest", b"{}")])))
    assert [i.repo_tags for i in store.list()] == [["app:1", "app:latest"]] and len(layer_dirs(store)) == 2


def test_a_partly_failed_load_keeps_the_images_it_committed(store: ImageStore) -> None:
    good = tar_of([("good", b"1")])
    archive = save_archive([(["first:1"], [good], {})])
    forged_entry = save_archive([(["forged:1"], [tar_of([("evil", b"1")])], {})], claimed=[tar_of([("x", b"1")])])
    with tarfile.open(fileobj=io.BytesIO(archive)) as a, tarfile.open(fileobj=io.BytesIO(forged_entry)) as b:
        members = {m.name: a.extractfile(m).read() for m in a if m.isfile()}
        forged = {m.name: b.extractfile(m).read() for m in b if m.isfile()}
    manifest = json.loads(members.pop("manifest.json")) + json.loads(forged.pop("manifest.json"))
    both = tar_of([(name, data) for name, data in {**members, **forged}.items()]
                  + [("manifest.json", json.dumps(manifest).encode())])
    with pytest.raises(InvalidArgument, match="has diff id"):
        store.load(io.BytesIO(both))
    # The first image was committed before the second failed: it stays whole, its layer with it.
    image = store.get("first:1")
    (fs,) = store.lower_dirs(image)
    assert (Path(fs) / "good").read_bytes() == b"1"
    assert len(layer_dirs(store)) == 1
    with pytest.raises(NoSuchImage):
        store.get("forged:1")


def test_loaded_layers_stack_in_a_container(tmp_path: Path, store: ImageStore, make_netns) -> None:
    from muslin.kernel import netns

    store.ensure_busybox()
    top = tar_of([("bin", None), ("bin/.wh.vi", b""), ("etc", None), ("etc/greeting", b"layered\n")])
    busybox = store.get("busybox")
    base_tar = io.BytesIO()
    with tarfile.open(fileobj=base_tar, mode="w") as tar:
        tar.add(store.lower_dirs(busybox)[0], arcname=".")
    archive = save_archive([(["stacked:1"], [base_tar.getvalue(), top], {"Cmd": ["sh"]})])
    store.load(io.BytesIO(archive))
    rt = Runtime(tmp_path / "root", tmp_path / "state", store)
    cid = uuid.uuid4().hex
    try:
        rt.create(ContainerSpec(id=cid, image="stacked:1", netns_path=netns.path_for(make_netns("mrt-")),
                                args=["sh", "-c", "cat /etc/greeting; ls /bin/vi || echo no vi; echo x > /new"]))

        async def run() -> bytes:
            stream = await rt.attach(cid)
            await asyncio.to_thread(rt.start, cid)
            out, _ = await collect(stream)
            return out

        out = asyncio.run(run())
        assert out.splitlines()[0] == b"layered" and out.splitlines()[-1] == b"no vi"
        assert (tmp_path / "root/containers" / cid / "upper/new").read_bytes() == b"x\n"  # writes go up
    finally:
        rt.delete(cid, force=True)
        rt.close()


def test_remove_untags_then_deletes_and_respects_users(store: ImageStore) -> None:
    layer = tar_of([("f", b"1")])
    image = store.import_tar(io.BytesIO(layer), "one:latest")
    store.tag("one", "two:latest")
    with pytest.raises(Conflict):
        store.remove(image.id)  # referenced by two tags: must be forced
    assert store.remove("one") == [{"Untagged": "one:latest"}]
    with pytest.raises(Conflict):
        store.remove("two", in_use={image.id: "c" * 64})
    assert store.remove("two", force=True, in_use={image.id: "c" * 64}) == [{"Untagged": "two:latest"}]
    assert store.get(image.id).repo_tags == [] and len(layer_dirs(store)) == 1  # a container still needs it
    assert store.remove(image.id) == [{"Deleted": image.id}]
    assert store.list() == [] and layer_dirs(store) == []
    with pytest.raises(NoSuchImage):
        store.remove("one")


class SlowUpload(io.RawIOBase):
    """An upload that stops half-way until ``go`` is set: an import or load still unpacking."""

    def __init__(self, data: bytes, go: threading.Event) -> None:
        self._data, self._go, self._pos = data, go, 0
        self.stalled = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._pos >= len(self._data) // 2 and not self._go.is_set():
            self.stalled.set()
            assert self._go.wait(10)
        chunk = self._data[self._pos:self._pos + min(len(buffer), 512)]
        buffer[:len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


@pytest.mark.parametrize("kind", ["import", "load"])
def test_an_upload_being_unpacked_holds_up_no_reader_or_other_import(store: ImageStore, kind: str) -> None:
    layer = tar_of([("data", os.urandom(64 * 1024))])
    go = threading.Event()
    if kind == "import":
        upload = SlowUpload(layer, go)
        slow = lambda: store.import_tar(io.BufferedReader(upload), "slow:1")  # noqa: E731
    else:
        upload = SlowUpload(save_archive([(["slow:1"], [layer], {})]), go)
        slow = lambda: store.load(io.BufferedReader(upload))  # noqa: E731
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(slow)
        try:
            assert upload.stalled.wait(10)
            # While it is stalled: reads answer and another import publishes (each would wait otherwise).
            other = store.import_tar(io.BytesIO(tar_of([("other", b"1")])), "other:1")
            assert store.get("other:1").id == other.id
            with pytest.raises(NoSuchImage):
                store.get("slow:1")
        finally:
            go.set()
        done.result(10)
    assert {t for i in store.list() for t in i.repo_tags} == {"other:1", "slow:1"}
    assert not list((store.root / "tmp").iterdir())  # no staging left behind
