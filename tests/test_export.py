"""`testimony-portal export DEST [--purge]`: verified copies of ciphertext, never a loss."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from portal.core.age import X25519Identity
from portal.server.cli import main
from portal.server.export import SUMS_NAME, ExportError, export_submissions
from portal.server.store import SubmissionStore
from tests.review_support import make_store, submit, tree
from tests.support import mounted_tmpfs, require_root


@pytest.fixture
def identity() -> X25519Identity:
    return X25519Identity.generate()


@pytest.fixture
def store(tmp_path: Path, identity: X25519Identity) -> SubmissionStore:
    store = make_store(tmp_path / "data")
    for number in range(3):
        submit(store, [identity], f"testimony {number}", [("a.bin", os.urandom(400_000))])
    return store


def run_export(
    store: SubmissionStore,
    dest: Path,
    *,
    purge: bool,
    stdout: io.StringIO,
    stderr: io.StringIO,
    same_disk: bool = False,
) -> int:
    """`testimony-portal export DEST [--purge] [--same-disk]` on `store`'s data directory."""
    argv = ["export", str(dest), *(["--purge"] if purge else [])]
    argv += ["--same-disk"] if same_disk else []
    return main(argv, env={"PORTAL_DATA_DIR": str(store.root)}, stdout=stdout, stderr=stderr)


