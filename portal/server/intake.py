"""Turning one request's parts into an encrypted, committed submission.

Each uploaded file is encrypted as its bytes arrive: Werkzeug's multipart
parser calls `AttachmentSink.write()` piece by piece (the sink is returned by
the request's stream factory), and the sink hashes the plaintext and pushes it
through an age `Writer` into a staging file; past a file's first MiB that work
runs on a helper thread (`PieceWorker`), beside the parsing of the next piece.
A file of a large request goes instead to the worker's sealer process, if
it is free (`portal.server.sealer`), which does the same work outside the
worker's interpreter lock. Plaintext exists only in memory, a few pieces at
a time. The manifest, with
each attachment's name, type, size and SHA-256, is encrypted last, and then
the store commits the whole directory. The manifest's format, its writer and
its parser live in `portal.core.manifest`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import queue
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import BinaryIO

from portal.core.age import Recipient, Writer, X25519Identity
from portal.core.manifest import Attachment, SealedQuestionnaire, build_manifest
from portal.core.replykey import ReplyKey
from portal.server.sealer import Sealer, SealerError, SealerPool
from portal.server.store import StagedFile, Staging, SubmissionStore, translate_os_error

# Names and types come from the witness's browser: keep them, but bounded,
# so a hostile client cannot bloat the manifest. The reviewer tool makes
# them safe for its file system; here they are only data.
MAX_NAME_CHARS = 1024
MAX_TYPE_CHARS = 255


class IntakeError(Exception):
    """A submission could not be stored; nothing of it was kept."""


def _clean_text(value: str, limit: int) -> str:
    # Control characters (NUL included) have no place in a file name or a
    # MIME type; they are dropped, the rest kept as the witness sent it.
    cleaned = "".join(ch for ch in value if unicodedata.category(ch) != "Cc")
    return cleaned[:limit]


class PieceWorker:
    """Runs `work` on the pieces handed over, in order, on a helper thread past the first MiB.

    An upload's CPU is shared by the thread that receives and parses the body
    and the work done on each piece (SHA-256, encryption, writing the
    ciphertext). hashlib and the ChaCha20-Poly1305 of cryptography release
    the GIL, so on a second core the piece work runs beside the parsing of
    the next piece instead of after it (issue 25). Pieces (immutable `bytes`)
    are handed over without a copy, gathered `BATCH_BYTES` at a time and
    joined into one on the worker's thread: each hand-over wakes a thread,
    and every call that lets go of the GIL (a hash, each 64 KiB chunk's
    encryption, a write) must wait to get it back while the parsing thread
    runs Python. 1 MiB batches in place of 256 KiB took a 256 MiB upload
    from 0.54 to 0.57-0.62 of `age -e` (through the real server, each run
    beside `age -e`; docs/BENCHMARKS.md, "Round 3"). A batch goes at
    `BATCH_BYTES`, or already at `IDLE_BATCH_BYTES` while the worker waits
    for work: an upload that arrives slowly (over Tor, or an attacker
    trickling many at once) then holds at most about 256 KiB between its
    pieces, as before, and only one the worker cannot keep up with gathers
    1 MiB. At most `DEPTH` batches wait, and `put()` blocks beyond that, so
    memory stays bounded: about 7 MiB of plaintext for a fast upload (4
    waiting, the one being worked on and its joined copy, the one being
    gathered). The first `INLINE_BYTES` are
    worked on by the caller itself: most files are small, and starting a
    thread for them would cost more than it saves.

    One helper, not one per kind of work: a separate hashing thread made the
    parsing no faster and cost more CPU in hand-overs (bench/bench_speed.py,
    docs/BENCHMARKS.md), which a busy 2-core server cannot spare; with 1 MiB
    batches it was slower still (0.48-0.55 against 0.53-0.57 of `age -e`,
    alternating, round 3).

    An error in the thread is raised by the next `put()` or by `finish()`.
    `close()` ends the thread on every path (`drop` skips what is left).
    """

    INLINE_BYTES = 1 << 20
    BATCH_BYTES = 1 << 20
    IDLE_BATCH_BYTES = 256 * 1024
    DEPTH = 4

    def __init__(self, work: Callable[[bytes], object]) -> None:
        self._work = work
        self._inline_left = self.INLINE_BYTES
        # Made with the thread: most files never need either.
        self._queue: queue.Queue[list[bytes] | None] | None = None
        self._batch: list[bytes] = []
        self._batched = 0
        self._thread: threading.Thread | None = None
        # True while the worker waits for a batch (set on its thread, read
        # on the caller's: a stale value only changes a batch's size).
        self._idle = False
        self._error: BaseException | None = None
        self._drop = False
        self._closed = False

    @property
    def threaded(self) -> bool:
        return self._thread is not None

    def put(self, piece: bytes) -> None:
        if self._closed:
            raise IntakeError("write to a finished attachment")
        self._raise_pending()
        if self._thread is None:
            if len(piece) <= self._inline_left:
                self._inline_left -= len(piece)
                self._work(piece)
                return
            self._queue = queue.Queue(maxsize=self.DEPTH)
            self._thread = threading.Thread(
                target=self._run, args=(self._queue,), name="intake-piece", daemon=True
            )
            self._thread.start()
        self._batch.append(piece)
        self._batched += len(piece)
        if self._batched >= self.BATCH_BYTES or (
            self._idle and self._batched >= self.IDLE_BATCH_BYTES
        ):
            self._hand_over()

    def _hand_over(self) -> None:
        if self._batch and self._queue is not None:
            self._queue.put(self._batch)
            self._batch = []
            self._batched = 0

    def _run(self, batches: queue.Queue[list[bytes] | None]) -> None:
        while True:
            self._idle = batches.empty()
            batch = batches.get()
            self._idle = False
            if batch is None:
                break
            if self._error is not None or self._drop:
                continue  # keep emptying the queue so that put() never blocks
            try:
                # One piece for the work: fewer, longer calls that release the GIL.
                self._work(batch[0] if len(batch) == 1 else b"".join(batch))
            except BaseException as exc:  # raised again in the request's thread
                self._error = exc

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self, *, drop: bool = False) -> None:
        """Wait until every piece handed over is done (or, with `drop`, skipped); end the thread."""
        self._drop = self._drop or drop
        if not self._closed:
            self._closed = True
            if self._thread is not None and self._queue is not None:
                if not self._drop:
                    self._hand_over()
                self._queue.put(None)
                self._thread.join()
            self._batch = []
            # The work is usually a method of the worker's owner (a sink), which
            # holds the worker: let go of it, so that the two are not a reference
            # cycle that only the garbage collector frees (issue 25, round 7).
            self._work = _closed_work

    def finish(self) -> None:
        """`close()`, then raise the error the thread met, if any."""
        self.close()
        self._raise_pending()


def _closed_work(piece: bytes) -> None:
    raise IntakeError("write to a finished attachment")


def _closed_create() -> tuple[str, StagedFile]:
    # `create` is a closure over the sink's submission, which holds the sink:
    # a finished or abandoned sink lets go of it (see `PieceWorker.close`).
    raise IntakeError("write to a finished attachment")


class AttachmentSink:
    """A write-only stream that encrypts and hashes one uploaded file.

    Werkzeug's form parser writes each piece as it arrives and calls
    `seek(0)` when the part ends; that is when the ciphertext is finished
    and fsynced.

    Hashing, encrypting and writing run on a `PieceWorker` (a helper thread
    past the first MiB), beside the parsing of the next piece. Werkzeug's pieces are
    immutable `bytes` and are handed over as they are; any other buffer is
    copied first, since its owner may reuse it. Every path ends the thread:
    `finish()`, and `abandon()` for a part that will not be kept.

    The staging file is made at the first byte, not when the part starts: a
    browser sends an empty, unnamed file part whenever the witness chose no
    file, and such a part then costs no file, no key exchange and no fsync.
    A named part is stored even when empty.

    With `sealers`, the part is sealed by one of them if one is free when
    its first byte arrives (`portal.server.sealer`): the same work, in a
    process of its own. The sealer is given back when the part ends.
    """

    def __init__(
        self,
        create: Callable[[], tuple[str, StagedFile]],
        name: str,
        content_type: str,
        recipients: Sequence[Recipient],
        sealers: SealerPool | None = None,
    ) -> None:
        self._create = create
        self._recipients = recipients
        self._sealers = sealers
        self._sealer: Sealer | None = None
        self._sealed_sha256 = ""
        self._staged: StagedFile | None = None
        self._writer: Writer | None = None
        self._sha256 = hashlib.sha256()
        self._worker = PieceWorker(self._take)
        self._size = 0
        self._relpath = ""
        self._name = _clean_text(name, MAX_NAME_CHARS)
        self._type = _clean_text(content_type, MAX_TYPE_CHARS) or "application/octet-stream"
        self.finished = False
        self.deleted = False

    def _start(self) -> None:
        # At the first byte (or at the end of an empty named part).
        if self._staged is not None:
            return
        self._relpath, self._staged = self._create()
        pool = self._sealers
        sealer = pool.take() if pool is not None else None
        if pool is not None and sealer is not None:
            try:
                sealer.open(self._staged.fileno())
            except SealerError:  # it had ended: this file is sealed here
                pool.give_back(sealer)
            else:
                self._sealer = sealer
                return
        self._open()

    def _open(self) -> Writer:
        if self._writer is None:
            assert self._staged is not None
            # Past its first MiB the file is written by the PieceWorker's
            # thread, which can wait for the disk itself.
            self._staged.keep_inline()
            self._writer = Writer(self._staged, self._recipients)
        return self._writer

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.finished:
            raise IntakeError("write to a finished attachment")
        if not data:
            return 0
        self._start()
        if self._sealer is not None:
            with _sealer_errors():
                self._sealer.write(data)
            self._size += len(data)
            return len(data)
        piece = data if type(data) is bytes else bytes(data)
        self._worker.put(piece)
        self._size += len(piece)
        return len(piece)

    def _take(self, piece: bytes) -> None:
        # On the worker's thread past the first MiB; in order, one at a time.
        self._sha256.update(piece)
        assert self._writer is not None
        self._writer.write(piece)

    def finish(self) -> None:
        if not self.finished:
            try:
                # Every piece handed over is hashed, encrypted and written first.
                self._worker.finish()
                if self._staged is not None or self._name:
                    self._start()
                    assert self._staged is not None
                    if self._sealer is not None:
                        with _sealer_errors():
                            self._sealed_sha256, _size = self._sealer.close()
                    else:
                        self._open().close()
                    self._staged.finish()
            finally:
                self._worker.close()
                self._give_back_sealer()
                self._create = _closed_create
            self.finished = True

    def abandon(self) -> None:
        """End the worker thread (or the sealer's file) of a part that will not be kept."""
        self._worker.close(drop=True)
        self._give_back_sealer()
        self._create = _closed_create

    def _give_back_sealer(self) -> None:
        sealer, self._sealer = self._sealer, None
        if sealer is not None and self._sealers is not None:
            self._sealers.give_back(sealer)  # which drops a file it did not finish

    def seek(self, offset: int, whence: int = 0) -> int:
        # Werkzeug rewinds a file part once it is complete; there is nothing
        # to read back, so this is where the part is sealed.
        if offset != 0 or whence != 0:
            raise OSError("attachment streams cannot seek")
        self.finish()
        return 0

    def read(self, size: int = -1) -> bytes:
        raise OSError("attachment streams are write-only: they hold ciphertext")

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        # Closing does not finish a part: Werkzeug closes every file when the
        # request ends, also after an error, and an unfinished part must not
        # look complete. Submission.commit() finishes the parts it keeps.
        pass

    def delete(self) -> None:
        """Remove this part's file: it will not be part of the submission."""
        self.finish()
        if self._staged is not None:
            self._staged.path.unlink(missing_ok=True)
        self.deleted = True

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return self._name

    def attachment(self) -> Attachment:
        if not self.finished or self._staged is None:
            raise IntakeError("attachment was not completely received")
        return Attachment(
            path=self._relpath,
            name=self._name,
            type=self._type,
            size=self._size,
            sha256=self._sealed_sha256 or self._sha256.hexdigest(),
        )


@contextlib.contextmanager
def _sealer_errors() -> Iterator[None]:
    # The sealer's errors are the store's: a full disk (or the free-space
    # floor) is ENOSPC there as here; a sealer that stopped is a store error.
    try:
        yield
    except SealerError as exc:
        raise translate_os_error(exc) from exc


class Submission:
    """One witness's submission while it is being received."""

    def __init__(self, store: SubmissionStore, recipients: Sequence[Recipient]) -> None:
        self._store = store
        self._recipients = recipients
        self._staging: Staging | None = None
        self._sinks: list[AttachmentSink] = []
        self.committed_id: str | None = None
        self.committed_attachments: list[Attachment] = []

    def _ensure_staging(self) -> Staging:
        if self._staging is None:
            self._staging = self._store.begin()
        return self._staging

    def open_attachment(
        self,
        name: str,
        content_type: str,
        before_create: Callable[[], None] | None = None,
        sealers: SealerPool | None = None,
    ) -> AttachmentSink:
        """A sink for one file part; `before_create` runs before its staging file is made.

        With `sealers`, the part goes to a sealer process if one is free.
        """

        def create() -> tuple[str, StagedFile]:
            if before_create is not None:
                before_create()
            return self._ensure_staging().create_attachment()

        sink = AttachmentSink(create, name, content_type, self._recipients, sealers)
        self._sinks.append(sink)
        return sink

    def attachments(self) -> list[Attachment]:
        """The attachments received so far, skipping empty unnamed parts.

        Browsers send an empty, unnamed file part when the witness chose no
        file; such a part is not an attachment.
        """
        kept = []
        for sink in self._sinks:
            if sink.deleted:
                continue
            sink.finish()
            if sink.size == 0 and not sink.name:
                sink.delete()
                continue
            kept.append(sink.attachment())
        return kept

    def commit(
        self,
        fields: Mapping[str, str],
        language: str,
        *,
        reply_to: str | None = None,
        reply_key: ReplyKey | None = None,
        questionnaire: SealedQuestionnaire | None = None,
        reply_identity: X25519Identity | None = None,
    ) -> str:
        """Encrypt the manifest, then durably commit everything; returns the id.

        `reply_to` (a version 1 receipt's age recipient) or `reply_key` (a
        version 2 receipt's seed, salt and cost) is written only inside the
        encrypted manifest. `reply_identity` (a version 1 receipt's identity,
        derived while the witness is logged in) seals its recipient with a
        proof that the witness's key wrote it (issue 21). `questionnaire` is what
        `Questionnaire.sealed()` returns: the exact questions the witness
        saw, sealed with their answers.
        """
        try:
            attachments = self.attachments()
            staging = self._ensure_staging()
            manifest = build_manifest(
                staging.submission_id,
                fields,
                language,
                attachments,
                reply_to=reply_to,
                reply_key=reply_key,
                questionnaire=questionnaire,
                reply_identity=reply_identity,
            )
            # Encrypted in memory, then written in one piece: one write (and
            # one free-space check) for the manifest instead of two.
            sealed = io.BytesIO()
            writer = Writer(sealed, self._recipients)
            writer.write(manifest)
            writer.close()
            staged = staging.create_manifest()
            staged.write(sealed.getbuffer())
            staged.finish()
            self.committed_id = self._store.commit(staging)
            self.committed_attachments = attachments
        except BaseException:
            self.discard()
            raise
        return self.committed_id

    def discard(self) -> None:
        if self.committed_id is None:
            for sink in self._sinks:
                sink.abandon()
        if self._staging is not None and self.committed_id is None:
            self._staging.discard()

    @property
    def file_count(self) -> int:
        return len(self._sinks)


def store_submission(
    store: SubmissionStore,
    recipients: Sequence[Recipient],
    fields: Mapping[str, str],
    files: Iterable[tuple[str, str, BinaryIO | bytes]],
    language: str = "en",
    *,
    chunk_size: int = 64 * 1024,
    reply_to: str | None = None,
    reply_key: ReplyKey | None = None,
    reply_identity: X25519Identity | None = None,
    questionnaire: SealedQuestionnaire | None = None,
) -> str:
    """Store a submission without the web layer (tools, tests, load generators)."""
    submission = Submission(store, recipients)
    try:
        for name, content_type, content in files:
            sink = submission.open_attachment(name, content_type)
            if isinstance(content, bytes):
                sink.write(content)
            else:
                while chunk := content.read(chunk_size):
                    sink.write(chunk)
            sink.finish()
    except BaseException:
        submission.discard()
        raise
    return submission.commit(
        fields,
        language,
        reply_to=reply_to,
        reply_key=reply_key,
        reply_identity=reply_identity,
        questionnaire=questionnaire,
    )
