"""The repository a refused pull names, as dockerd's "pull access denied for REPO" does."""

from __future__ import annotations

import pytest

from muslin.api.images import _repository


@pytest.mark.parametrize(("reference", "repository"), [
    ("alpine", "alpine"),
    ("alpine:3.10", "alpine"),
    ("library/alpine:latest", "library/alpine"),
    ("localhost:5000/team/app:v1", "localhost:5000/team/app"),
    ("localhost:5000/app", "localhost:5000/app"),
    ("app@sha256:" + "0" * 64, "app"),
    ("app:v1@sha256:" + "0" * 64, "app"),
    ("docker.io/library/alpine", "alpine"),
    ("docker.io/library/team/app:1", "library/team/app"),
    ("docker.io/team/app:1", "team/app"),
    ("index.docker.io/library/busybox:latest", "busybox"),
])
def test_pull_names_the_repository_without_tag_or_digest(reference: str, repository: str) -> None:
    assert _repository(reference) == repository
