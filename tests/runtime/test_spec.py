"""Pure logic of the runtime: references, merging image defaults, the OCI config, the log format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from muslin.errors import InvalidArgument
from muslin.runtime import ContainerSpec, Image
from muslin.runtime import logs, references
from muslin.runtime.shim import protocol
from muslin.runtime.shim.log import LOG_LINE_MAX, Log
from muslin.runtime.spec import (DEFAULT_PATH, User, oci_config, oci_process, process_env, resolve_process,
                                        resolve_user)


def image(**config) -> Image:
    return Image(id="sha256:" + "a" * 64, repo_tags=[], created="", size=0, config=config, diff_ids=[])


@pytest.mark.parametrize("ref, expected", [
    ("busybox", "busybox:latest"),
    ("busybox:1.35", "busybox:1.35"),
    ("docker.io/library/busybox", "busybox:latest"),
    ("docker.io/me/app:v2", "me/app:v2"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("registry.example.com/team/app:x.y-z", "registry.example.com/team/app:x.y-z"),
])
def test_references_normalize_as_docker_does(ref: str, expected: str) -> None:
    assert references.normalize(ref) == expected


@pytest.mark.parametrize("ref", ["", "Busybox", "busybox:", "a b", "busybox@sha256:abc", "x:" + "t" * 200])
def test_malformed_references_are_refused(ref: str) -> None:
    with pytest.raises(InvalidArgument):
        references.normalize(ref)


def test_image_defaults_merge_under_the_containers_choices() -> None:
    img = image(Entrypoint=["/entry"], Cmd=["default"], Env=["PATH=/bin", "A=1"], WorkingDir="/work", User="app")
    merged = resolve_process(ContainerSpec(id="c", image="x"), img)
    assert (merged.args, merged.env, merged.cwd, merged.user) == (["/entry", "default"], ["PATH=/bin", "A=1"],
                                                                  "/work", "app")
    chosen = resolve_process(ContainerSpec(id="c", image="x", args=["own"], env=["A=2", "B=3"], workdir="/w",
                                           user="0"), img)
    assert (chosen.args, chosen.env, chosen.cwd, chosen.user) == (["own"], ["PATH=/bin", "A=2", "B=3"], "/w", "0")
    with pytest.raises(InvalidArgument):
        resolve_process(ContainerSpec(id="c", image="x"), image())  # nothing to run


def test_process_env_adds_what_docker_adds() -> None:
    assert process_env(["A=1"], "host1", tty=True) == [DEFAULT_PATH, "HOSTNAME=host1", "TERM=xterm", "A=1"]
    assert process_env(["PATH=/x", "HOSTNAME=mine"], "host1", tty=False) == ["PATH=/x", "HOSTNAME=mine"]


def test_users_resolve_from_the_images_files(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\n")
    lowers = [str(tmp_path)]
    assert resolve_user("", lowers) == User(0, 0)
    assert resolve_user("app", lowers) == User(1000, 1000, (2000,))
    assert resolve_user("app:extra", lowers) == User(1000, 2000, ())
    assert resolve_user("4242:7", lowers) == User(4242, 7)
    with pytest.raises(InvalidArgument):
        resolve_user("ghost", lowers)
    with pytest.raises(InvalidArgument):
        resolve_user("app:ghosts", lowers)


def test_oci_config_joins_the_engines_namespace_or_none(tmp_path: Path) -> None:
    process = oci_process(["sh"], [], "/", User(0, 0), tty=True, console_size=(24, 80))
    assert process["consoleSize"] == {"height": 24, "width": 80}
    assert "consoleSize" not in oci_process(["sh"], [], "/", User(0, 0), tty=False, console_size=(24, 80))
    spec = ContainerSpec(id="abc", image="x", netns_path="/run/netns/n1", hostname="h1")
    config = oci_config(spec, process, ["/l2", "/l1"], tmp_path)
    assert {"type": "network", "path": "/run/netns/n1"} in config["linux"]["namespaces"]
    assert {n["type"] for n in config["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount", "network"}
    assert config["hostname"] == "h1"
    root_mount = config["mounts"][0]
    assert root_mount["destination"] == "/" and root_mount["type"] == "overlay"
    assert root_mount["options"] == [f"lowerdir=/l2:/l1,upperdir={tmp_path}/upper,workdir={tmp_path}/work"]
    assert [m["source"] for m in config["mounts"] if m["type"] == "bind"] == [
        str(tmp_path / "hosts"), str(tmp_path / "hostname"), str(tmp_path / "resolv.conf")]
    host = oci_config(ContainerSpec(id="abc", image="x", netns_path=None), process, ["/l1"], tmp_path)
    assert "network" not in {n["type"] for n in host["linux"]["namespaces"]}
    with pytest.raises(InvalidArgument):
        oci_config(ContainerSpec(id="../x", image="x"), process, ["/l1"], tmp_path)


def test_the_shims_log_is_docker_json_file_by_line(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    log = Log(str(path))
    log.add("stdout", b"one\ntw")
    log.add("stderr", b"err\n")
    log.add("stdout", b"o\n\xff\xfe raw\n")
    log.add("stdout", b"x" * (LOG_LINE_MAX + 10))
    log.add("stdout", b"unterminated")
    log.flush()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["stream"], r["log"]) for r in records[:3]] == [("stdout", "one\n"), ("stderr", "err\n"),
                                                              ("stdout", "two\n")]
    assert all(r["time"].endswith("Z") for r in records)
    entries = logs.read(str(path), logs.LogFilter())
    assert entries[3].data == b"\xff\xfe raw\n"  # bytes that are not UTF-8 survive the round trip
    assert len(entries[4].data) == LOG_LINE_MAX and entries[5].data == b"x" * 10 + b"unterminated"
    assert [e.data for e in logs.read(str(path), logs.LogFilter(tail=1, stdout=False))] == [b"err\n"]
    assert logs.read(str(path), logs.LogFilter(tail=0)) == []


def test_the_shims_log_cuts_reads_at_line_ends_and_long_lines_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    log = Log(str(path))
    lines = [f"{i}\n".encode() for i in range(10000)]
    limit = LOG_LINE_MAX
    output = b"".join(lines) + b"y" * (limit - 1) + b"\n" + b"z" * limit + b"\n"
    for at in range(0, len(output), 65536):  # as the shim reads a pipe
        log.add("stdout", output[at : at + 65536])
    log.flush()
    assert [e.data for e in logs.read(str(path), logs.LogFilter())] == lines + [
        b"y" * (limit - 1) + b"\n", b"z" * limit, b"\n"]


@pytest.mark.parametrize("case, left", [("empty", None), ("written", b"trouble\n"), ("replaced", b"")])
def test_a_shim_removes_only_its_own_empty_err_file(tmp_path: Path, case: str, left: bytes | None) -> None:
    # "replaced": a newer shim of the same state directory has made its own shim.err meanwhile.
    script = f"""
import os, sys
sys.path.append({str(Path(protocol.__file__).parent.parent)!r})  # as the shim process imports its package
from shim.protocol import ERR_NAME
from shim.state import remove_empty_err
os.dup2(os.open(ERR_NAME, os.O_WRONLY | os.O_CREAT, 0o600), 2)
if {case!r} == "written":
    os.write(2, b"trouble\\n")
if {case!r} == "replaced":
    os.unlink(ERR_NAME)
    open(ERR_NAME, "w").close()
remove_empty_err()
"""
    subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, check=True, timeout=30)
    err = tmp_path / protocol.ERR_NAME
    assert (err.read_bytes() if err.exists() else None) == left
