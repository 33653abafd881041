"""Encrypting and decrypting whole age files: the Writer and the Reader."""

from __future__ import annotations

import hmac
import io
import os
from collections.abc import Callable, Generator, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Protocol

from portal.core.age._format import (
    INTRO,
    BufferedSource,
    Stanza,
    marshal_mac,
    marshal_without_mac,
    parse_header,
)
from portal.core.age._stream import NONCE_SIZE, StreamEncryptor, decrypt_blocks, decrypt_chunks
from portal.core.age.armor import ArmorReader, ArmorWriter, Sink, write_all
from portal.core.age.errors import AgeError, HeaderError, HMACError, NoIdentityMatchError
from portal.core.age.mlkem768x25519 import STANZA_TYPE as PQ_STANZA_TYPE
from portal.core.age.primitives import FILE_KEY_SIZE, header_mac, payload_key
from portal.core.age.scrypt import STANZA_TYPE as SCRYPT_STANZA_TYPE

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["Identity", "Reader", "Recipient", "Writer", "decrypt", "encrypt", "header_stanzas"]

Rng = Callable[[int], bytes]


class Recipient(Protocol):
    """Something a file key can be wrapped to: a public key, a passphrase..."""

    def wrap(self, file_key: bytes, rng: Rng) -> list[Stanza]:
        """Return the stanzas that carry `file_key` for this recipient."""
        ...


class Identity(Protocol):
    """Something that can unwrap a file key from a header's stanzas."""

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes:
        """Return the file key.

        Raises:
            NoIdentityMatchError: no stanza is addressed to this identity; the
                reader then tries the next identity.
            HeaderError: a stanza addressed to this identity is malformed.
        """
        ...


def _random(rng: Rng, size: int) -> bytes:
    data = rng(size)
    # A short read from a broken RNG would silently weaken every key.
    if len(data) != size:
        raise ValueError(f"rng returned {len(data)} bytes instead of {size}")
    return data


class Writer:
    """Encrypts a stream pushed through write() into an age file on `out`.

    The header is written immediately; each 64 KiB of plaintext is encrypted
    and written as soon as more data shows it is not the last; close() writes
    the final chunk. `out` is never closed. If close() is never reached, the
    file has no final chunk and every reader rejects it as truncated.
    """

    def __init__(
        self,
        out: Sink,
        recipients: Sequence[Recipient],
        *,
        rng: Rng = os.urandom,
        armor: bool = False,
    ) -> None:
        if not recipients:
            raise ValueError("no recipients: a file must be encrypted to at least one")
        file_key = _random(rng, FILE_KEY_SIZE)
        stanzas = [s for r in recipients for s in r.wrap(file_key, rng)]
        if len(stanzas) > 1 and any(s.type == SCRYPT_STANZA_TYPE for s in stanzas):
            raise ValueError("a passphrase (scrypt) recipient must be the file's only recipient")
        pq = [s.type == PQ_STANZA_TYPE for s in stanzas]
        if any(pq) and not all(pq):
            # c2sp.org/age: a post-quantum file SHOULD NOT also be encrypted
            # to a classic recipient, which would be its weak door; the age
            # CLI refuses it, and so do we.
            raise ValueError(
                "post-quantum (mlkem768x25519) recipients cannot be mixed with classic ones "
                "in one file: the classic stanza would void the post-quantum protection"
            )
        header = marshal_without_mac(stanzas)
        nonce = _random(rng, NONCE_SIZE)
        self._armor = ArmorWriter(out) if armor else None
        self._sink: Callable[[memoryview], object] = (
            self._armor.write if self._armor else lambda data: write_all(out, data)
        )
        self._sink(memoryview(header + marshal_mac(header_mac(file_key, header)) + nonce))
        self._stream = StreamEncryptor(payload_key(file_key, nonce), self._sink)
        self._closed = False
        self._failed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt `data`; return its length in bytes."""
        self._check_open()
        view = memoryview(data).cast("B")
        try:
            self._stream.write(view)
        except BaseException:
            # After a failed write to `out` the file is unusable: refuse more.
            self._failed = True
            raise
        return len(view)

    def close(self) -> None:
        """Write the final chunk (and the armor footer). Safe to call twice."""
        if self._closed:
            return
        self._check_open()
        try:
            self._stream.close()
            if self._armor:
                self._armor.close()
        except BaseException:
            self._failed = True
            raise
        self._closed = True

    @property
    def closed(self) -> bool:
        """True once close() has completed."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("write to a closed age Writer")
        if self._failed:
            raise ValueError("age Writer is unusable after an earlier error")

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On error, leave the file without a final chunk so that it can
        # never be mistaken for a complete one.
        if exc_type is None:
            self.close()