def _server_files(store: SubmissionStore) -> dict[str, bytes]:
    return tree(store.submissions_dir)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs): room for two of the three submissions."""
    with mounted_tmpfs(tmp_path / "usb", "size=1m,mode=0700") as path:
        yield path


def test_export_copies_every_submission_and_writes_a_checkable_manifest(
    tmp_path: Path, store: SubmissionStore
) -> None:
    before = _server_files(store)
    dest = tmp_path / "usb"

    report = export_submissions(store, dest, same_disk=True)

    assert report.ok and len(report.copied) == 3 and report.purged == []
    assert tree(dest / "submissions") == before
    assert _server_files(store) == before
    check = subprocess.run(["sha256sum", "--strict", "-c", SUMS_NAME], cwd=dest,
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert len((dest / SUMS_NAME).read_text().splitlines()) == len(before)
    # Nothing but finished files: no temporary names, no half-built folders.
    assert not [p for p in dest.rglob("*") if p.name.startswith(".")]


def test_running_again_skips_what_is_there_and_never_rewrites_it(
    tmp_path: Path, store: SubmissionStore, identity: X25519Identity
) -> None:
    dest = tmp_path / "usb"
    export_submissions(store, dest, same_disk=True)
    inodes = {p: p.stat().st_ino for p in dest.rglob("*.age")}
    sums = (dest / SUMS_NAME).read_bytes()
    new = submit(store, [identity], "arrived later")

    report = export_submissions(store, dest, same_disk=True)

    assert report.ok and report.copied == [new] and len(report.already_present) == 3
    assert all(p.stat().st_ino == inode for p, inode in inodes.items())
    assert (dest / SUMS_NAME).read_bytes().startswith(sums)
    assert len((dest / SUMS_NAME).read_text().splitlines()) == len(list(dest.rglob("*.age")))


def test_a_different_file_on_dest_is_not_overwritten_and_its_submission_not_purged(
    tmp_path: Path, store: SubmissionStore
) -> None:
    dest = tmp_path / "usb"
    victim = store.ids()[1]
    planted = dest / "submissions" / victim / "testimony.age"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"something else")
    victim_files = tree(store.path(victim))

    report = export_submissions(store, dest, same_disk=True, purge=True)

    assert list(report.failed) == [victim] and "differs" in report.failed[victim]
    assert planted.read_bytes() == b"something else"
    assert store.ids() == [victim] and tree(store.path(victim)) == victim_files
    assert sorted(report.purged) == sorted(set(report.copied))


def test_a_symlinked_submissions_folder_on_dest_is_refused(
    tmp_path: Path, store: SubmissionStore
) -> None:
    # Someone who handled the medium planted `submissions -> elsewhere`;
    # the export used to write every submission there.
    dest, elsewhere = tmp_path / "usb", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    (dest / "submissions").symlink_to(elsewhere)
    server = _server_files(store)
    with pytest.raises(ExportError, match="symbolic link"):
        export_submissions(store, dest, same_disk=True, purge=True)
    assert list(elsewhere.iterdir()) == []
    assert _server_files(store) == server


@pytest.mark.parametrize("link", ["ID", "ID/files"])
def test_a_symlinked_folder_inside_the_export_is_not_written_through(
    tmp_path: Path, store: SubmissionStore, link: str
) -> None:
    dest, elsewhere = tmp_path / "usb", tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = store.ids()[0]
    planted = dest / "submissions" / link.replace("ID", victim)
    planted.parent.mkdir(parents=True)
    planted.symlink_to(elsewhere)
    victim_files = tree(store.path(victim))

    report = export_submissions(store, dest, same_disk=True, purge=True)

    assert list(report.failed) == [victim] and "symbolic link" in report.failed[victim]
    assert list(elsewhere.iterdir()) == []
    assert tree(store.path(victim)) == victim_files
    assert len(report.copied) == 2


def test_purge_deletes_only_copies_that_were_read_back_and_verified(
    tmp_path: Path, store: SubmissionStore
) -> None:
    before = _server_files(store)
    dest = tmp_path / "usb"

    report = export_submissions(store, dest, same_disk=True, purge=True)

    assert sorted(report.purged) == sorted(report.copied) and len(report.purged) == 3
    assert store.ids() == []
    assert tree(dest / "submissions") == before


def _faulty_opener(fault: Callable[[int], bytes | None], after: int) -> Callable[[int], BinaryIO]:
    """An opener whose files misbehave once, when `after` bytes have been written in total."""
    written = [0]
    done = [False]

    class Faulty(io.FileIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            data = bytes(data)
            if not done[0] and written[0] + len(data) > after:
                done[0] = True
                replacement = fault(written[0])
                if replacement is not None:
                    data = replacement + data[len(replacement) :]
            written[0] += len(data)
            return super().write(data)

    return lambda fd: Faulty(fd, "wb")


def _raise(number: int) -> Callable[[int], bytes | None]:
    def fault(_offset: int) -> bytes | None:
        raise OSError(number, os.strerror(number))

    return fault


@pytest.mark.parametrize(
    ("number", "message"),
    [(errno.ENOSPC, "DEST is full"), (errno.EROFS, "DEST is read-only"),
     (errno.EIO, "DEST failed or was removed")],
)  # fmt: skip
def test_a_failing_medium_stops_the_export_and_leaves_the_server_untouched(
    tmp_path: Path, store: SubmissionStore, number: int, message: str
) -> None:
    before = _server_files(store)
    dest = tmp_path / "usb"
    opener = _faulty_opener(_raise(number), after=500_000)

    report = export_submissions(store, dest, same_disk=True, purge=True, opener=opener)

    assert report.stopped == message and not report.ok
    [first] = report.copied
    assert report.purged == [first]
    # Everything not verified on DEST is still on the server, byte for byte.
    remaining = {k: v for k, v in before.items() if not k.startswith(first)}
    assert _server_files(store) == remaining
    assert len(report.failed) + len(report.not_attempted) == 2
    assert [p.name for p in (dest / "submissions").iterdir()] == [first]
    assert not [p for p in dest.rglob("*") if p.name.startswith(".")]


def test_a_copy_that_reads_back_wrong_is_removed_and_not_purged(
    tmp_path: Path, store: SubmissionStore
) -> None:
    before = _server_files(store)
    dest = tmp_path / "usb"
    opener = _faulty_opener(lambda _offset: b"\x00\x01\x02", after=450_000)

    report = export_submissions(store, dest, same_disk=True, purge=True, opener=opener)

    [bad] = report.failed
    assert "did not read back as written" in report.failed[bad]
    assert store.ids() == [bad]
    assert tree(store.path(bad)) == {
        k.split("/", 1)[1]: v for k, v in before.items() if k.startswith(bad)
    }
    assert not (dest / "submissions" / bad).exists()


def test_an_interrupted_export_leaves_no_partial_files_and_resumes(
    tmp_path: Path, store: SubmissionStore
) -> None:
    before = _server_files(store)
    dest = tmp_path / "usb"

    def interrupt(_offset: int) -> bytes | None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_submissions(
            store, dest, same_disk=True, purge=True, opener=_faulty_opener(interrupt, 500_000)
        )
    assert len(store.ids()) == 2
    assert not [p for p in dest.rglob("*") if p.name.startswith(".")]

    report = export_submissions(store, dest, same_disk=True, purge=True)
    assert report.ok and store.ids() == []
    assert tree(dest / "submissions") == before


def test_a_real_full_disk_stops_cleanly_and_a_second_medium_finishes(
    tmp_path: Path, store: SubmissionStore, small_disk: Path
) -> None:
    before = _server_files(store)
    out, err = io.StringIO(), io.StringIO()

    status = run_export(store, small_disk, purge=True, stdout=out, stderr=err)

    assert status == 1
    assert "DEST is full" in err.getvalue()
    assert "remain on the server untouched" in err.getvalue()
    left = store.ids()
    assert 1 <= len(left) < 3
    for sid in left:
        assert tree(store.path(sid)) == {
            k.split("/", 1)[1]: v for k, v in before.items() if k.startswith(sid)
        }
    exported = {p.name for p in (small_disk / "submissions").iterdir()}
    assert exported.isdisjoint(left) and len(exported) + len(left) == 3
    assert not [p for p in small_disk.rglob("*") if p.name.startswith(".")]

    second = tmp_path / "second-usb"
    assert run_export(store, second, purge=True, stdout=out, stderr=err, same_disk=True) == 0
    assert store.ids() == []


def test_a_real_read_only_medium_is_named_and_nothing_is_deleted(
    tmp_path: Path, store: SubmissionStore
) -> None:
    with mounted_tmpfs(tmp_path / "usb", "size=4m") as dest:
        (dest / "submissions").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(dest)], check=True)
        before = _server_files(store)
        err = io.StringIO()
        status = run_export(store, dest, purge=True, stdout=io.StringIO(), stderr=err)
        assert status == 1
        assert "DEST is read-only" in err.getvalue()
        assert _server_files(store) == before


def test_dest_inside_the_data_directory_is_refused(store: SubmissionStore) -> None:
    with pytest.raises(ExportError, match="inside the data directory"):
        export_submissions(store, store.root / "export")


def test_run_export_reports_success_and_counts(tmp_path: Path, store: SubmissionStore) -> None:
    out, err = io.StringIO(), io.StringIO()
    status = run_export(
        store, tmp_path / "usb", purge=False, stdout=out, stderr=err, same_disk=True
    )
    assert status == 0, err.getvalue()
    assert "3 submission(s)" in out.getvalue() and "0 purged" in out.getvalue()
    sums = (tmp_path / "usb" / SUMS_NAME).read_text().splitlines()
    for line in sums:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((tmp_path / "usb" / name).read_bytes()).hexdigest() == digest


def test_a_wrong_data_directory_is_named(tmp_path: Path) -> None:
    err = io.StringIO()
    status = run_export(
        SubmissionStore(tmp_path / "nowhere"), tmp_path / "usb", purge=True,
        stdout=io.StringIO(), stderr=err,
    )  # fmt: skip
    assert status == 1
    assert "check PORTAL_DATA_DIR" in err.getvalue()
    assert not (tmp_path / "usb").exists()


def test_export_finishes_an_interrupted_seal_first(
    tmp_path: Path, store: SubmissionStore, identity: X25519Identity
) -> None:
    """A seal killed after moving a submission to its work folder: export still gets it."""
    from portal.server.seal import WORK_DIR

    ids = store.ids()
    work = store.root / WORK_DIR / "new"
    work.mkdir(parents=True)
    os.rename(store.path(ids[0]), work / ids[0])
    report = export_submissions(store, tmp_path / "usb", same_disk=True)
    assert report.ok and sorted(report.copied) == ids
    assert store.ids() == ids and not (store.root / WORK_DIR).exists()


def test_export_reads_a_read_only_data_directory_without_lock_files(
    tmp_path: Path, store: SubmissionStore
) -> None:
    """A read-only copy of a data directory from before the seal existed still exports."""
    from portal.server.store import COMMIT_LOCK, MAINTENANCE_LOCK

    for name in (MAINTENANCE_LOCK, COMMIT_LOCK):
        (store.root / name).unlink()
    mounted = tmp_path / "readonly"
    mounted.mkdir()
    require_root("a read-only bind mount")
    subprocess.run(["mount", "--bind", "-o", "ro", str(store.root), str(mounted)], check=True)
    try:
        report = export_submissions(SubmissionStore(mounted), tmp_path / "usb", same_disk=True)
        assert report.ok and sorted(report.copied) == store.ids()
    finally:
        subprocess.run(["umount", "-l", str(mounted)], check=False)


def test_a_drive_that_is_not_mounted_is_refused_and_nothing_is_created_or_purged(
    tmp_path: Path, store: SubmissionStore
) -> None:
    """`export /media/NO-SUCH-DRIVE/export --purge`: the path is never made on the server's disk."""
    before = _server_files(store)
    media = tmp_path / "media"
    media.mkdir()
    dest = media / "NO-SUCH-DRIVE" / "export"
    for same_disk in (False, True):
        err = io.StringIO()
        status = run_export(
            store, dest, purge=True, stdout=io.StringIO(), stderr=err, same_disk=same_disk
        )
        assert status == 1
        [line] = err.getvalue().strip().splitlines()
        assert f"{dest.parent} does not exist: is the drive mounted?" in line
        assert "Nothing was copied or deleted" in line
        assert list(media.iterdir()) == []
        assert _server_files(store) == before


