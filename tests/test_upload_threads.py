"""Uploads on helper threads (issue 25): same bytes, same hash, bounded memory, no thread left.

Past a file's first MiB the intake hashes on one helper thread and encrypts
and writes on another (`PieceWorker`), beside the request's thread. What
must hold: every byte arrives in order, the manifest's SHA-256 is of the
plaintext, an error on a helper thread fails the submission and keeps
nothing, a stalled worker holds a bounded amount, and no path leaves a
thread behind. `bench/bench_speed.py --rows upload` measures the speed.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from portal.core.age import Writer, X25519Identity, decrypt
from portal.server.intake import IntakeError, PieceWorker, Submission
from portal.server.store import StagedFile, StorageFullError, SubmissionStore
from tests.support import failing_after

MIB = 1 << 20
# age's STREAM chunk (c2sp.org/age): 64 KiB of plaintext, sealed with a 16-byte tag.
CHUNK_SIZE = 64 * 1024
ENC_CHUNK_SIZE = CHUNK_SIZE + 16
HELPER_THREADS = ("intake-piece", "staged-write")


def helper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in HELPER_THREADS and t.is_alive()]


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> object:
    before = set(helper_threads())
    yield
    assert set(helper_threads()) <= before, "a helper thread outlived its attachment"


# --- PieceWorker ---


def test_pieces_are_worked_in_order_past_the_inline_part_on_one_thread() -> None:
    seen: list[bytes] = []
    threads: set[str] = set()

    def work(piece: bytes) -> None:
        threads.add(threading.current_thread().name)
        seen.append(piece)

    worker = PieceWorker(work)
    pieces = [os.urandom(size) for size in [1000, 65536, 7, 300_000] * 12]
    for piece in pieces:
        worker.put(piece)
    assert worker.threaded
    worker.finish()
    assert b"".join(seen) == b"".join(pieces)
    # The first MiB on the caller's thread, the rest on the worker's.
    assert threads == {threading.current_thread().name, "intake-piece"}
    assert sum(len(p) for p in seen[: len(seen) - 1]) >= PieceWorker.INLINE_BYTES


def test_an_error_on_the_worker_thread_is_raised_in_the_callers() -> None:
    def work(piece: bytes) -> None:
        if threading.current_thread().name == "intake-piece":
            raise OSError("disk gone")

    worker = PieceWorker(work)
    with pytest.raises(OSError, match="disk gone"):
        for _ in range(100):
            worker.put(b"x" * (256 * 1024))
        worker.finish()
    worker.close()
    assert not worker._thread or not worker._thread.is_alive()


def test_a_stalled_worker_holds_a_bounded_amount_and_drop_skips_the_rest() -> None:
    release = threading.Event()
    worked: list[int] = []

    def work(piece: bytes) -> None:
        if threading.current_thread().name == "intake-piece":
            release.wait(timeout=120)
        worked.append(len(piece))

    worker = PieceWorker(work)
    piece = os.urandom(65536)
    accepted = 0
    stop = threading.Event()

    def produce() -> None:
        nonlocal accepted
        while not stop.is_set():
            try:
                worker.put(piece)
            except IntakeError:
                return  # closed meanwhile
            accepted += len(piece)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    last = -1
    while accepted != last:  # until put() blocks on the full queue
        last = accepted
        time.sleep(0.5)
    past_inline = accepted - PieceWorker.INLINE_BYTES
    bound = (PieceWorker.DEPTH + 2) * PieceWorker.BATCH_BYTES + len(piece)
    assert 0 < past_inline <= bound, (past_inline, bound)
    stop.set()
    closer = threading.Thread(target=worker.close, kwargs={"drop": True})
    closer.start()
    while not worker._drop:
        time.sleep(0.01)
    release.set()
    closer.join(timeout=120)
    producer.join(timeout=120)
    assert not producer.is_alive()
    # The batch being worked on finished; the ones waiting were skipped.
    assert sum(worked) <= PieceWorker.INLINE_BYTES + PieceWorker.BATCH_BYTES + len(piece)
    with pytest.raises(IntakeError):
        worker.put(piece)


def test_a_slow_upload_hands_over_small_batches_and_a_fast_one_large_batches() -> None:
    # Memory: an upload arriving slowly (the worker waiting for work) holds
    # at most IDLE_BATCH_BYTES between its pieces, not BATCH_BYTES; only one
    # the worker cannot keep up with gathers full batches.
    sizes: list[int] = []
    busy = threading.Event()
    busy.set()

    def work(piece: bytes) -> None:
        sizes.append(len(piece))
        if threading.current_thread().name == "intake-piece":
            busy.wait(timeout=60)

    piece = os.urandom(64 * 1024)
    slow = PieceWorker(work)
    for _ in range(PieceWorker.INLINE_BYTES // len(piece)):
        slow.put(piece)  # worked inline
    inline = len(sizes)
    for _ in range(40):
        deadline = time.monotonic() + 30
        while slow.threaded and not slow._idle and time.monotonic() < deadline:
            time.sleep(0.001)  # a piece now and then: the worker waits between them
        slow.put(piece)
    slow.finish()
    handed = sizes[inline:]
    assert sum(handed) == 40 * len(piece)
    assert max(handed) <= PieceWorker.IDLE_BATCH_BYTES < PieceWorker.BATCH_BYTES

    sizes.clear()
    busy.clear()  # the worker falls behind: it is never waiting for work
    fast = PieceWorker(work)
    pieces = (PieceWorker.INLINE_BYTES + 3 * PieceWorker.BATCH_BYTES) // len(piece)

    def feed() -> None:
        for _ in range(pieces):
            fast.put(piece)

    feeder = threading.Thread(target=feed)
    feeder.start()
    deadline = time.monotonic() + 60

    def full_batch_waiting() -> bool:
        # Queued, or being handed over to a full queue.
        waiting = list(fast._queue.queue) if fast._queue is not None else []
        queued = any(sum(map(len, batch or [])) >= PieceWorker.BATCH_BYTES for batch in waiting)
        return queued or fast._batched >= PieceWorker.BATCH_BYTES

    while not full_batch_waiting():  # gathered while the worker was behind
        assert time.monotonic() < deadline, "no full batch while the worker was busy"
        time.sleep(0.001)
    busy.set()
    feeder.join(timeout=60)
    fast.finish()
    handed = sizes[PieceWorker.INLINE_BYTES // len(piece) :]
    assert sum(handed) == pieces * len(piece) - PieceWorker.INLINE_BYTES
    assert PieceWorker.BATCH_BYTES in handed
    assert max(handed) <= PieceWorker.BATCH_BYTES


# --- attachments through the helper threads ---


@pytest.mark.parametrize("mutable", [False, True], ids=["bytes", "reused-bytearray"])
def test_a_large_attachment_is_hashed_and_encrypted_byte_for_byte(
    store: SubmissionStore, identity: X25519Identity, mutable: bool
) -> None:
    payload = os.urandom(5 * MIB + 12_345)
    submission = Submission(store, [identity.recipient])
    sink = submission.open_attachment("big.bin", "application/octet-stream")
    scratch = bytearray()
    for start in range(0, len(payload), 65_521):
        piece = payload[start : start + 65_521]
        if mutable:
            # A caller may reuse its buffer at once: the sink must have copied it.
            scratch[:] = piece
            sink.write(scratch)
            scratch[:] = bytes(len(scratch))
        else:
            sink.write(piece)
    sink.seek(0)
    submission_id = submission.commit({"testimony": "t"}, "en")
    [attachment] = submission.committed_attachments
    assert attachment.size == len(payload)
    assert attachment.sha256 == hashlib.sha256(payload).hexdigest()
    stored = (store.path(submission_id) / attachment.path).read_bytes()
    assert decrypt(stored, [identity]) == payload


def test_disk_full_on_a_helper_thread_fails_the_submission_and_keeps_nothing(
    tmp_path: Path, identity: X25519Identity
) -> None:
    store = SubmissionStore(tmp_path / "data", opener=failing_after(3 * MIB))
    store.initialise()
    submission = Submission(store, [identity.recipient])
    sink = submission.open_attachment("big.bin", "application/octet-stream")
    with pytest.raises(StorageFullError):
        for _ in range(8 * MIB // 65536):
            sink.write(os.urandom(65536))
        submission.commit({"testimony": "t"}, "en")
    submission.discard()
    assert store.ids() == []
    assert list(store.staging_dir.iterdir()) == []


def test_a_discarded_upload_ends_its_helper_threads(
    store: SubmissionStore, identity: X25519Identity
) -> None:
    submission = Submission(store, [identity.recipient])
    sink = submission.open_attachment("big.bin", "application/octet-stream")
    for _ in range(4 * MIB // 65536):
        sink.write(os.urandom(65536))
    assert "intake-piece" in {t.name for t in helper_threads()}
    # The request ends without a commit (the client went away): nothing kept.
    submission.discard()
    assert list(store.staging_dir.iterdir()) == []


def test_the_staged_file_of_an_upload_is_written_by_the_piece_worker_itself(
    store: SubmissionStore, identity: X25519Identity
) -> None:
    submission = Submission(store, [identity.recipient])
    sink = submission.open_attachment("big.bin", "application/octet-stream")
    for _ in range(3 * MIB // 65536):
        sink.write(os.urandom(65536))
    assert sink._staged is not None and not sink._staged.threaded
    sink.seek(0)
    submission.discard()


# --- the pieces underneath ---


def test_keep_inline_writes_a_large_file_without_a_thread_and_starts_write_back(
    store: SubmissionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(StagedFile, "SYNC_EVERY", 256 * 1024)
    started: list[int] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: started.append(fd))
    staging = store.begin()
    _relpath, staged = staging.create_attachment()
    staged.keep_inline()
    data = os.urandom(3 * StagedFile.INLINE_BYTES + 4321)
    for start in range(0, len(data), 70_000):
        staged.write(data[start : start + 70_000])
    assert not staged.threaded
    staged.finish()
    assert staged.path.read_bytes() == data
    assert len(started) >= len(data) // StagedFile.SYNC_EVERY - 1
    staging.discard()


class CountingSink(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: object) -> int:
        self.writes += 1
        return super().write(data)  # type: ignore[arg-type]  # a buffer


@pytest.mark.parametrize("mutable", [False, True], ids=["bytes", "bytearray"])
def test_a_large_write_is_sealed_in_few_writes_with_the_same_bytes(
    identity: X25519Identity, mutable: bool
) -> None:
    plaintext = os.urandom(20 * CHUNK_SIZE + 999)
    seed = os.urandom(32)

    def rng_from(seed: bytes) -> object:
        stream = hashlib.shake_256(seed).digest(4096)
        position = [0]

        def rng(n: int) -> bytes:
            position[0] += n
            return stream[position[0] - n : position[0]]

        return rng

    by_chunk = CountingSink()
    with Writer(by_chunk, [identity.recipient], rng=rng_from(seed)) as writer:  # type: ignore[arg-type]
        for start in range(0, len(plaintext), CHUNK_SIZE):
            writer.write(plaintext[start : start + CHUNK_SIZE])
    batched = CountingSink()
    with Writer(batched, [identity.recipient], rng=rng_from(seed)) as writer:  # type: ignore[arg-type]
        piece = 5 * CHUNK_SIZE + 17
        for start in range(0, len(plaintext), piece):
            part = plaintext[start : start + piece]
            writer.write(bytearray(part) if mutable else part)
    assert batched.getvalue() == by_chunk.getvalue()
    assert decrypt(batched.getvalue(), [identity]) == plaintext
    chunks = len(plaintext) // CHUNK_SIZE + 1
    assert by_chunk.writes == 1 + chunks  # the header, then one write per chunk
    assert batched.writes < by_chunk.writes / 2
    assert len(batched.getvalue()) > chunks * (ENC_CHUNK_SIZE - CHUNK_SIZE)


def test_the_writer_keeps_no_reference_to_a_large_piece_between_writes(
    identity: X25519Identity,
) -> None:
    # A held-back tail viewed in place would keep the whole piece alive while
    # a slow upload waits for its next bytes.
    writer = Writer(io.BytesIO(), [identity.recipient])
    small = os.urandom(CHUNK_SIZE)
    large = os.urandom(MIB + 5)
    before = sys.getrefcount(small), sys.getrefcount(large)
    writer.write(large)
    assert sys.getrefcount(large) == before[1]
    writer.write(small)  # a small piece may be held by reference (saves a copy)
    assert sys.getrefcount(small) >= before[0]
    writer.close()
    assert sys.getrefcount(small) == before[0]