def encrypt(plaintext: bytes, recipients: Sequence[Recipient], *, rng: Rng = os.urandom) -> bytes:
    """Encrypt `plaintext` into a binary age file held in memory."""
    out = io.BytesIO()
    with Writer(out, recipients, rng=rng) as writer:
        writer.write(plaintext)
    return out.getvalue()


class Reader(io.RawIOBase):
    """Decrypts an age file from `src`, releasing only authenticated plaintext.

    The header is parsed and its MAC verified in the constructor. Plaintext is
    then released one 64 KiB chunk at a time, each only after its tag has
    been checked. A file cut short still releases its verified chunks before
    PayloadError is raised: callers that must not act on partial plaintext
    keep it aside (a temporary file) until `chunks()` ends without an error.
    ASCII-armored input is detected and decoded.
    `src` is never closed.
    """

    def __init__(self, src: BinaryIO, identities: Sequence[Identity]) -> None:
        super().__init__()
        if not identities:
            raise ValueError("no identities to decrypt with")
        raw = BufferedSource(src)
        start = raw.peek(len(INTRO))
        if not start:
            raise HeaderError("the input is empty, not an age file")
        # Every binary age file starts with the intro; anything else is either
        # armored or not an age file, which the armor reader reports.
        source = raw if INTRO.startswith(start) else BufferedSource(ArmorReader(raw))
        header = parse_header(source)
        file_key = _unwrap(header.stanzas, identities)
        if not hmac.compare_digest(header_mac(file_key, header.mac_input), header.mac):
            raise HMACError("header MAC mismatch: the header was modified or is corrupted")
        nonce = source.read(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise HeaderError("the file ends before the payload nonce")
        self._key = payload_key(file_key, nonce)
        self._source = source
        self._chunks: Generator[bytes, None, None] | None = None
        self._blocks = False
        self._pending = b""
        self._offset = 0
        self._error: AgeError | None = None

    def chunks(self) -> Iterator[bytes]:
        """Yield the remaining plaintext, one verified chunk at a time.

        Raises:
            PayloadError: the payload is truncated, corrupted or has trailing
                data; chunks yielded before it were authentic.
        """
        while (chunk := self._next_piece()) is not None:
            yield chunk

    def blocks(
        self,
        chunks_per_block: int = 16,
        new_block: Callable[[int], memoryview] | None = None,
    ) -> Iterator[memoryview]:
        """Yield the plaintext in blocks of up to `chunks_per_block` verified chunks.

        The same plaintext as `chunks()`, released by the same rule (a chunk
        only once its own tag verified, the authentic ones before an error),
        but decrypted straight into blocks of 1 MiB (by default). Each block
        is a buffer from `new_block(size)` (by default a new one each time),
        which the Reader never writes into again once it has yielded it: the
        caller may hand it to another thread to hash or write while the next
        is decrypted, and give it back through `new_block` when done. Use
        either this or the other ways of reading, from the start, not both.

        Raises:
            PayloadError: as `chunks()`.
        """
        if self.closed:
            raise ValueError("read from a closed age Reader")
        if self._chunks is not None or self._blocks:
            raise ValueError("blocks() reads the whole payload: the Reader was already read")
        if chunks_per_block < 1:
            raise ValueError("a block holds at least one chunk")
        self._blocks = True
        for block in decrypt_blocks(self._key, self._source, chunks_per_block, new_block):
            if block:
                yield block

    def close(self) -> None:
        """Stop decrypting. The source file object is left open."""
        if self._chunks is not None:
            self._chunks.close()
        super().close()

    def _next_piece(self) -> bytes | None:
        # Returns None at the end of the plaintext; failures raise.
        if self.closed:
            raise ValueError("read from a closed age Reader")
        if self._offset < len(self._pending):
            piece = self._pending[self._offset :] if self._offset else self._pending
            self._pending, self._offset = b"", 0
            return piece
        if self._error is not None:
            # A failure is sticky: the file must never look complete later.
            raise self._error
        if self._chunks is None:
            if self._blocks:
                raise ValueError("the Reader's payload was read with blocks()")
            self._chunks = decrypt_chunks(self._key, self._source)
        while True:
            try:
                chunk = next(self._chunks, None)
            except AgeError as e:
                self._error = e
                raise
            if chunk is None or chunk:
                return chunk

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()

    def __next__(self) -> bytes:
        piece = self._next_piece()
        if piece is None:
            raise StopIteration
        return piece

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        """Read up to `size` bytes, fewer only at the end; all of it if negative."""
        if size is None or size < 0:
            return self.readall()
        if size and self._offset >= len(self._pending):
            piece = self._next_piece()
            if piece is None:
                return b""
            self._pending, self._offset = piece, 0
        if self._offset == 0 and len(self._pending) == size:
            # The common case of reading chunk-sized blocks: no copy.
            data, self._pending = self._pending, b""
            return data
        buffer = bytearray(size)
        return bytes(buffer[: self.readinto(buffer)])

    def readall(self) -> bytes:
        """Read and return the rest of the plaintext."""
        return b"".join(self.chunks())

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Fill `buffer` with plaintext; return the byte count (0 at the end)."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if self._offset >= len(self._pending):
                piece = self._next_piece()
                if piece is None:
                    break
                self._pending, self._offset = piece, 0
            take = min(len(view) - filled, len(self._pending) - self._offset)
            view[filled : filled + take] = self._pending[self._offset : self._offset + take]
            filled += take
            self._offset += take
        return filled


def _unwrap(stanzas: Sequence[Stanza], identities: Sequence[Identity]) -> bytes:
    # Checked here as well as in ScryptIdentity, so that an X25519 identity
    # cannot open a file whose scrypt stanza promised passphrase-only access.
    if len(stanzas) > 1 and any(s.type == SCRYPT_STANZA_TYPE for s in stanzas):
        raise HeaderError("an scrypt stanza must be the only stanza in the header")
    reasons: dict[str, None] = {}
    for identity in identities:
        try:
            file_key = identity.unwrap(stanzas)
        except NoIdentityMatchError as e:
            reasons[str(e)] = None
            continue
        if len(file_key) != FILE_KEY_SIZE:
            raise HeaderError("identity returned a file key of the wrong length")
        return file_key
    raise NoIdentityMatchError(
        "none of the identities can decrypt this file: " + "; ".join(reasons)
    )


def decrypt(ciphertext: bytes, identities: Sequence[Identity]) -> bytes:
    """Decrypt a whole age file (binary or armored) held in memory."""
    return Reader(io.BytesIO(ciphertext), identities).readall()


def header_stanzas(src: BinaryIO) -> tuple[Stanza, ...]:
    """The recipient stanzas of a binary age file, read from `src` without decrypting anything.

    Only the header is read. Its MAC cannot be checked without the file key,
    so the stanzas say whom the file claims to be encrypted to, nothing more.

    Raises:
        HeaderError: `src` does not start with a well-formed age v1 header.
    """
    return parse_header(BufferedSource(src)).stanzas
