"""Decrypting one submission into its work folder, every file checked against the manifest.

The encrypted manifest is decrypted first and checked (format, shape, and
that its `id` is the folder's name, so a manifest moved between submissions
is caught). Each attachment is then decrypted straight to disk with bounded
memory, on the opener's pool of threads, and its size and SHA-256 are
compared with the manifest. A file the server stored but left out of the
manifest must decrypt to nothing. Any failure raises an `OpenFailure` that
names the file and what is wrong with it.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from portal.core.age import (
    AgeError,
    ArmorError,
    HeaderError,
    HMACError,
    NoIdentityMatchError,
    PayloadError,
    PrivateKey,
    Reader,
    header_stanzas,
)
from portal.core.fsio import (
    CHUNK,
    FILE_MODE,
    new_file,
    replace_with_chunks,
    write_all,
)
from portal.core.layout import MANIFEST_NAME
from portal.core.manifest import Attachment, Manifest, ManifestError, parse_manifest_text
from portal.review import inert
from portal.review.discovery import listed_files, open_ciphertext
from portal.review.outcomes import NoKey, OpenFailure, Tampered
from portal.review.record import MANIFEST_JSON, IgnoredPart, OpenedAttachment, RecordedManifest
from portal.review.safenames import NameAllocator

# A manifest holds text fields and a list of attachments; the server caps
# both far below this. A larger one is not trusted into memory. The server
# pads a manifest to a power of two, so the limit is one whole bucket plus
# age's overhead: a 16-byte tag per 64 KiB chunk and room for the header.
MAX_MANIFEST_PLAINTEXT = 64 * 1024 * 1024
MAX_MANIFEST_CIPHERTEXT = (
    MAX_MANIFEST_PLAINTEXT + 16 * (MAX_MANIFEST_PLAINTEXT // 65536 + 1) + 65536
)

BytesFn = Callable[[int], None]

# A large attachment is read, its ciphertext hashed (for the record and the
# custody log) and decrypted on its worker thread, while a helper thread
# hashes and writes its plaintext (fsio.replace_with_chunks, behind): hashlib,
# ChaCha20-Poly1305 and os.write all release the GIL, so this keeps both
# cores busy. The ciphertext is hashed in the buffer it was read into, still
# in this core's cache: a helper thread of its own (issue 14's design) needed
# a copy of every piece and read it from the other core's cache: 0.43-0.49 s
# for the 256 MiB of the bench's open row where this takes 0.35-0.37 s
# (the two alternated on a warm file; docs/BENCHMARKS.md, "Round 3"). The
# row itself went from 0.79 to 0.89-0.96 of `age -d`. What is in flight
# stays under 8 MiB a file (tests/test_review_open.py): age's 1 MiB read
# buffer and up to 4 plaintext blocks of PLAINTEXT_BLOCK_CHUNKS x 64 KiB
# (2 queued, 1 being written, 1 being filled).
PLAINTEXT_BLOCK_CHUNKS = 8


class Cancelled(Exception):
    """Raised inside a worker when the run or its submission is being abandoned."""


class HashingReader:
    """A read-only file wrapper that hashes and counts every byte read through it.

    The hash is computed on the reading thread, in the caller's own buffer
    (`readinto`): no copy, and the bytes are still in this core's cache.
    """

    def __init__(self, raw: BinaryIO, on_bytes: BytesFn | None = None) -> None:
        self._raw = raw
        self._on_bytes = on_bytes
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        if data:
            self.sha256.update(data)
            self.size += len(data)
            if self._on_bytes:
                self._on_bytes(len(data))
        return data

    def readinto(self, buffer: memoryview) -> int:
        # The age reader fills its own buffer with this when it exists,
        # which saves allocating and copying a bytes object per read.
        count = self._raw.readinto(buffer) or 0  # type: ignore[attr-defined]
        if count:
            self.sha256.update(buffer[:count])
            self.size += count
            if self._on_bytes:
                self._on_bytes(count)
        return count

    def drain(self) -> None:
        """Read (and hash) whatever the decryptor left, so the hash covers the whole file."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


class _SpareBlocks:
    """Plaintext blocks handed back once written out, to decrypt the next ones into.

    A large file then takes no new memory (and no page faults) for every
    block. Only buffers of the file's own block size come back, and only
    after `replace_with_chunks` has hashed and written them.
    """

    def __init__(self) -> None:
        self._spare: queue.SimpleQueue[bytearray] = queue.SimpleQueue()

    def take(self, size: int) -> memoryview:
        try:
            block = self._spare.get_nowait()
        except queue.Empty:
            block = bytearray(size)
        return memoryview(block)[:size]

    def give(self, piece: object) -> None:
        if isinstance(piece, memoryview) and isinstance(piece.obj, bytearray):
            self._spare.put(piece.obj)


