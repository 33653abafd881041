"""portal.core.fsio: the one module that creates, writes, fsyncs and hashes files."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import select
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal.core import fsio
from portal.core.fsio import (
    DIR_MODE,
    FILE_MODE,
    append_file,
    create_new,
    fsync_dir,
    new_file,
    open_lock_file,
    open_new,
    replace_file,
    replace_with_chunks,
    sha256_file,
    write_all,
)
from portal.server.store import SubmissionStore
from tests.support import require_root, require_tool, unsupported_here

# ---------------------------------------------------------------------------
# Partial writes


@pytest.fixture
def one_byte_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """os.write takes one byte per call (as a pipe or a signal may make it); the sizes asked."""
    real_write = os.write
    asked: list[int] = []

    def write(fd: int, data: bytes | memoryview) -> int:
        asked.append(len(data))
        return real_write(fd, bytes(data[:1]))

    monkeypatch.setattr(os, "write", write)
    return asked


def test_write_all_to_a_descriptor_loops_over_partial_writes(
    tmp_path: Path, one_byte_writes: list[int]
) -> None:
    data = bytes(range(256)) * 3
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data
    # One call per byte, each asked for everything still unwritten.
    assert one_byte_writes == list(range(len(data), 0, -1))


def test_create_new_writes_everything_when_the_kernel_writes_little(
    tmp_path: Path, one_byte_writes: list[int]
) -> None:
    data = os.urandom(5000)
    create_new(tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == data
    assert len(one_byte_writes) == len(data)


class _Trickle:
    """An unbuffered file that takes at most three bytes per write."""

    def __init__(self) -> None:
        self.received = bytearray()

    def write(self, data: memoryview) -> int:
        self.received += data[:3]
        return min(3, len(data))


def test_write_all_to_a_file_object_loops_over_partial_writes() -> None:
    out = _Trickle()
    write_all(out, b"0123456789abcdef")
    assert bytes(out.received) == b"0123456789abcdef"


_HASH_STDIN = "import sys, hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"


def test_write_all_through_a_real_pipe_with_a_slow_reader() -> None:
    # A non-blocking pipe takes only what fits in its buffer: os.write
    # returns less than asked (or raises BlockingIOError when full).
    data = os.urandom(3 * 1024 * 1024)
    reader = subprocess.Popen(
        [sys.executable, "-c", _HASH_STDIN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert reader.stdin is not None and reader.stdout is not None
    fd = reader.stdin.fileno()
    partial = 0
    real_write = os.write

    def write(fd: int, data: memoryview) -> int:
        nonlocal partial
        while True:
            try:
                written = real_write(fd, data)
            except BlockingIOError:
                select.select([], [fd], [], 60)
                continue
            partial += written < len(data)
            return written

    os.set_blocking(fd, False)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "write", write)
            write_all(fd, data)
    finally:
        reader.stdin.close()
    assert reader.stdout.read().decode().strip() == hashlib.sha256(data).hexdigest()
    assert reader.wait(timeout=60) == 0
    assert partial > 0  # the pipe really did take only part of some writes


# ---------------------------------------------------------------------------
# Exclusive creation: never overwrite, never follow a link


def _creators(path: Path) -> dict[str, object]:
    def with_new_file() -> None:
        with new_file(path) as out:
            out.write(b"new")

    return {
        "create_new": lambda: create_new(path, b"new"),
        "new_file": with_new_file,
        "open_new": lambda: os.close(open_new(path)),
    }


@pytest.mark.parametrize("how", ["create_new", "new_file", "open_new"])
def test_an_existing_file_is_never_overwritten_or_removed(tmp_path: Path, how: str) -> None:
    target = tmp_path / "existing"
    target.write_bytes(b"the evidence")
    with pytest.raises(FileExistsError):
        _creators(target)[how]()  # type: ignore[operator]
    # Not truncated, not replaced, and not removed by the clean-up of a failed create.
    assert target.read_bytes() == b"the evidence"


@pytest.mark.parametrize("how", ["create_new", "new_file", "open_new"])
@pytest.mark.parametrize("dangling", [False, True])
def test_a_planted_symlink_is_never_written_through(
    tmp_path: Path, how: str, dangling: bool
) -> None:
    outside = tmp_path / "outside"
    if not dangling:
        outside.write_bytes(b"kept")
    link = tmp_path / "link"
    link.symlink_to(outside)
    with pytest.raises(FileExistsError):
        _creators(link)[how]()  # type: ignore[operator]
    assert link.is_symlink()
    if dangling:
        assert not outside.exists()
    else:
        assert outside.read_bytes() == b"kept"


def test_append_hash_and_lock_refuse_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"kept")
    link = tmp_path / "link"
    link.symlink_to(outside)
    for call in (
        lambda: append_file(link, b"more"),
        lambda: sha256_file(link),
        lambda: os.close(open_lock_file(link)),
    ):
        with pytest.raises(OSError) as caught:
            call()
        assert caught.value.errno == errno.ELOOP
    assert outside.read_bytes() == b"kept"


def test_a_failed_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def full_after_one_byte(fd: int, data: memoryview) -> int:
        if os.fstat(fd).st_size >= 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[:1]))

    monkeypatch.setattr(os, "write", full_after_one_byte)
    with pytest.raises(OSError) as caught:
        create_new(tmp_path / "f", b"abcdef")
    assert caught.value.errno == errno.ENOSPC
    assert not (tmp_path / "f").exists()


def test_new_file_removes_the_file_when_the_block_fails(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with pytest.raises(RuntimeError), new_file(path) as out:
        out.write(b"half of it")
        raise RuntimeError("the source went away")
    assert not path.exists()
    with new_file(path) as out:
        write_all(out, b"all of it")
    assert path.read_bytes() == b"all of it"


def test_replace_file_replaces_in_one_step_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state"
    replace_file(path, b"one")
    replace_file(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]

    def no_replace(_src: object, _dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError):
        replace_file(path, b"three")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_append_file_appends(tmp_path: Path) -> None:
    path = tmp_path / "SHA256SUMS"
    append_file(path, b"a\n")
    append_file(path, b"b\n")
    assert path.read_bytes() == b"a\n" + b"b\n"


# ---------------------------------------------------------------------------
# Durability: what is fsynced


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the path of every descriptor fsynced through portal.core.fsio."""
    real_fsync = os.fsync
    paths: list[str] = []

    def fsync(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return paths


def test_create_new_fsyncs_the_file_then_its_folder(tmp_path: Path, fsynced: list[str]) -> None:
    create_new(tmp_path / "f", b"data")
    assert fsynced == [str(tmp_path / "f"), str(tmp_path)]
    fsynced.clear()
    create_new(tmp_path / "g", b"data", sync_dir=False)
    assert fsynced == [str(tmp_path / "g")]


def test_new_file_fsyncs_the_file_then_its_folder(tmp_path: Path, fsynced: list[str]) -> None:
    with new_file(tmp_path / "f") as out:
        out.write(b"data")
        assert fsynced == []
    assert fsynced == [str(tmp_path / "f"), str(tmp_path)]


def test_replace_and_append_fsync_the_file_and_the_folder(
    tmp_path: Path, fsynced: list[str]
) -> None:
    replace_file(tmp_path / "state", b"x")
    assert fsynced[-1] == str(tmp_path) and fsynced[0].startswith(str(tmp_path / ".state."))
    fsynced.clear()
    replace_file(tmp_path / "state", b"y", sync_dir=False)
    assert len(fsynced) == 1 and fsynced[0].startswith(str(tmp_path / ".state."))
    fsynced.clear()
    append_file(tmp_path / "sums", b"x")
    assert fsynced == [str(tmp_path / "sums"), str(tmp_path)]


# ---------------------------------------------------------------------------
# Replacing a file with data that arrives in pieces


def test_replace_with_chunks_writes_every_piece_and_returns_size_and_hash(tmp_path: Path) -> None:
    pieces = [os.urandom(n) for n in (0, 1, fsio.CHUNK, 17)]
    size, digest = replace_with_chunks(tmp_path / "f", pieces)
    whole = b"".join(pieces)
    assert (size, digest) == (len(whole), hashlib.sha256(whole).hexdigest())
    assert (tmp_path / "f").read_bytes() == whole
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_replace_with_chunks_keeps_the_old_file_when_the_pieces_fail(tmp_path: Path) -> None:
    # A decryption that finds the file cut short raises after releasing
    # authentic pieces: none of them may appear under the name.
    (tmp_path / "f").write_bytes(b"previous")

    def pieces() -> Iterator[bytes]:
        yield b"released before the error"
        raise ValueError("the rest of the file is missing")

    with pytest.raises(ValueError, match="missing"):
        replace_with_chunks(tmp_path / "f", pieces())
    assert (tmp_path / "f").read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def write_behind_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "write-behind"]


