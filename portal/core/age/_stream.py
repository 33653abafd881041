"""The STREAM payload: 64 KiB chunks sealed with ChaCha20-Poly1305.

Each chunk's nonce is an 11-byte big-endian counter followed by a flag byte
that is 1 only on the final chunk, so chunks cannot be reordered, dropped or
truncated at a chunk boundary without the last tag failing.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from portal.core.age._format import BufferedSource
from portal.core.age.errors import PayloadError
from portal.core.age.primitives import TAG_SIZE

CHUNK_SIZE = 64 * 1024
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
NONCE_SIZE = 16
"""Size of the random nonce that starts the payload and salts its key."""

_COUNTER_SIZE = 11
_LAST = b"\x01"
_NOT_LAST = b"\x00"

# The reader reads this many chunks at a time into one reused buffer, so that
# chunks are decrypted in place and the partial chunk at the end of a block
# (at most one chunk, moved to the front) is copied rarely.
_READ_CHUNKS = 16
# Held back by reference only from an object this small: a view keeps the
# whole object alive, and a writer fed large pieces (the portal's uploads,
# in 1 MiB pieces) must not keep one alive while it waits for the next.
_HOLD_LIMIT = 2 * CHUNK_SIZE
# The most chunks one write() seals before it writes them out.
_WRITE_CHUNKS = 4


def _nonce(counter: int, flag: bytes) -> bytes:
    # to_bytes raises OverflowError after 2**88 chunks (16 YiB), long before
    # a nonce could repeat.
    return counter.to_bytes(_COUNTER_SIZE, "big") + flag


class StreamEncryptor:
    """Seals plaintext pushed in pieces of any size into STREAM chunks.

    A full chunk is held back until more data arrives, because only then do
    we know it is not the final one: the final chunk carries the last flag and
    may be full, but must not be empty unless the whole plaintext is.
    """

    def __init__(self, key: bytes, write: Callable[[memoryview], object]) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._write = write
        self._counter = 0
        self._chunk = bytearray(CHUNK_SIZE)
        self._filled = 0
        # Immutable `bytes` can be held back by reference instead of copied,
        # which saves a copy per chunk when Werkzeug hands us 64 KiB pieces.
        self._held: memoryview | None = None
        # Sealing into one reused buffer avoids a 64 KiB allocation per chunk.
        # File objects may not keep the buffer passed to write() (see
        # io.BufferedIOBase.write), so reusing it is safe. The chunks one
        # write() seals are gathered there and written out together, so a
        # large write costs one call of `write`, not one per chunk; the buffer
        # grows to `_WRITE_CHUNKS` chunks for a writer fed large pieces.
        self._sealed = memoryview(bytearray(ENC_CHUNK_SIZE))
        self._sealed_end = 0

    def write(self, data: memoryview) -> None:
        """Buffer `data`, sealing every chunk known not to be the last."""
        if len(data) > 2 * CHUNK_SIZE and len(self._sealed) < _WRITE_CHUNKS * ENC_CHUNK_SIZE:
            self._sealed = memoryview(bytearray(_WRITE_CHUNKS * ENC_CHUNK_SIZE))
        self._push(data)
        self._flush()

    def _push(self, data: memoryview) -> None:
        size = len(data)
        if not size:
            return
        if self._held is not None:
            held, self._held = self._held, None
            if len(held) == CHUNK_SIZE:
                self._seal(held, _NOT_LAST)
            else:
                self._chunk[: len(held)] = held
                self._filled = len(held)
        pos = 0
        if self._filled:
            pos = min(CHUNK_SIZE - self._filled, size)
            self._chunk[self._filled : self._filled + pos] = data[:pos]
            self._filled += pos
            if pos == size:
                return
            self._seal(memoryview(self._chunk), _NOT_LAST)
            self._filled = 0
        # Seal whole chunks straight from the caller's buffer, without copying,
        # as long as at least one more byte follows them.
        while size - pos > CHUNK_SIZE:
            self._seal(data[pos : pos + CHUNK_SIZE], _NOT_LAST)
            pos += CHUNK_SIZE
        if type(data.obj) is bytes and len(data.obj) <= _HOLD_LIMIT:
            self._held = data[pos:]
        else:
            # The caller may reuse a mutable buffer as soon as we return.
            rest = size - pos
            self._chunk[:rest] = data[pos:]
            self._filled = rest

    def close(self) -> None:
        """Seal the buffered data as the final chunk."""
        # After any non-empty plaintext at least one byte is always held back,
        # so the final chunk is empty only when the whole plaintext is.
        if self._held is not None:
            final, self._held = self._held, None
        else:
            final = memoryview(self._chunk)[: self._filled]
        self._seal(final, _LAST)
        self._filled = 0
        self._flush()

    def _seal(self, plaintext: memoryview, flag: bytes) -> None:
        end = self._sealed_end + len(plaintext) + TAG_SIZE
        if end > len(self._sealed):
            self._flush()
            end = len(plaintext) + TAG_SIZE
        sealed = self._sealed[self._sealed_end : end]
        self._aead.encrypt_into(_nonce(self._counter, flag), plaintext, None, sealed)
        self._counter += 1
        self._sealed_end = end

    def _flush(self) -> None:
        if self._sealed_end:
            sealed, self._sealed_end = self._sealed[: self._sealed_end], 0
            self._write(sealed)


def decrypt_chunks(key: bytes, src: BufferedSource) -> Generator[bytes, None, None]:
    """Yield each plaintext chunk as soon as its own tag has been verified.

    This is the release behaviour of the reference implementation (and what
    the conformance vectors expect): an authentic chunk is released even if
    the file turns out to be truncated or followed by garbage afterwards.

    Raises:
        PayloadError: a tag fails, the file ends without a final chunk, data
            follows the final chunk, or a final chunk after the first is empty.
    """
    aead = ChaCha20Poly1305(key)
    for ciphertext, counter, more in _sealed_chunks(src):
        if len(ciphertext) == ENC_CHUNK_SIZE:
            # A full chunk is usually not the last one, but may be.
            try:
                plaintext = aead.decrypt(_nonce(counter, _NOT_LAST), ciphertext, None)
                last = False
            except InvalidTag:
                plaintext = _open(aead, counter, _LAST, ciphertext)
                last = True
        else:
            plaintext = _open(aead, counter, _LAST, ciphertext)
            last = True
        if last and not plaintext and counter > 0:
            raise PayloadError("final payload chunk is empty")
        yield plaintext
        if last:
            if more:
                raise PayloadError(_TRAILING)
            return


def decrypt_blocks(
    key: bytes,
    src: BufferedSource,
    block_chunks: int,
    new_block: Callable[[int], memoryview] | None = None,
) -> Generator[memoryview, None, None]:
    """The plaintext of `decrypt_chunks`, `block_chunks` chunks at a time.

    Each chunk is decrypted straight into its block (no object per chunk),
    a buffer of `block_chunks` chunks from `new_block` (by default a new
    one each time), and a block is yielded once it is full or the payload
    ends. A block is never written again once yielded: the caller may hand
    it to another thread, and give it back through `new_block` when done.
    On a failure, the chunks of the current block that verified are yielded
    first (copied out, so that nothing unverified comes with them): exactly
    the plaintext `decrypt_chunks` releases is released.

    Raises:
        PayloadError: as `decrypt_chunks`.
    """
    aead = ChaCha20Poly1305(key)
    capacity = block_chunks * CHUNK_SIZE
    new_block = new_block or _new_block
    block = new_block(capacity)
    filled = 0
    try:
        for ciphertext, counter, more in _sealed_chunks(src):
            if filled == capacity:
                yield block
                block, filled = new_block(capacity), 0
            size = len(ciphertext) - TAG_SIZE
            out = block[filled : filled + size]
            last = len(ciphertext) < ENC_CHUNK_SIZE
            if last:
                _open_into(aead, counter, _LAST, ciphertext, out)
            else:
                try:
                    aead.decrypt_into(_nonce(counter, _NOT_LAST), ciphertext, None, out)
                except InvalidTag:
                    # Perhaps a full final chunk. What the failed attempt wrote
                    # is overwritten, or never released if this fails too.
                    _open_into(aead, counter, _LAST, ciphertext, out)
                    last = True
            if last and not size and counter > 0:
                raise PayloadError("final payload chunk is empty")
            filled += size
            if last:
                if filled:
                    yield block[:filled]
                filled = 0
                if more:
                    raise PayloadError(_TRAILING)
                return
    except PayloadError:
        if filled:
            yield memoryview(bytes(block[:filled]))
        raise


def _new_block(size: int) -> memoryview:
    return memoryview(bytearray(size))


_TRAILING = "trailing data after the end of the encrypted file"


def _sealed_chunks(src: BufferedSource) -> Generator[tuple[memoryview, int, bool], None, None]:
    """Each sealed chunk of the payload, its counter, and whether any data follows it.

    A chunk shorter than a full one can only be the last; a full one may be
    the last, which only its tag tells: the caller stops after the last
    chunk. A chunk's view is valid until the next one is asked for.

    Raises:
        PayloadError: the payload ends before a chunk that must follow.
    """
    block_size = ENC_CHUNK_SIZE * _READ_CHUNKS
    # One buffer for the whole file: reading into it avoids a copy per block.
    buffer = bytearray(block_size + ENC_CHUNK_SIZE + 1)
    view = memoryview(buffer)
    end = src.readinto(view[: block_size + 1])
    pos = 0
    counter = 0
    while True:
        if end - pos <= ENC_CHUNK_SIZE:
            # Top up, so that we know whether anything follows this chunk.
            leftover = end - pos
            buffer[:leftover] = buffer[pos:end]
            end = leftover + src.readinto(view[leftover : leftover + block_size])
            pos = 0
        ciphertext = view[pos : min(pos + ENC_CHUNK_SIZE, end)]
        if not ciphertext:
            if counter == 0:
                raise PayloadError("payload is truncated: no chunks after the nonce")
            raise PayloadError("payload is truncated: the final chunk is missing")
        if len(ciphertext) < TAG_SIZE:
            raise PayloadError("payload is truncated: chunk shorter than its tag")
        pos += len(ciphertext)
        yield ciphertext, counter, pos < end
        counter += 1


def _open(aead: ChaCha20Poly1305, counter: int, flag: bytes, ciphertext: memoryview) -> bytes:
    try:
        return aead.decrypt(_nonce(counter, flag), ciphertext, None)
    except InvalidTag:
        raise PayloadError(f"payload chunk {counter} failed authentication") from None


def _open_into(
    aead: ChaCha20Poly1305, counter: int, flag: bytes, ciphertext: memoryview, out: memoryview
) -> None:
    try:
        aead.decrypt_into(_nonce(counter, flag), ciphertext, None, out)
    except InvalidTag:
        raise PayloadError(f"payload chunk {counter} failed authentication") from None
