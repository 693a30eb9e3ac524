"""Binds, Mounts, Tmpfs and Config.Volumes as dockerd's mount parser reads them (its 400 messages)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from muslin.api import mount_requests, requests
from muslin.api.http import HTTPError, Request
from muslin.engine.mounts import MountPoint, MountRequest, borrowed
from muslin.engine.volumes import check_options
from muslin.errors import InvalidArgument


def create(host: dict[str, Any], **config: Any) -> Request:
    body = {"Image": "busybox", "HostConfig": host, **config}
    return Request(method="POST", path="/containers/create", query={}, headers={}, body=json.dumps(body).encode(),
                   api_version=None)


def refused(host: dict[str, Any], **config: Any) -> str:
    with pytest.raises(HTTPError) as info:
        requests.container_create(create(host, **config))
    assert info.value.status == 400
    return info.value.message


@pytest.mark.parametrize("spec, expected", [
    ("/host/dir:/mnt", MountRequest(type="bind", target="/mnt", source="/host/dir", from_binds=True)),
    ("/host/dir/:/mnt/:ro", MountRequest(type="bind", target="/mnt", source="/host/dir", read_only=True, mode="ro",
                                         from_binds=True)),
    ("/h:/m:ro,rshared", MountRequest(type="bind", target="/m", source="/h", read_only=True, propagation="rshared",
                                      mode="ro,rshared", from_binds=True)),
    ("/h:/m:z", MountRequest(type="bind", target="/m", source="/h", mode="z", from_binds=True)),
    ("data:/var/lib/data", MountRequest(type="volume", target="/var/lib/data", source="data", from_binds=True)),
    ("data:/d:ro,nocopy", MountRequest(type="volume", target="/d", source="data", read_only=True,
                                       mode="ro,nocopy", from_binds=True, no_copy=True)),
    ("/anon", MountRequest(type="volume", target="/anon", from_binds=True)),
    ("/anon:ro", MountRequest(type="volume", target="/anon", read_only=True, mode="ro", from_binds=True)),
])
def test_binds_are_read_as_dockerd_reads_them(spec: str, expected: MountRequest) -> None:
    assert mount_requests.bind(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("a:b", "invalid volume specification: 'a:b': invalid mount config for type \"volume\": invalid mount path: "
            "'b' mount path must be absolute"),
    ("/a:b", "invalid volume specification: '/a:b': invalid mount config for type \"bind\": invalid mount path: "
             "'b' mount path must be absolute"),
    ("/a:/b:xyz", "invalid mode: xyz"),
    (":/b", "invalid volume specification: ':/b'"),
    ("/a:/b:ro,rw", "invalid mode: ro,rw"),
    ("/a:/b:rshared,rslave", "invalid mode: rshared,rslave"),
    ("/a:/", "invalid volume specification: '/a:/': invalid mount config for type \"bind\": invalid "
             "specification: destination can't be '/'"),
    ("/a:/b:/c:/d", "invalid volume specification: '/a:/b:/c:/d'"),
    ("/a:/b:ro,nocopy", "invalid volume specification: '/a:/b:ro,nocopy': invalid mount config for type "
                        "\"bind\": field VolumeOptions must not be specified"),
    ("x:/b", "create x: volume name is too short, names should be at least two alphanumeric characters"),
])
def test_bad_binds_get_dockerds_messages(spec: str, message: str) -> None:
    assert refused({"Binds": [spec]}) == message


@pytest.mark.parametrize("mount, message", [
    ({"Type": "bind", "Target": "/b"}, 'invalid mount config for type "bind": field Source must not be empty'),
    ({"Type": "bind", "Source": "rel", "Target": "/b"},
     "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be absolute"),
    ({"Type": "bind", "Source": "/tmp", "Target": "b"},
     "invalid mount config for type \"bind\": invalid mount path: 'b' mount path must be absolute"),
    ({"Type": "foo", "Source": "/tmp", "Target": "/b"}, 'invalid mount config for type "foo": mount type unknown'),
    ({"Type": "volume", "Source": "/tmp", "Target": "/b"},
     'create /tmp: "/tmp" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" '
     "are allowed. If you intended to pass a host directory, use absolute path"),
    ({"Type": "bind", "Source": "/tmp", "Target": "/b", "VolumeOptions": {}},
     'invalid mount config for type "bind": field VolumeOptions must not be specified'),
    ({"Type": "tmpfs", "Source": "/tmp", "Target": "/b"},
     'invalid mount config for type "tmpfs": field Source must not be specified'),
    ({"Type": "bind", "Source": "/tmp", "Target": "/b", "BindOptions": {"Propagation": "bogus"}},
     'invalid mount config for type "bind": invalid propagation mode: bogus'),
    ({"Type": "bind", "Source": "/tmp", "Target": "/"},
     "invalid mount config for type \"bind\": invalid specification: destination can't be '/'"),
    ({"Type": "bind", "Source": "/tmp", "Target": "/b", "ReadOnly": "yes"},
     "json: cannot unmarshal string into Go struct field mount.Mount.ReadOnly of type bool"),
])
def test_bad_mounts_get_dockerds_messages(mount: dict[str, Any], message: str) -> None:
    assert refused({"Mounts": [mount]}) == message


def test_mounts_of_each_type() -> None:
    req = requests.container_create(create({"Mounts": [
        {"Type": "bind", "Source": "/srv/", "Target": "/srv", "ReadOnly": True, "BindOptions": {"Propagation": "rslave"}},
        {"Type": "volume", "Source": "data", "Target": "/data",
         "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}, "DriverConfig": {"Name": "local"}}},
        {"Type": "volume", "Target": "/anon"},
        {"Type": "tmpfs", "Target": "/run", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 0o700}},
    ], "Tmpfs": {"/cache": "size=2m,ro"}}))
    assert req.mounts == (
        MountRequest(type="bind", target="/srv", source="/srv", read_only=True, propagation="rslave"),
        MountRequest(type="volume", target="/data", source="data", no_copy=True, volume_labels={"a": "b"}),
        MountRequest(type="volume", target="/anon"),
        MountRequest(type="tmpfs", target="/run", tmpfs_options=("size=1048576", "mode=700")),
        MountRequest(type="tmpfs", target="/cache", read_only=True, tmpfs_options=("size=2m",), from_tmpfs_map=True),
    )


def test_one_mount_per_destination_across_binds_and_mounts() -> None:
    assert refused({"Binds": ["/a:/b"], "Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "/b/"}]}) == \
        "Duplicate mount point: /b"
    assert refused({"Binds": ["/a:/b", "/c:/b"]}) == "Duplicate mount point: /b"


def test_tmpfs_options_are_checked() -> None:
    assert refused({"Tmpfs": {"/t": "size=1m,bogus"}}) == 'invalid tmpfs option ["bogus"]'
    assert refused({"Tmpfs": {"t": ""}}).endswith("invalid mount path: 't' mount path must be absolute")


def test_config_volumes_are_anonymous_volume_targets() -> None:
    req = requests.container_create(create({}, Volumes={"/vol1/": {}, "/vol2": {}}))
    assert req.volumes == ("/vol1", "/vol2")
    assert "mount path must be absolute" in refused({}, Volumes={"rel": {}})


def test_log_config_runtime_and_group_add() -> None:
    req = requests.container_create(create({"LogConfig": {"Type": "", "Config": {"max-file": "3"}},
                                            "GroupAdd": ["1000", "audio"]}))
    assert req.host_config["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3"}}
    assert req.host_config["Runtime"] == "runc"
    assert req.group_add == ("1000", "audio")
    none = requests.container_create(create({"LogConfig": {"Type": "none", "Config": {"anything": "1"}}}))
    assert none.host_config["LogConfig"]["Type"] == "none"
    assert refused({"LogConfig": {"Type": "asdf"}}) == 'error looking up logging plugin asdf: plugin "asdf" not found'
    assert refused({"LogConfig": {"Type": "local", "Config": {"max-size": "1m", "max-file": "3"}}}) == \
        "log opt 'max-size' is not supported by muslind's local log driver: logs are kept whole, never rotated"
    assert refused({"LogConfig": {"Type": "json-file", "Config": {"bogus": "1"}}}) == \
        "unknown log opt 'bogus' for json-file log driver"
    assert refused({"LogConfig": {"Type": "local", "Config": {"tag": "x"}}}) == "unknown log opt 'tag' for local log driver"
    assert refused({"Runtime": "foo"}) == "Unknown runtime specified foo"


@pytest.mark.parametrize("name, message", [
    ("a", "create a: volume name is too short, names should be at least two alphanumeric characters"),
    ("bad/name", 'create bad/name: "bad/name" includes invalid characters for a local volume name, only '
                 '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path'),
])
def test_volume_names(name: str, message: str) -> None:
    body = json.dumps({"Name": name}).encode()
    with pytest.raises(HTTPError) as info:
        requests.volume_create(Request(method="POST", path="/volumes/create", query={}, headers={}, body=body,
                                       api_version=None))
    assert (info.value.status, info.value.message) == (400, message)


def test_local_volume_options_take_the_bind_form_only() -> None:
    check_options("v", {})
    check_options("v", {"type": "none", "o": "bind", "device": "/srv/data"})
    check_options("v", {"o": "rbind,ro", "device": "/srv/data"})
    assert_refused = "muslind's local volumes mount no filesystem"
    for options in ({"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}, {"type": "nfs", "o": "addr=10.0.0.1"},
                    {"type": "none", "o": "bind", "device": "relative"}, {"type": "none", "device": "/srv"}):
        with pytest.raises(InvalidArgument, match=assert_refused):
            check_options("v", options)
    with pytest.raises(InvalidArgument, match='create v: invalid option: "bogus"'):
        check_options("v", {"bogus": "1"})


def test_volumes_from() -> None:
    req = requests.container_create(create({"VolumesFrom": ["data", "cfg:ro"]}))
    assert req.volumes_from == (("data", ""), ("cfg", "ro"))
    assert refused({"VolumesFrom": ["data:rslave"]}) == "invalid mode: rslave"
    assert refused({"VolumesFrom": [":ro"]}) == "invalid volumes-from specification: ':ro'"
    theirs = [MountPoint(type="volume", destination="/v", source="/d/v/_data", name="v", driver="local", anonymous=True),
              MountPoint(type="bind", destination="/b", source="/srv", rw=False, propagation="rprivate"),
              MountPoint(type="tmpfs", destination="/t")]
    assert [(m.destination, m.rw, m.anonymous) for m in borrowed(theirs, "")] == [("/v", True, False), ("/b", False, False)]
    assert [m.rw for m in borrowed(theirs, "ro")] == [False, False]
    assert [m.rw for m in borrowed(theirs, "rw")] == [True, True]
