"""A full disk never loses a testimony silently: the witness is told, nothing half-written stays.

Tested for real on a 1 MiB tmpfs (the test runs as root, as in CI), and
through the store's `opener` seam for failures at exact points.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal.server.config import Config
from portal.server.store import SubmissionStore
from portal.testing.live import open_submission, start_server
from portal.testing.live import post_form as post
from tests.support import assert_nothing_kept, failing_after, mounted_tmpfs

NOT_SAVED = "NOT saved"


def tmpfs(mountpoint: Path, size_mb: int) -> contextlib.AbstractContextManager[Path]:
    """A real file system of `size_mb` MiB, unmounted afterwards whatever happens."""
    return mounted_tmpfs(mountpoint, f"size={size_mb}m,mode=0700")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system."""
    with tmpfs(tmp_path / "small-disk", 1) as mountpoint:
        yield mountpoint


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


def test_disk_full_during_an_upload_on_a_real_small_disk(
    small_disk, config, identity, make_app
) -> None:
    config = dataclasses.replace(config, data_dir=small_disk / "data")
    client = make_app(data_dir=config.data_dir).test_client()
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


def test_disk_full_before_the_manifest_on_a_real_small_disk(small_disk, config, make_app) -> None:
    config = dataclasses.replace(config, data_dir=small_disk / "data")
    client = make_app(data_dir=config.data_dir).test_client()
    filler = fill(small_disk)
    try:
        response = post(client, {"testimony": "words only " * 2000})
        assert response.status_code == 503
        assert NOT_SAVED in response.get_data(as_text=True)
        assert_nothing_kept(config.data_dir)
    finally:
        filler.unlink()


@pytest.mark.slow
def test_disk_full_through_the_real_server(small_disk, tmp_path, identity, identity_file) -> None:
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


# --- the free-space floor holds while uploads are written ------------------

DISK_MB = 24
FLOOR_MB = 8
# The store writes age ciphertext one chunk at a time: 64 KiB plus its tag.
WRITE_CHUNK = 64 * 1024 + 16
MIB = 1024 * 1024


class FreeSpaceWatcher(threading.Thread):
    """Samples a file system's free space until stopped; keeps the lowest value seen."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.lowest = self.free()
        self._stop_event = threading.Event()

    def free(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.lowest = min(self.lowest, self.free())
            time.sleep(0.0005)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return min(self.lowest, self.free())


@pytest.fixture
def floored_server(tmp_path, identity, identity_file):
    """A real server whose data directory is on a 24 MiB disk with an 8 MiB floor."""
    with tmpfs(tmp_path / "disk", DISK_MB) as disk:
        server = start_server(
            tmp_path / "server",
            str(identity.recipient),
            identity_file,
            data_dir=disk / "data",
            env={"PORTAL_MIN_FREE_MB": str(FLOOR_MB)},
        )
        try:
            yield server
        finally:
            server.stop()


@pytest.mark.slow
def test_live_one_upload_cannot_take_the_disk_below_the_floor(floored_server, identity) -> None:
    watcher = FreeSpaceWatcher(floored_server.data_dir)
    assert watcher.free() > 20 * MIB  # the upload starts well above the floor
    watcher.start()
    # 18 MiB fits on the disk, but would leave 6 MiB: below the 8 MiB floor.
    response = floored_server.client().submit(
        "a long video", [("video.mp4", os.urandom(18 * MIB), "video/mp4")], lang="ko"
    )
    lowest = watcher.stop()
    assert response.status == 503, response.status
    assert 'lang="ko"' in response.body and "<strong>" in response.body
    assert_nothing_kept(floored_server.data_dir)
    assert lowest >= FLOOR_MB * MIB - WRITE_CHUNK, lowest / MIB
    # The space is back: a submission that fits is stored whole.
    fits = os.urandom(4 * MIB)
    assert floored_server.client().submit("fits", [("a.mp4", fits, "video/mp4")]).status == 200
    store = SubmissionStore(floored_server.data_dir)
    [submission_id] = store.ids()
    _, files = open_submission(store.path(submission_id), [identity])
    assert list(files.values()) == [fits]


@pytest.mark.slow
def test_live_concurrent_uploads_cannot_take_the_disk_below_the_floor(
    floored_server, identity
) -> None:
    # Three 7 MiB uploads at once: 21 MiB, where only 16 MiB lie above the floor.
    videos = [os.urandom(7 * MIB) for _ in range(3)]
    statuses: list[int] = []
    clients = [floored_server.client() for _ in videos]
    tokens = [client.csrf_token() for client in clients]  # every form open before any upload

    def upload(n: int) -> None:
        video = [(f"video{n}.mp4", videos[n], "video/mp4")]
        statuses.append(clients[n].submit(f"video {n}", video, token=tokens[n]).status)

    watcher = FreeSpaceWatcher(floored_server.data_dir)
    watcher.start()
    uploads = [threading.Thread(target=upload, args=(n,)) for n in range(3)]
    for thread in uploads:
        thread.start()
    for thread in uploads:
        thread.join(timeout=300)
    lowest = watcher.stop()
    # Whatever the order, only the upload that crossed the floor is refused:
    # its space comes back at once, and the other two fit.
    assert sorted(statuses) == [200, 200, 503], statuses
    assert lowest >= FLOOR_MB * MIB - WRITE_CHUNK, lowest / MIB
    store = SubmissionStore(floored_server.data_dir)
    assert len(store.ids()) == statuses.count(200)
    assert list(store.staging_dir.iterdir()) == [], "a refused upload left files behind"
    for submission_id in store.ids():
        _, files = open_submission(store.path(submission_id), [identity])
        assert list(files.values())[0] in videos


# --- failures at exact points, through the store's opener seam -------------


@pytest.mark.parametrize(
    "budget",
    [0, 100, 64 * 1024 + 500, 200 * 1024 + 1, 300 * 1024 + 700],
    ids=["no-byte", "header", "second-chunk", "second-file", "manifest"],
)
def test_disk_full_at_any_point_leaves_nothing(config: Config, budget: int, make_app) -> None:
    app = make_app()
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


def test_failure_while_committing_leaves_nothing(config: Config, monkeypatch, make_app) -> None:
    def no_rename(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    client = make_app().test_client()
    monkeypatch.setattr(os, "rename", no_rename)
    response = post(client, {"testimony": "almost", "attachments": (io.BytesIO(b"f"), "f")})
    monkeypatch.undo()
    assert response.status_code == 503
    assert NOT_SAVED in response.get_data(as_text=True)
    assert_nothing_kept(config.data_dir)