def test_written_behind_the_pieces_are_the_same_file_and_the_helper_ends(tmp_path: Path) -> None:
    pieces = [os.urandom(n) for n in (0, 1, fsio.CHUNK, 17, 3 * fsio.CHUNK + 5, 9)]
    started: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(threading.Thread, "start", start)
        size, digest = replace_with_chunks(tmp_path / "f", pieces, behind=True)
    whole = b"".join(pieces)
    assert (size, digest) == (len(whole), hashlib.sha256(whole).hexdigest())
    assert (tmp_path / "f").read_bytes() == whole
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    # The first MiB is written inline; only the rest goes to the helper.
    assert started == ["write-behind"] and write_behind_threads() == []


def test_a_small_file_written_behind_starts_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_thread(thread: threading.Thread) -> None:
        raise AssertionError(f"thread {thread.name} started for a small file")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    assert replace_with_chunks(tmp_path / "f", [b"a" * 1000, b"b"], behind=True)[0] == 1001


def test_a_failed_write_behind_is_raised_and_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_bytes(b"previous")
    real_write = os.write
    written = [0]

    def write(fd: int, data: bytes | memoryview) -> int:
        if written[0] > 2 * fsio.CHUNK:
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    pieces = (os.urandom(fsio.CHUNK // 2) for _ in range(64))
    with pytest.raises(OSError) as info:
        replace_with_chunks(tmp_path / "f", pieces, behind=True)
    assert info.value.errno == errno.ENOSPC
    assert (tmp_path / "f").read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    assert write_behind_threads() == []


def test_pieces_that_fail_behind_leave_the_old_file_and_end_the_helper(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"previous")

    def pieces() -> Iterator[bytes]:
        for _ in range(8):
            yield os.urandom(fsio.CHUNK // 2)
        raise ValueError("the rest of the file is missing")

    with pytest.raises(ValueError, match="missing"):
        replace_with_chunks(tmp_path / "f", pieces(), behind=True)
    assert (tmp_path / "f").read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    assert write_behind_threads() == []


@pytest.mark.parametrize("behind", [False, True])
def test_a_piece_is_handed_back_only_once_it_is_hashed_and_written(
    tmp_path: Path, behind: bool
) -> None:
    # `open` decrypts the next block into a buffer handed back: one handed
    # back too early would be overwritten before it reached the file.
    pieces = [bytearray(os.urandom(fsio.CHUNK // 2)) for _ in range(9)]
    expected = b"".join(pieces)
    handed_back: list[int] = []

    def written(piece: fsio.Data) -> None:
        handed_back.append(len(piece))
        memoryview(piece)[:] = bytes(len(piece))  # reused at once

    size, digest = replace_with_chunks(tmp_path / "f", pieces, behind=behind, written=written)
    assert (tmp_path / "f").read_bytes() == expected
    assert (size, digest) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert handed_back == [fsio.CHUNK // 2] * 9


@pytest.mark.parametrize("behind", [False, True])
def test_a_large_file_is_sent_to_the_disk_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, behind: bool
) -> None:
    # The kernel is asked to start writeback every WRITEBACK_EVERY bytes, so
    # that the final fsync finds little left; the fsync is still made.
    monkeypatch.setattr(fsio, "WRITEBACK_EVERY", 4 * fsio.CHUNK)
    asked: list[int] = []
    monkeypatch.setattr(fsio, "start_writeback", lambda fd: asked.append(os.fstat(fd).st_size))
    fsynced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsynced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    replace_with_chunks(tmp_path / "f", [bytes(fsio.CHUNK)] * 9, behind=behind)
    assert asked == [4 * fsio.CHUNK, 8 * fsio.CHUNK]
    assert len(fsynced) == 2  # the file, then its folder


# ---------------------------------------------------------------------------
# A file system that cannot fsync a directory (vfat, exFAT on USB drives)


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP])
def test_fsync_dir_accepts_a_file_system_that_refuses_directory_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    real_fsync = os.fsync
    refused: list[int] = []

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            refused.append(fd)
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fsync_dir(tmp_path)
    create_new(tmp_path / "f", b"data")
    with new_file(tmp_path / "g") as out:
        out.write(b"data")
    replace_file(tmp_path / "h", b"data")
    append_file(tmp_path / "i", b"data")
    replace_with_chunks(tmp_path / "j", [b"da", b"ta"])
    assert len(refused) == 6
    assert (tmp_path / "f").read_bytes() == (tmp_path / "j").read_bytes() == b"data"


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC, errno.EROFS])
def test_fsync_dir_raises_every_other_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def fsync(_fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as caught:
        fsync_dir(tmp_path)
    assert caught.value.errno == code


def test_a_file_fsync_refused_with_einval_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a directory's fsync may be refused: a file whose data cannot be
    # made durable is a failure, and the partial file is removed.
    def fsync(_fd: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        create_new(tmp_path / "f", b"data")
    assert not (tmp_path / "f").exists()


@contextlib.contextmanager
def _vfat_mount(tmp_path: Path) -> Iterator[Path]:
    """A real vfat file system on a loop device (fails in CI, skips elsewhere, without one)."""
    require_root("mounting a vfat image")
    mkfs = require_tool("mkfs.vfat")
    image = tmp_path / "usb.img"
    with image.open("wb") as handle:
        handle.truncate(8 * 1024 * 1024)
    subprocess.run([mkfs, str(image)], check=True, capture_output=True)
    mount_point = tmp_path / "usb"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "vfat", "-o", "loop", str(image), str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        # A container whose kernel has no vfat, or that may not mount.
        unsupported_here(f"cannot mount a vfat image here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_every_primitive_works_on_a_real_vfat_file_system(tmp_path: Path) -> None:
    with _vfat_mount(tmp_path) as usb:
        folder = usb / "submissions"
        folder.mkdir(mode=DIR_MODE)
        create_new(folder / "a.age", b"a" * 100_000)
        with new_file(folder / "b.age") as out:
            write_all(out, b"b" * 100_000)
        replace_file(usb / "state", b"one")
        replace_file(usb / "state", b"two")
        append_file(usb / "SHA256SUMS", b"line\n")
        replace_with_chunks(folder / "c.txt", [b"c" * 100_000, b"c"])
        fsync_dir(folder)
        with pytest.raises(FileExistsError):
            create_new(folder / "a.age", b"other")
        assert (
            sha256_file(folder / "a.age", drop_cache=True)
            == hashlib.sha256(b"a" * 100_000).hexdigest()
        )
        assert (usb / "state").read_bytes() == b"two"


# ---------------------------------------------------------------------------
# Modes and inheritance


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_modes_are_private_under_a_permissive_umask(tmp_path: Path, permissive_umask: None) -> None:
    assert (FILE_MODE, DIR_MODE) == (0o600, 0o700)
    create_new(tmp_path / "a", b"x")
    with new_file(tmp_path / "b") as out:
        out.write(b"x")
    replace_file(tmp_path / "c", b"x")
    append_file(tmp_path / "d", b"x")
    os.close(open_lock_file(tmp_path / "e"))
    os.close(open_new(tmp_path / "f"))
    replace_with_chunks(tmp_path / "g", [b"x"])
    for name in "abcdefg":
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_store_folders_and_staged_files_are_private_under_a_permissive_umask(
    tmp_path: Path, permissive_umask: None
) -> None:
    store = SubmissionStore(tmp_path / "data")
    store.initialise()
    staging = store.begin()
    _relpath, attachment = staging.create_attachment()
    attachment.write(b"ciphertext")
    attachment.finish()
    manifest = staging.create_manifest()
    manifest.write(b"ciphertext")
    manifest.finish()
    submission_id = store.commit(staging)
    for dirpath, _dirnames, filenames in os.walk(tmp_path / "data"):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == DIR_MODE, dirpath
        for name in filenames:
            path = os.path.join(dirpath, name)
            assert stat.S_IMODE(os.stat(path).st_mode) == FILE_MODE, path
    assert (tmp_path / "data" / "submissions" / submission_id / "files" / "1.age").exists()


@pytest.fixture
def open_flags(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The flags of the first os.open of each path.

    Python's os.open adds O_CLOEXEC by itself (PEP 446), so checking the
    descriptor afterwards proves nothing about our code; the flags passed are
    what a port to another language or a raw syscall would keep.
    """
    real_open = os.open
    flags_by_path: dict[str, int] = {}

    def recording_open(path: os.PathLike[str] | str, flags: int, *args: int, **kwargs: int) -> int:
        flags_by_path.setdefault(os.fspath(path), flags)  # the first open: the creation
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    return flags_by_path


_SAFE = os.O_NOFOLLOW | os.O_CLOEXEC
_EXCLUSIVE = os.O_CREAT | os.O_EXCL | _SAFE


def test_every_open_is_close_on_exec_and_refuses_links(
    tmp_path: Path, open_flags: dict[str, int]
) -> None:
    create_new(tmp_path / "a", b"x")
    with new_file(tmp_path / "b") as out:
        out.write(b"x")
    os.close(open_new(tmp_path / "c"))
    replace_file(tmp_path / "d", b"x")
    append_file(tmp_path / "e", b"x")
    os.close(open_lock_file(tmp_path / "lock"))
    replace_with_chunks(tmp_path / "g", [b"x"])
    sha256_file(tmp_path / "a")
    fsync_dir(tmp_path)
    for name in "abc":
        assert open_flags[str(tmp_path / name)] & _EXCLUSIVE == _EXCLUSIVE, name
    for replaced in ("d", "g"):
        temp = next(p for p in open_flags if p.startswith(str(tmp_path / f".{replaced}.")))
        assert open_flags[temp] & _EXCLUSIVE == _EXCLUSIVE
    for name in ("e", "lock"):
        assert open_flags[str(tmp_path / name)] & _SAFE == _SAFE, name
    assert open_flags[str(tmp_path / "e")] & os.O_APPEND
    assert open_flags[str(tmp_path)] & os.O_CLOEXEC


def test_staged_files_are_created_exclusively_and_close_on_exec(
    tmp_path: Path, open_flags: dict[str, int]
) -> None:
    # Staging once opened its files without O_CLOEXEC.
    store = SubmissionStore(tmp_path / "data")
    store.initialise()
    staging = store.begin()
    relpath, attachment = staging.create_attachment()
    manifest = staging.create_manifest()
    for staged in (attachment, manifest):
        assert open_flags[str(staged.path)] & _EXCLUSIVE == _EXCLUSIVE, staged.path
    assert relpath == "files/1.age"
    staging.discard()


# ---------------------------------------------------------------------------
# Hashing


@pytest.mark.parametrize("drop_cache", [False, True])
def test_sha256_file_hashes_across_block_boundaries(tmp_path: Path, drop_cache: bool) -> None:
    for size in (0, 1, fsio.CHUNK - 1, fsio.CHUNK, 2 * fsio.CHUNK + 17):
        data = os.urandom(size)
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        assert sha256_file(path, drop_cache=drop_cache) == hashlib.sha256(data).hexdigest()
