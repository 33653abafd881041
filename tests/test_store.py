"""The ciphertext store: staging, atomic commit, permissions, coarse times, sweeping."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from portal.core.fsio import DIR_MODE, FILE_MODE
from portal.core.layout import LayoutError, day_timestamp, is_valid_id, submission_files
from portal.server.store import (
    SharedSync,
    StagedFile,
    StorageFullError,
    StoreError,
    SubmissionStore,
    UnknownSubmissionError,
)
from tests.support import failing_after


def _stage(store: SubmissionStore, payloads: list[bytes]):
    staging = store.begin()
    for payload in payloads:
        _relpath, f = staging.create_attachment()
        f.write(payload)
        f.finish()
    manifest = staging.create_manifest()
    manifest.write(b"age-encryption.org/v1 (stand-in)")
    manifest.finish()
    return staging


def test_commit_moves_the_whole_submission_atomically(store: SubmissionStore) -> None:
    staging = _stage(store, [b"one", b"two"])
    submission_id = store.commit(staging)
    assert store.ids() == [submission_id]
    assert not any(store.staging_dir.iterdir())
    files = [
        p.relative_to(store.path(submission_id)).as_posix() for p in store.files(submission_id)
    ]
    assert sorted(files) == ["files/1.age", "files/2.age", "testimony.age"]


def test_ids_are_random_url_safe_and_at_least_128_bits(store: SubmissionStore) -> None:
    ids = {store.commit(_stage(store, [])) for _ in range(50)}
    assert len(ids) == 50
    for value in ids:
        assert is_valid_id(value)
        assert len(value) * 6 >= 128


def test_permissions_are_private(store: SubmissionStore) -> None:
    submission_id = store.commit(_stage(store, [b"x"]))
    for dirpath, _dirnames, filenames in os.walk(store.root):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == DIR_MODE, dirpath
        for name in filenames:
            path = os.path.join(dirpath, name)
            assert stat.S_IMODE(os.stat(path).st_mode) == FILE_MODE, path
    assert submission_id


@pytest.mark.parametrize("payloads", [[], [b"x"], [b"x", b"y"]])
def test_times_are_coarsened_to_the_day(store: SubmissionStore, payloads: list[bytes]) -> None:
    submission_id = store.commit(_stage(store, payloads))
    midnight = day_timestamp()
    paths = [store.submissions_dir, store.path(submission_id), *store.files(submission_id)]
    for path in paths:
        assert path.stat().st_mtime == midnight, path


@pytest.mark.parametrize("payloads", [[], [b"x"]])
def test_commit_fsyncs_every_folder_of_the_submission_and_its_parent(
    store: SubmissionStore, payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    staging = _stage(store, payloads)
    monkeypatch.setattr(os, "fsync", spy)
    submission_id = store.commit(staging)
    folder = store.path(submission_id)
    folders = [folder, *([folder / "files"] if payloads else []), store.submissions_dir]
    assert {path.stat().st_ino for path in folders} <= set(synced)


def test_stale_staging_is_swept_at_start_up(tmp_path: Path) -> None:
    store = SubmissionStore(tmp_path / "data")
    store.initialise()
    staging = store.begin()
    _relpath, f = staging.create_attachment()
    f.write(b"half a file")  # the process dies here
    (store.staging_dir / "stray-file").write_bytes(b"x")
    SubmissionStore(tmp_path / "data").initialise()
    assert list(store.staging_dir.iterdir()) == []
    assert store.ids() == []


def test_discard_removes_everything_staged(store: SubmissionStore) -> None:
    staging = _stage(store, [b"x"])
    staging.discard()
    staging.discard()
    assert list(store.staging_dir.iterdir()) == []
    with pytest.raises(StoreError):
        store.commit(staging)


def test_disk_full_becomes_storage_full_error(tmp_path: Path) -> None:
    store = SubmissionStore(tmp_path / "data", opener=failing_after(0))
    store.initialise()
    staging = store.begin()
    _relpath, f = staging.create_attachment()
    with pytest.raises(StorageFullError):
        # The failure happens on the write-behind thread and surfaces at
        # the next write or, at the latest, when the file is finished.
        f.write(b"x")
        f.finish()
    staging.discard()
    assert list(store.staging_dir.iterdir()) == []


@pytest.mark.parametrize("bad", ["../data", "", "a" * 10, "..", "x/../../etc", "A" * 65])
def test_path_refuses_malformed_ids(store: SubmissionStore, bad: str) -> None:
    with pytest.raises(UnknownSubmissionError):
        store.path(bad)


def test_path_refuses_symlinked_submission(store: SubmissionStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = store.submissions_dir / ("L" * 24)
    link.symlink_to(elsewhere)
    with pytest.raises(UnknownSubmissionError):
        store.path(link.name)
    assert link.name not in store.ids()


def test_submission_files_refuses_strangers(store: SubmissionStore, tmp_path: Path) -> None:
    submission_id = store.commit(_stage(store, [b"x"]))
    directory = store.path(submission_id)
    (directory / "files" / "evil.sh").write_bytes(b"#!/bin/sh")
    with pytest.raises(LayoutError):
        submission_files(directory)


def test_submission_files_refuses_symlinked_attachment(
    store: SubmissionStore, tmp_path: Path
) -> None:
    submission_id = store.commit(_stage(store, [b"x"]))
    directory = store.path(submission_id)
    target = tmp_path / "secret"
    target.write_bytes(b"secret")
    (directory / "files" / "2.age").symlink_to(target)
    with pytest.raises(LayoutError):
        submission_files(directory)


def test_purge_removes_one_submission(store: SubmissionStore) -> None:
    keep = store.commit(_stage(store, [b"a"]))
    gone = store.commit(_stage(store, [b"b"]))
    store.purge(gone)
    assert store.ids() == [keep]


# --- per-submission overheads (issue 14): inline small files, shared fsyncs ---


def test_small_file_is_written_inline_and_a_large_one_by_the_writer_thread(
    store: SubmissionStore,
) -> None:
    staging = store.begin()
    _small_path, small = staging.create_attachment()
    small.write(b"a" * 1000)
    _large_path, large = staging.create_attachment()
    chunk = os.urandom(64 * 1024)
    chunks = StagedFile.INLINE_BYTES // len(chunk) + 3
    for _ in range(chunks):
        large.write(chunk)
    assert not small.threaded
    assert large.threaded
    small.finish()
    large.finish()
    assert small.path.read_bytes() == b"a" * 1000
    assert large.path.read_bytes() == chunk * chunks
    staging.discard()


@pytest.mark.parametrize("budget", [0, 500, StagedFile.INLINE_BYTES + 100_000])
def test_disk_full_inline_or_on_the_writer_thread_is_storage_full(
    tmp_path: Path, budget: int
) -> None:
    store = SubmissionStore(tmp_path / "data", opener=failing_after(budget))
    store.initialise()
    staging = store.begin()
    _relpath, f = staging.create_attachment()
    with pytest.raises(StorageFullError):
        for _ in range(3 * StagedFile.INLINE_BYTES // 65536):
            f.write(os.urandom(65536))
        f.finish()
    assert f.threaded == (budget > StagedFile.INLINE_BYTES)
    staging.discard()
    assert list(store.staging_dir.iterdir()) == []


def test_shared_sync_covers_waiting_callers_with_one_fsync_started_after_them() -> None:
    events: list[str] = []
    first_started, release_first = threading.Event(), threading.Event()

    def fsync() -> None:
        events.append("start")
        if not first_started.is_set():
            first_started.set()
            release_first.wait(timeout=60)
        events.append("end")

    shared = SharedSync(fsync)
    returned: list[int] = []

    def commit(number: int) -> None:
        shared()
        returned.append(number)

    leader = threading.Thread(target=commit, args=(0,))
    leader.start()
    assert first_started.wait(timeout=60)
    # Four commits arrive while the first fsync runs: it may not cover them.
    followers = [threading.Thread(target=commit, args=(n,)) for n in range(1, 5)]
    for thread in followers:
        thread.start()
    deadline = time.monotonic() + 60
    while shared._tickets < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert returned == []
    release_first.set()
    for thread in [leader, *followers]:
        thread.join(timeout=60)
    assert sorted(returned) == [0, 1, 2, 3, 4]
    # One fsync for the first commit, one shared by the four that waited.
    assert shared.syncs == 2
    assert events == ["start", "end", "start", "end"]


def test_shared_sync_failure_is_never_taken_for_durability() -> None:
    calls: list[int] = []

    def fsync() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")

    shared = SharedSync(fsync)
    with pytest.raises(OSError):
        shared()
    assert shared.syncs == 0
    # The next caller gets an fsync of its own, not the failed one.
    shared()
    assert shared.syncs == 1 and len(calls) == 2


def test_concurrent_commits_share_the_submissions_fsync_and_all_survive(
    store: SubmissionStore,
) -> None:
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def submit() -> None:
        staging = _stage(store, [b"x" * 100])
        barrier.wait(timeout=60)
        ids.append(store.commit(staging))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(ids) == store.ids()
    assert 1 <= store.sync_submissions_dir.syncs <= 8


def test_live_sweep_keeps_folders_of_live_requests(store: SubmissionStore) -> None:
    live = store.begin()
    _relpath, f = live.create_attachment()
    f.write(b"ciphertext so far")
    assert store.sweep_abandoned_staging() == 0
    assert live.path.is_dir()
    f.finish()
    manifest = live.create_manifest()
    manifest.write(b"stand-in")
    manifest.finish()
    assert store.commit(live) in store.ids()


_BEGIN_AND_HANG = """
import sys, time
from pathlib import Path
from portal.server.store import SubmissionStore
staging = SubmissionStore(Path(sys.argv[1])).begin()
_rel, part = staging.create_attachment()
part.write(b"half an upload")
print(staging.path, flush=True)
time.sleep(600)
"""


def test_live_sweep_removes_the_folder_of_a_killed_process(store: SubmissionStore) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _BEGIN_AND_HANG, str(store.root)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        folder = Path(process.stdout.readline().strip())
        assert folder.parent == store.staging_dir and folder.is_dir()
        assert store.sweep_abandoned_staging() == 0, "swept while its owner was alive"
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        assert store.sweep_abandoned_staging() == 1
        assert list(store.staging_dir.iterdir()) == []
    finally:
        process.kill()
        process.wait()


def test_begin_never_hands_out_a_folder_a_sweep_removed(
    store: SubmissionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep may run between mkdir and the owner's flock: begin() then starts afresh."""
    import portal.server.store as store_module

    real_lock = store_module._lock_directory
    raced: list[Path] = []

    def sweep_first(path: Path) -> int | None:
        if not raced:
            raced.append(path)
            assert store.sweep_abandoned_staging() == 1
        return real_lock(path)

    monkeypatch.setattr(store_module, "_lock_directory", sweep_first)
    staging = store.begin()
    assert raced and staging.path != raced[0] and staging.path.is_dir()
    staging.discard()


def test_a_forgotten_staging_is_released_when_collected(store: SubmissionStore) -> None:
    import gc

    staging = store.begin()
    folder = staging.path
    del staging
    gc.collect()
    assert store.sweep_abandoned_staging() == 1
    assert not folder.exists()


def test_large_file_starts_write_back_without_waiting_and_is_fsynced_once_at_the_end(
    store: SubmissionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(StagedFile, "SYNC_EVERY", 256 * 1024)
    monkeypatch.setattr(os, "fdatasync", lambda fd: calls.append("fdatasync"))

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(
        os, "posix_fadvise", lambda fd, offset, length, advice: calls.append("writeback")
    )
    staging = store.begin()
    _relpath, f = staging.create_attachment()
    chunk = os.urandom(64 * 1024)
    for _ in range((StagedFile.INLINE_BYTES + 1024 * 1024) // len(chunk)):
        f.write(chunk)
    f.finish()
    # Write-back was started along the way; durability comes from the one fsync at the end.
    assert calls.count("writeback") >= 3
    assert "fdatasync" not in calls
    assert calls[-1] == "fsync" and calls.count("fsync") == 1
    staging.discard()
