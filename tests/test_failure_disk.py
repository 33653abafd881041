"""A full disk never loses a testimony silently: the witness is told, nothing half-written stays.

Tested for real on a 1 MiB tmpfs (the test runs as root, as in CI), and
through the store's `opener` seam for failures at exact points.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from portal.config import Config
from portal.store import SubmissionStore
from portal.web import create_app
from tests.support import assert_nothing_kept, open_submission, start_server
from tests.support import flask_post_form as post

NOT_SAVED = "NOT saved"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system, unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mountpoint)],
                   check=True)  # fmt: skip
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_disk_full_during_an_upload_on_a_real_small_disk(small_disk, config, identity) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(config, data_dir=small_disk / "data")
    client = create_app(config, TESTING=True).test_client()
    video = os.urandom(3 << 20)  # three times the whole disk
    response = post(
        client,
        {"testimony": "the video", "attachments": (io.BytesIO(video), "video.mp4")},
        path="/ko/submit",
    )
    assert response.status_code == 503
    page = response.get_data(as_text=True)
    assert 'lang="ko"' in page
    assert "<strong>" in page and "</strong>" in page  # the "not saved" notice
    assert_nothing_kept(config.data_dir)
    # The space is given back: a testimony that fits is then stored whole.
    assert post(client, {"testimony": "short and safe"}).status_code == 200
    store = SubmissionStore(config.data_dir)
    [submission_id] = store.ids()
    manifest, _ = open_submission(store.path(submission_id), [identity])
    assert manifest["fields"]["testimony"] == "short and safe"


def test_disk_full_before_the_manifest_on_a_real_small_disk(small_disk, config) -> None:  # type: ignore[no-untyped-def]
    config = dataclasses.replace(config, data_dir=small_disk / "data")
    client = create_app(config, TESTING=True).test_client()
    filler = fill(small_disk)
    try:
        response = post(client, {"testimony": "words only " * 2000})
        assert response.status_code == 503
        assert NOT_SAVED in response.get_data(as_text=True)
        assert_nothing_kept(config.data_dir)
    finally:
        filler.unlink()


@pytest.mark.slow
def test_disk_full_through_the_real_server(small_disk, tmp_path, identity, identity_file) -> None:  # type: ignore[no-untyped-def]
    server = start_server(
        tmp_path / "server", str(identity.recipient), identity_file, data_dir=small_disk / "data"
    )
    try:
        for chunked in (False, True):
            response = server.client().submit(
                "a long video", [("video.mp4", os.urandom(2 << 20), "video/mp4")], chunked=chunked
            )
            assert response.status == 503, response.status
            assert NOT_SAVED in response.body
            assert_nothing_kept(server.data_dir)
        assert server.client().submit("small").status == 200
        assert len(SubmissionStore(server.data_dir).ids()) == 1
    finally:
        server.stop()
    assert "StorageFull" in server.log()


# --- failures at exact points, through the store's opener seam -------------


class FailingFile(io.RawIOBase):
    """A file that fails with ENOSPC once a shared byte budget is spent."""

    def __init__(self, raw: BinaryIO, budget: list[int]) -> None:
        self._raw = raw
        self._budget = budget

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        if len(data) > self._budget[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._budget[0] -= len(data)
        return self._raw.write(data)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        super().close()
        self._raw.close()


def failing_after(budget: int):  # type: ignore[no-untyped-def]
    shared = [budget]

    def opener(fd: int) -> BinaryIO:
        return FailingFile(open(fd, "wb", buffering=0), shared)  # type: ignore[return-value]

    return opener


@pytest.mark.parametrize(
    "budget",
    [0, 100, 64 * 1024 + 500, 200 * 1024 + 1, 300 * 1024 + 700],
    ids=["no-byte", "header", "second-chunk", "second-file", "manifest"],
)
def test_disk_full_at_any_point_leaves_nothing(config: Config, budget: int) -> None:
    app = create_app(config, TESTING=True)
    app.extensions["portal"].store.opener = failing_after(budget)
    client = app.test_client()
    response = post(
        client,
        {
            "testimony": "x" * 5000,
            "attachments": [
                (io.BytesIO(os.urandom(200 * 1024)), "one.jpg"),
                (io.BytesIO(os.urandom(100 * 1024)), "two.jpg"),
            ],
        },
    )
    assert response.status_code == 503
    assert NOT_SAVED in response.get_data(as_text=True)
    assert_nothing_kept(config.data_dir)


def test_failure_while_committing_leaves_nothing(config: Config, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import portal.store

    def no_rename(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    client = create_app(config, TESTING=True).test_client()
    monkeypatch.setattr(portal.store.os, "rename", no_rename)
    response = post(client, {"testimony": "almost", "attachments": (io.BytesIO(b"f"), "f")})
    monkeypatch.undo()
    assert response.status_code == 503
    assert NOT_SAVED in response.get_data(as_text=True)
    assert_nothing_kept(config.data_dir)