def age_failure(what: str, exc: AgeError, *, attachment: bool = False) -> OpenFailure:
    """The failure to report when `what` (a file's path in the submission) does not decrypt."""
    if isinstance(exc, NoIdentityMatchError) and attachment:
        # The manifest opened with these identities, so an honest server
        # encrypted every file of this submission to the same keys.
        return Tampered(
            f"{what} is encrypted to another key than its manifest: it was substituted "
            "or its header was altered",
        )
    if isinstance(exc, NoIdentityMatchError):
        return NoKey(
            f"{what}: none of the given identities can open it (it may be encrypted to "
            "another key: pass that identity too with another --identity), or its header "
            "was altered",
        )
    if isinstance(exc, HMACError):
        detail = "its header was altered (header MAC mismatch)"
    elif isinstance(exc, PayloadError):
        detail = "its encrypted content is truncated or altered"
    elif isinstance(exc, ArmorError | HeaderError):
        detail = "it is not a well-formed age file"
    else:
        detail = str(exc)
    return Tampered(f"{what}: {detail}")


@dataclass(frozen=True)
class Decrypted:
    """A submission decrypted into its work folder, every file checked against the manifest."""

    manifest: Manifest
    manifest_file: RecordedManifest
    attachments: tuple[OpenedAttachment, ...]
    ignored_empty_parts: tuple[IgnoredPart, ...]
    ciphertext_sizes: dict[str, int]
    # The manifest's stanza types, comma-separated (see OpenedRecord.protection).
    protection: str = ""


def _protection(path: Path) -> str:
    """The stanza types of an age file's header, comma-separated (it decrypted already)."""
    with open_ciphertext(path) as raw:
        stanzas = header_stanzas(raw)
    return ",".join(sorted({stanza.type for stanza in stanzas}))


