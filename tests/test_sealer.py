"""The sealer process (portal.server.sealer): the same age file as the worker makes, or none.

Every test runs a real sealer process. What is checked: the file it writes
is the age file of exactly the bytes sent, with their SHA-256 and size; one
sealer seals file after file, also after a dropped one; a sealer that dies
fails its file and is replaced; the free-space floor holds there as in the
worker, under the workers' own lock; the sealer gets no environment, cannot
dump core, ends with its worker and on a broken message; and through the
real server, a large upload is sealed there and never reaches the disk in
plaintext.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal.core.age import X25519Identity, decrypt, parse_identities
from portal.server.freespace import FreeSpaceFloor
from portal.server.intake import Submission
from portal.server.sealer import SEALER_MIN_BODY, SLOT_BYTES, SLOTS, Sealer, SealerError, SealerPool
from portal.server.store import StorageFullError, StoreError, SubmissionStore, translate_os_error
from portal.testing.live import LiveServer, open_submission, sealer_pids
from tests.support import require_tool

MIB = 1024 * 1024
PIECE = 65_521  # not a divisor of a slot or of an age chunk


@pytest.fixture
def pool(identity: X25519Identity) -> Iterator[SealerPool]:
    pool = SealerPool([identity.recipient])
    yield pool
    pool.stop()


def seal(sealer: Sealer, path: Path, data: bytes) -> tuple[str, int]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        sealer.open(fd)
        for start in range(0, len(data), PIECE):
            sealer.write(data[start : start + PIECE])
        return sealer.close()
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "size",
    [0, 1, SLOT_BYTES - 1, SLOT_BYTES, SLOTS * SLOT_BYTES + 3 * 65536 + 7],
    ids=["empty", "one-byte", "slot-less-one", "one-slot", "past-the-ring"],
)
def test_a_sealed_file_is_the_age_file_of_exactly_the_bytes_sent(
    pool: SealerPool, identity: X25519Identity, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    sealer = pool.take()
    assert sealer is not None
    digest, sealed_size = seal(sealer, tmp_path / "f.age", data)
    assert sealed_size == size
    assert digest == hashlib.sha256(data).hexdigest()
    assert decrypt((tmp_path / "f.age").read_bytes(), [identity]) == data
    # No plaintext stays in the shared ring once the file is done.
    assert sealer._ring[:] == bytes(SLOTS * SLOT_BYTES)


def test_the_age_cli_opens_what_the_sealer_wrote(
    pool: SealerPool, identity: X25519Identity, tmp_path: Path
) -> None:
    data = os.urandom(3 * SLOT_BYTES + 12_345)
    sealer = pool.take()
    assert sealer is not None
    seal(sealer, tmp_path / "f.age", data)
    (tmp_path / "key.txt").write_text(f"{identity}\n")
    plain = subprocess.run(
        [require_tool("age"), "-d", "-i", str(tmp_path / "key.txt"), str(tmp_path / "f.age")],
        capture_output=True,
        check=True,
    ).stdout
    assert plain == data


def test_one_sealer_seals_file_after_file_also_after_a_dropped_one(
    pool: SealerPool, identity: X25519Identity, tmp_path: Path
) -> None:
    sealer = pool.take()
    assert sealer is not None
    first = os.urandom(2 * SLOT_BYTES + 1)
    seal(sealer, tmp_path / "1.age", first)
    # A file dropped half way (the witness went away): its slots come back.
    fd = os.open(tmp_path / "2.age", os.O_WRONLY | os.O_CREAT, 0o600)
    sealer.open(fd)
    sealer.write(os.urandom(SLOTS * SLOT_BYTES + 5))
    sealer.abort()
    os.close(fd)
    pool.give_back(sealer)
    again = pool.take()
    assert again is sealer and not sealer.broken
    third = os.urandom(SLOTS * SLOT_BYTES * 2)
    assert seal(sealer, tmp_path / "3.age", third)[1] == len(third)
    assert decrypt((tmp_path / "1.age").read_bytes(), [identity]) == first
    assert decrypt((tmp_path / "3.age").read_bytes(), [identity]) == third


def test_a_pool_that_cannot_start_a_sealer_lends_none(
    pool: SealerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr("portal.server.sealer.subprocess.Popen", no_process)
    open_before = len(os.listdir("/proc/self/fd"))
    pool.start()  # a worker still boots
    # The caller then seals the file itself.
    assert pool.take() is None
    assert len(os.listdir("/proc/self/fd")) == open_before  # nothing left open


def test_a_pool_lends_each_sealer_once_and_then_says_none(pool: SealerPool) -> None:
    sealer = pool.take()
    assert sealer is not None
    # The caller then seals the file itself (AttachmentSink's PieceWorker).
    assert pool.take() is None
    pool.give_back(sealer)
    assert pool.take() is sealer


def test_a_killed_sealer_fails_its_file_and_the_pool_starts_another(
    pool: SealerPool, identity: X25519Identity, tmp_path: Path
) -> None:
    sealer = pool.take()
    assert sealer is not None
    fd = os.open(tmp_path / "f.age", os.O_WRONLY | os.O_CREAT, 0o600)
    sealer.open(fd)
    sealer.write(os.urandom(SLOT_BYTES))
    os.kill(sealer.pid, signal.SIGKILL)
    with pytest.raises(SealerError) as failed:
        # More than the ring holds: the writer must wait for a dead process.
        for _ in range(4 * SLOTS):
            sealer.write(os.urandom(SLOT_BYTES))
        sealer.close()
    os.close(fd)
    assert failed.value.errno == errno.EPIPE
    assert sealer.broken
    pool.give_back(sealer)
    replacement = pool.take()
    assert replacement is not None and replacement.pid != sealer.pid
    data = os.urandom(SLOT_BYTES + 3)
    seal(replacement, tmp_path / "g.age", data)
    assert decrypt((tmp_path / "g.age").read_bytes(), [identity]) == data


def test_a_sealer_killed_mid_upload_fails_the_submission_and_keeps_nothing(
    store: SubmissionStore, identity: X25519Identity, pool: SealerPool
) -> None:
    submission = Submission(store, [identity.recipient])
    sink = submission.open_attachment("big.bin", "application/octet-stream", sealers=pool)
    sink.write(os.urandom(PIECE))
    assert sink._sealer is not None
    os.kill(sink._sealer.pid, signal.SIGKILL)
    with pytest.raises(StoreError):
        for _ in range(4 * SLOTS * SLOT_BYTES // PIECE):
            sink.write(os.urandom(PIECE))
        submission.commit({"testimony": "t"}, "en")
    submission.discard()  # what the request's teardown does
    assert store.ids() == []
    assert list(store.staging_dir.iterdir()) == []
    # The next large file gets a new sealer.
    replacement = pool.take()
    assert replacement is not None and not replacement.broken


def test_a_sealer_that_ended_between_files_leaves_the_next_one_to_the_worker(
    store: SubmissionStore, identity: X25519Identity, pool: SealerPool
) -> None:
    pool.start()
    idle = pool.take()
    assert idle is not None
    pool.give_back(idle)
    os.kill(idle.pid, signal.SIGKILL)
    wait_until_gone(idle.pid)
    submission = Submission(store, [identity.recipient])
    sink = submission.open_attachment("big.bin", "application/octet-stream", sealers=pool)
    payload = os.urandom(2 * MIB + 5)
    for start in range(0, len(payload), PIECE):
        sink.write(payload[start : start + PIECE])
    assert sink._sealer is None  # sealed in the worker
    submission_id = submission.commit({"testimony": "t"}, "en")
    [attachment] = submission.committed_attachments
    assert attachment.sha256 == hashlib.sha256(payload).hexdigest()
    stored = (store.path(submission_id) / attachment.path).read_bytes()
    assert decrypt(stored, [identity]) == payload


def test_the_floor_refuses_a_sealers_write_as_a_full_disk_and_empties_the_file(
    identity: X25519Identity, tmp_path: Path
) -> None:
    floor = FreeSpaceFloor(tmp_path, 0)
    # Leave 4 MiB above the floor: the first slots fit, a 32 MiB file cannot.
    floor.floor_bytes = floor.free_bytes() - 4 * MIB
    pool = SealerPool([identity.recipient], tmp_path, floor.floor_bytes, floor.lock_fd)
    try:
        sealer = pool.take()
        assert sealer is not None
        with pytest.raises(SealerError) as refused:
            seal(sealer, tmp_path / "f.age", os.urandom(32 * MIB))
        assert refused.value.errno == errno.ENOSPC
        assert isinstance(translate_os_error(refused.value), StorageFullError)
        assert (tmp_path / "f.age").stat().st_size == 0
        # The sealer is free for the next file.
        pool.give_back(sealer)
        assert pool.take() is sealer and not sealer.broken
    finally:
        pool.stop()


def test_a_sealer_writes_under_the_workers_own_floor_lock(
    identity: X25519Identity, tmp_path: Path
) -> None:
    floor = FreeSpaceFloor(tmp_path, 0)
    pool = SealerPool([identity.recipient], tmp_path, 0, floor.lock_fd)
    finished = threading.Event()
    try:
        sealer = pool.take()
        assert sealer is not None

        def run() -> None:
            seal(sealer, tmp_path / "f.age", os.urandom(SLOT_BYTES))
            finished.set()

        with floor._lock:  # what a worker holds while it writes
            thread = threading.Thread(target=run)
            thread.start()
            # The sealer cannot write (not even the header) while it is held.
            assert not finished.wait(1.0)
            assert (tmp_path / "f.age").stat().st_size == 0
        thread.join(60)
        assert finished.is_set()
    finally:
        pool.stop()


def test_the_sealer_gets_no_environment_and_cannot_dump_core(
    pool: SealerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTAL_SECRET_KEY", "a-secret-the-sealer-must-not-see")
    # start() returns once the sealer has started, hardened (a worker's
    # sealer also inherits the worker's limit from its first instruction).
    pool.start()
    sealer = pool.take()
    assert sealer is not None
    environ = Path(f"/proc/{sealer.pid}/environ").read_bytes().split(b"\0")
    names = {entry.partition(b"=")[0] for entry in environ if entry}
    assert names <= {b"PYTHONPATH", b"PYTHONDONTWRITEBYTECODE"}, names
    limits = Path(f"/proc/{sealer.pid}/limits").read_text()
    [line] = [row for row in limits.splitlines() if row.startswith("Max core file size")]
    assert line.split()[4:6] == ["0", "0"], line


def test_a_sealer_ends_when_its_worker_is_killed(identity: X25519Identity, tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from portal.core.age import parse_recipients\n"
        "from portal.server.sealer import SealerPool\n"
        "pool = SealerPool(parse_recipients(sys.argv[1]))\n"
        "pool.start()\n"
        "sealer = pool.take()\n"
        "print(sealer.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script, str(identity.recipient)], stdout=subprocess.PIPE
    )
    try:
        assert worker.stdout is not None
        sealer_pid = int(worker.stdout.readline())
        assert alive(sealer_pid)
        worker.kill()
        worker.wait()
        # The kernel closed the worker's end of the socket: the sealer ends.
        wait_until_gone(sealer_pid)
    finally:
        worker.kill()
        worker.wait()


@pytest.mark.parametrize(
    "message",
    [b"D" + (SLOTS).to_bytes(4, "little") + (1).to_bytes(4, "little"), b"C", b"?"],
    ids=["slot-outside-the-ring", "close-without-a-file", "unknown"],
)
def test_a_broken_message_ends_the_sealer_quietly(
    pool: SealerPool, capfd: pytest.CaptureFixture[str], message: bytes
) -> None:
    sealer = pool.take()
    assert sealer is not None
    if message.startswith(b"D"):
        sealer.open(os.open(os.devnull, os.O_WRONLY))
    sealer._socket.send(message)
    wait_until_gone(sealer.pid)
    assert sealer._process.wait() == 1
    assert capfd.readouterr().err == "testimony-portal sealer: stopped (ValueError)\n"


def test_ctrl_c_leaves_the_sealer_to_end_with_its_worker(
    pool: SealerPool, identity: X25519Identity, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pool.start()
    sealer = pool.take()
    assert sealer is not None
    os.kill(sealer.pid, signal.SIGINT)
    data = os.urandom(SLOT_BYTES + 1)
    seal(sealer, tmp_path / "f.age", data)
    assert decrypt((tmp_path / "f.age").read_bytes(), [identity]) == data
    assert capfd.readouterr().err == ""


def test_a_second_large_file_at_once_is_sealed_in_the_worker(
    store: SubmissionStore, identity: X25519Identity
) -> None:
    pool = SealerPool([identity.recipient])
    try:
        submission = Submission(store, [identity.recipient])
        first = submission.open_attachment("a.bin", "application/octet-stream", sealers=pool)
        second = submission.open_attachment("b.bin", "application/octet-stream", sealers=pool)
        payloads = [os.urandom(3 * MIB + 1), os.urandom(3 * MIB + 2)]
        for start in range(0, 3 * MIB + 2, PIECE):
            first.write(payloads[0][start : start + PIECE])
            second.write(payloads[1][start : start + PIECE])
        assert first._sealer is not None and second._sealer is None
        submission_id = submission.commit({"testimony": "t"}, "en")
        for attachment, payload in zip(submission.committed_attachments, payloads, strict=True):
            assert attachment.sha256 == hashlib.sha256(payload).hexdigest()
            stored = (store.path(submission_id) / attachment.path).read_bytes()
            assert decrypt(stored, [identity]) == payload
        # Given back when the part ended.
        assert pool.take() is not None
    finally:
        pool.stop()


def written_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no wchar in /proc/{pid}/io")


@pytest.mark.slow
def test_a_large_upload_is_sealed_by_the_sealer_and_never_on_disk_in_plaintext(
    live_server: LiveServer,
) -> None:
    deadline = time.monotonic() + 30
    while len(pids := sealer_pids(live_server.process.pid)) < 2:  # started with the workers
        assert time.monotonic() < deadline, f"sealers did not start: {pids}"
        time.sleep(0.1)
    before = {pid: written_bytes(pid) for pid in pids}
    marker = b"SEALED-" + os.urandom(8).hex().encode()
    half = os.urandom(SEALER_MIN_BODY // 2)
    attachment = half + marker + half
    response = live_server.client().submit(
        "a large upload", files=[("large.bin", attachment, "application/octet-stream")]
    )
    assert response.status == 200, response.body
    sealed = sum(written_bytes(pid) - before[pid] for pid in pids)
    assert sealed > len(attachment), "the sealer did not write the attachment"
    live_server.stop()
    for path in live_server.data_dir.rglob("*"):
        if path.is_file():
            assert marker not in path.read_bytes(), path
    [folder] = (live_server.data_dir / "submissions").iterdir()
    identities = parse_identities(live_server.identity_file.read_text())
    # Checks each attachment's size and SHA-256 against the manifest.
    manifest, files = open_submission(folder, identities)
    [entry] = manifest["attachments"]
    assert entry["sha256"] == hashlib.sha256(attachment).hexdigest()
    assert files[entry["path"]] == attachment
