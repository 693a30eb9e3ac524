"""Labs shared by the package's tests: a `lab up` of two nodes takes a dozen seconds or more (etcd,
two flanneld, two muslind, their containers), and most tests only look at a lab and add a container or two.
Each (backend, overlay) is brought up once, on first use, under a prefix and root of its own (so it runs
beside other labs), lent to every test that asks for it, and taken down, leaving nothing, after the
package's last test. Tests that crash a lab, or need one routed, make their own."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from muslin.lab.lab import Lab

from ..conftest import kept_across_tests, unique
from .test_lab_cli import assert_nothing_left

LabKey = tuple[str | None, bool]


class LabPool:
    """One lab per (backend, overlay). After each test, the containers it started are removed, so the next
    borrower sees the lab as `up` left it; a lab that cannot be put back is taken down for a fresh one."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.labs: dict[LabKey, Lab] = {}
        self.made: list[Lab] = []
        self.containers: dict[LabKey, dict[str, set[str]]] = {}

    def _make(self, key: LabKey) -> Lab:
        backend, overlay = key
        lines: list[str] = []
        lab = Lab(self.workdir / f"lab{len(self.made)}", out=lines.append, prefix=unique("lp") + "-")
        lab.lines = lines  # type: ignore[attr-defined]
        self.made.append(lab)
        with kept_across_tests():
            lab.up(2, backend, overlay=overlay)
        self.labs[key] = lab
        self.containers[key] = {n.name: self._names(lab, n) for n in lab.nodes()}
        return lab

    @staticmethod
    def _names(lab: Lab, node) -> set[str]:
        return set(lab.run(node, "docker", "ps", "-a", "--format", "{{.Names}}").stdout.split())

    @contextlib.contextmanager
    def lend(self, backend: str | None, overlay: bool = False) -> Iterator[Lab]:
        key = (backend, overlay)
        lab = self.labs.get(key) or self._make(key)
        try:
            yield lab
        finally:  # also when another loan's hand-back failed first
            self._hand_back(key, lab)

    def _hand_back(self, key: tuple[str | None, bool], lab: Lab) -> None:
        try:
            for node in lab.nodes():
                added = self._names(lab, node) - self.containers[key][node.name]
                if added:
                    lab.run(node, "docker", "rm", "-f", *sorted(added))
            assert lab.status() == 0, "the shared lab is not whole after the test"
        except BaseException:
            del self.labs[key]  # the next borrower gets a fresh lab; this one goes down at the end
            lab.down()
            raise


@pytest.fixture(scope="package")
def lab_pool() -> Iterator[LabPool]:
    workdir = Path(tempfile.mkdtemp(prefix="muslin-labpool-"))
    pool = LabPool(workdir)
    try:
        yield pool
    finally:
        try:
            for lab in pool.made:
                lab.down()
            for lab in pool.made:
                assert_nothing_left(lab)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def shared_lab(lab_pool: LabPool) -> Callable[..., Lab]:
    """shared_lab(backend, overlay=False): the package's lab of that kind, lent for this test. Each loan is
    handed back at the end, the others too when one fails its check."""
    with contextlib.ExitStack() as loans:
        yield lambda backend, overlay=False: loans.enter_context(lab_pool.lend(backend, overlay))  # type: ignore[misc]