class Decryptor:
    """Decrypts submissions with one set of identities, attachments on a shared pool.

    `cancel` stops every worker at its next read (the run is being
    abandoned); `on_bytes` is told of every ciphertext byte read.
    """

    def __init__(
        self,
        identities: Sequence[PrivateKey],
        files: ThreadPoolExecutor,
        cancel: threading.Event,
        on_bytes: BytesFn | None = None,
    ) -> None:
        self.identities = list(identities)
        self._files = files
        self._cancel = cancel
        self._on_bytes = on_bytes

    def decrypt_into(
        self, source_dir: Path, submission_id: str, work: Path, names: NameAllocator
    ) -> Decrypted:
        """Decrypt the submission in `source_dir` into `work`, naming its files with `names`.

        Raises:
            OpenFailure: a file is missing, does not decrypt, or does not match the manifest.
        """
        by_rel = listed_files(source_dir)
        if MANIFEST_NAME not in by_rel:
            raise Tampered(f"{MANIFEST_NAME} is missing")
        text, manifest_hash, manifest_cipher_hash = self._decrypt_manifest(
            by_rel[MANIFEST_NAME], work / MANIFEST_JSON
        )
        try:
            manifest = parse_manifest_text(text)
        except ManifestError as exc:
            raise Tampered(str(exc)) from None
        del text
        if manifest.id != submission_id:
            raise Tampered(
                "the manifest belongs to another submission (its id does not match the folder "
                "name): it was moved or substituted",
            )
        jobs = []
        for entry in manifest.attachments:
            cipher_path = by_rel.get(entry.path)
            if cipher_path is None:
                raise Tampered(f"{entry.path}, listed in the manifest, is missing")
            jobs.append((entry, cipher_path, names.create(entry.name)))
        attachments = self._decrypt_attachments(jobs, work)
        listed = {entry.path for entry in manifest.attachments} | {MANIFEST_NAME}
        ignored = tuple(
            IgnoredPart(rel, self._check_unlisted(by_rel[rel], rel))
            for rel in sorted(set(by_rel) - listed)
        )
        return Decrypted(
            manifest=manifest,
            manifest_file=RecordedManifest(MANIFEST_JSON, manifest_hash, manifest_cipher_hash),
            attachments=attachments,
            ignored_empty_parts=ignored,
            ciphertext_sizes={rel: path.stat().st_size for rel, path in by_rel.items()},
            protection=_protection(by_rel[MANIFEST_NAME]),
        )

    def _decrypt_manifest(self, path: Path, dest: Path) -> tuple[str, str, str]:
        """Decrypt the manifest into `dest`; return its text and plaintext and ciphertext hashes.

        Streamed: the plaintext goes to disk and through the hash and the
        UTF-8 decoder chunk by chunk, so a 60 MB testimony is held in memory
        only as the decoded text (the bytes and the ciphertext never are).
        """
        with open_ciphertext(path) as raw:
            if os.fstat(raw.fileno()).st_size > MAX_MANIFEST_CIPHERTEXT:
                raise Tampered(f"{MANIFEST_NAME} is implausibly large")
            reader = HashingReader(raw)
            decoder = codecs.getincrementaldecoder("utf-8")()
            digest = hashlib.sha256()
            parts = []
            try:
                # The work folder is fsynced once, when it is complete.
                with new_file(dest, sync_dir=False) as out:
                    for chunk in Reader(cast(BinaryIO, reader), self.identities).chunks():
                        digest.update(chunk)
                        write_all(out, chunk)
                        parts.append(decoder.decode(chunk))
                    parts.append(decoder.decode(b"", final=True))
            except AgeError as exc:
                raise age_failure(MANIFEST_NAME, exc) from None
            except UnicodeDecodeError:
                raise Tampered("manifest is not UTF-8") from None
            reader.drain()
        text = "".join(parts)
        del parts
        return text, digest.hexdigest(), reader.hexdigest()

    def _decrypt_attachments(
        self, jobs: list[tuple[Attachment, Path, str]], work: Path
    ) -> tuple[OpenedAttachment, ...]:
        """Decrypt and check a submission's attachments concurrently; all or nothing."""
        abandon = threading.Event()
        futures = [
            self._files.submit(self._decrypt_attachment, entry, path, work, name, abandon)
            for entry, path, name in jobs
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.done() and f.exception() is not None for f in futures):
            abandon.set()
        wait(futures)
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            # A real failure explains more than the cancellations it caused.
            real = [e for e in errors if not isinstance(e, Cancelled)]
            raise (real or errors)[0]  # type: ignore[misc]
        return tuple(future.result() for future in futures)

    def _decrypt_attachment(
        self, entry: Attachment, path: Path, work: Path, name: str, abandon: threading.Event
    ) -> OpenedAttachment:
        def check(count: int) -> None:
            if abandon.is_set() or self._cancel.is_set():
                raise Cancelled("cancelled")
            if self._on_bytes:
                self._on_bytes(count)

        dest = work / name
        with open_ciphertext(path) as raw:
            hashing = HashingReader(raw, check)
            try:
                # The plaintext appears under its name only once every chunk
                # has verified: a cut or altered file leaves nothing behind.
                # It is decrypted a block at a time, each block hashed and
                # written on a helper thread while the next is decrypted, and
                # a block's buffer is decrypted into again only once written.
                spare = _SpareBlocks()
                reader = Reader(cast(BinaryIO, hashing), self.identities)
                plaintext = reader.blocks(PLAINTEXT_BLOCK_CHUNKS, spare.take)
                size, digest = replace_with_chunks(
                    dest, plaintext, mode=FILE_MODE, behind=True, written=spare.give
                )
            except AgeError as exc:
                raise age_failure(entry.path, exc, attachment=True) from None
            hashing.drain()
            ciphertext_sha256 = hashing.hexdigest()
        if size != entry.size or digest != entry.sha256:
            raise Tampered(
                f"{entry.path}: the decrypted file's SHA-256 does not match the manifest"
            )
        view = inert.decide(name, inert.read_head(dest))
        return OpenedAttachment(
            path=entry.path,
            name=entry.name,
            type=entry.type,
            file=name,
            size=size,
            sha256=digest,
            ciphertext_sha256=ciphertext_sha256,
            view=view.kind,
            view_reason=view.reason,
        )

    def _check_unlisted(self, path: Path, rel: str) -> str:
        # The server stores the empty, unnamed file part a browser sends when
        # no file was chosen, but leaves it out of the manifest. Such a file
        # decrypts to nothing; anything more is not what the server wrote.
        with open_ciphertext(path) as raw:
            reader = HashingReader(raw)
            try:
                for chunk in Reader(cast(BinaryIO, reader), self.identities).chunks():
                    if chunk:
                        raise Tampered(f"{rel} holds data but is not listed in the manifest")
            except AgeError as exc:
                raise age_failure(rel, exc) from None
            reader.drain()
        return reader.hexdigest()
