"""The runtime's readers of kernel tables: cgroup mounts through mountinfo's one parser, cgroup v2's
cpu.stat read once per sample, docker diff's layer walk off the event loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace

from muslin.api import archive
from muslin.api.http import Request
from muslin.engine import stats
from muslin.runtime.cgroups import CgroupMount, Cgroups, cgroup_mounts

TABLE = """\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 24 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
27 24 0:24 /sub\\040dir /sys/fs/cgroup\\040v1/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
"""


def test_cgroup_mounts_come_from_the_mountinfo_parser_unescaped() -> None:
    assert cgroup_mounts(TABLE) == (
        CgroupMount(Path("/sys/fs/cgroup"), "/", frozenset()),
        CgroupMount(Path("/sys/fs/cgroup v1/cpu,cpuacct"), "/sub dir", frozenset({"cpu", "cpuacct"})))


class CountingCgroups(Cgroups):
    def __init__(self, dirs: dict[str, Path]) -> None:
        super().__init__(dirs)
        object.__setattr__(self, "reads", [])

    def read(self, controller: str, v1_file: str, v2_file: str | None = None) -> str | None:
        self.reads.append(v2_file or v1_file)  # type: ignore[attr-defined]
        return super().read(controller, v1_file, v2_file)


def test_cgroup_v2_cpu_stat_is_read_once(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text("usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 7\n"
                                       "nr_throttled 1\nthrottled_usec 4\n")
    cg = CountingCgroups({"": tmp_path})
    sample = stats._cpu(cg)
    assert (sample.total_usage, sample.usage_in_usermode, sample.usage_in_kernelmode) == (5000, 3000, 2000)
    assert (sample.periods, sample.throttled_periods, sample.throttled_time) == (7, 1, 4000)
    assert cg.reads.count("cpu.stat") == 1  # type: ignore[attr-defined]


def test_docker_diff_walks_the_layers_off_the_event_loop() -> None:
    walked_in: list[threading.Thread] = []

    def changes(ref: str) -> list:
        walked_in.append(threading.current_thread())
        return []

    engine = SimpleNamespace(files=SimpleNamespace(changes=changes))
    req = Request(method="GET", path="/containers/c/changes", query={}, headers={}, body=b"", api_version=None,
                  params={"id": "c"})
    response = asyncio.run(archive.changes(engine, req))  # type: ignore[arg-type]
    assert response.body == b"null\n"
    assert walked_in and walked_in[0] is not threading.main_thread()