def test_dest_on_the_data_directorys_disk_is_refused_unless_same_disk_says_so(
    tmp_path: Path, store: SubmissionStore
) -> None:
    before = _server_files(store)
    dest = tmp_path / "export"
    err = io.StringIO()
    assert run_export(store, dest, purge=True, stdout=io.StringIO(), stderr=err) == 1
    [line] = err.getvalue().strip().splitlines()
    assert "same disk as the data directory" in line and "--same-disk" in line
    assert not dest.exists() and _server_files(store) == before
    # An existing folder on the same disk is refused just the same.
    dest.mkdir()
    assert run_export(store, dest, purge=True, stdout=io.StringIO(), stderr=io.StringIO()) == 1
    assert list(dest.iterdir()) == [] and _server_files(store) == before

    status = run_export(
        store, dest, purge=True, stdout=io.StringIO(), stderr=io.StringIO(), same_disk=True
    )
    assert status == 0 and store.ids() == []
    assert tree(dest / "submissions") == before


def test_a_new_folder_on_a_mounted_drive_needs_no_flag(
    tmp_path: Path, store: SubmissionStore
) -> None:
    """The usual case: DEST does not exist yet, its parent is the drive's mount point."""
    before = _server_files(store)
    with mounted_tmpfs(tmp_path / "usb", "size=8m,mode=0700") as drive:
        dest = drive / "export-2026"
        err = io.StringIO()
        assert run_export(store, dest, purge=True, stdout=io.StringIO(), stderr=err) == 0, (
            err.getvalue()
        )
        assert store.ids() == [] and tree(dest / "submissions") == before
