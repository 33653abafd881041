"""The age Writer and Reader: chunking, streaming, and every way a file can be damaged."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portal.core.age import (
    AgeError,
    ArmorError,
    HeaderError,
    HMACError,
    NoIdentityMatchError,
    PayloadError,
    Reader,
    ScryptIdentity,
    ScryptRecipient,
    Stanza,
    Writer,
    X25519Identity,
    decrypt,
    encrypt,
)
from portal.core.fsio import replace_with_chunks

CHUNK = 64 * 1024
ENC_CHUNK = CHUNK + 16
FAST_WORK_FACTOR = 10


@pytest.fixture(autouse=True)
def fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ScryptRecipient's default cost cheap; production cost is tested in test_age_keys."""
    monkeypatch.setattr(ScryptRecipient.__init__, "__defaults__", (FAST_WORK_FACTOR,))


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    """A deterministic RNG, so that two encryptions can be compared byte for byte."""
    generator = random.Random(seed)
    return lambda n: generator.randbytes(n)


def pieces(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """Split data into pieces whose sizes cycle through `sizes`."""
    pos, i = 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        yield data[pos : pos + size]
        pos += size
        i += 1


def encrypt_in_pieces(
    plaintext: bytes,
    identity: X25519Identity,
    sizes: Sequence[int],
    seed: int = 1,
    mutable: Sequence[bool] = (False,),
) -> bytes:
    """Encrypt with writes of the given sizes, as bytes or as (reused) bytearrays."""
    out = io.BytesIO()
    scratch = bytearray()
    with Writer(out, [identity.recipient], rng=seeded_rng(seed)) as writer:
        for i, piece in enumerate(pieces(plaintext, sizes)):
            if mutable[i % len(mutable)]:
                # A caller may reuse its buffer as soon as write() returns.
                scratch[:] = piece
                assert writer.write(scratch) == len(piece)
                scratch[:] = bytes(len(scratch))
            else:
                assert writer.write(piece) == len(piece)
    return out.getvalue()


def header_end(ciphertext: bytes) -> int:
    """Offset of the payload nonce: just after the MAC line."""
    return ciphertext.index(b"\n", ciphertext.index(b"\n--- ") + 1) + 1


def released_before_error(ciphertext: bytes, identity: X25519Identity) -> tuple[bytes, AgeError]:
    released = bytearray()
    reader = Reader(io.BytesIO(ciphertext), [identity])
    with pytest.raises(AgeError) as info:
        for chunk in reader.chunks():
            released += chunk
    return bytes(released), info.value


@pytest.fixture
def identity() -> X25519Identity:
    return X25519Identity.generate()


# --- Writer ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 5])
def test_payload_has_one_chunk_per_64_kib_and_the_last_is_never_empty_unless_all_is(
    size: int, identity: X25519Identity
) -> None:
    ciphertext = encrypt(os.urandom(size), [identity.recipient])
    payload = len(ciphertext) - header_end(ciphertext) - 16
    chunks = max(1, -(-size // CHUNK))
    assert payload == size + 16 * chunks


@given(
    plaintext=st.binary(max_size=3 * CHUNK + 100),
    sizes=st.lists(st.integers(min_value=1, max_value=2 * CHUNK + 3), min_size=1, max_size=8),
    mutable=st.lists(st.booleans(), min_size=1, max_size=4),
)
@settings(max_examples=50, deadline=None)
def test_ciphertext_does_not_depend_on_how_the_plaintext_was_split(
    plaintext: bytes, sizes: list[int], mutable: list[bool]
) -> None:
    identity = X25519Identity(bytes(range(32)))
    whole = encrypt_in_pieces(plaintext, identity, [max(1, len(plaintext))])
    assert encrypt_in_pieces(plaintext, identity, sizes, mutable=mutable) == whole
    assert decrypt(whole, [identity]) == plaintext


def test_writer_accepts_bytearray_and_memoryview_of_any_format(identity: X25519Identity) -> None:
    out = io.BytesIO()
    with Writer(out, [identity.recipient]) as writer:
        assert writer.write(bytearray(b"abc")) == 3
        assert writer.write(memoryview(b"defg")[1:]) == 3
        assert writer.write(memoryview(bytearray(8)).cast("I")) == 8
    assert decrypt(out.getvalue(), [identity]) == b"abcefg" + bytes(8)


def test_writer_writes_the_header_immediately(identity: X25519Identity) -> None:
    out = io.BytesIO()
    Writer(out, [identity.recipient])
    assert out.getvalue().startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert len(out.getvalue()) == header_end(out.getvalue()) + 16


def test_write_after_close_raises_and_close_twice_is_harmless(identity: X25519Identity) -> None:
    out = io.BytesIO()
    writer = Writer(out, [identity.recipient])
    writer.write(b"testimony")
    writer.close()
    writer.close()
    assert writer.closed
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")
    assert not out.closed
    assert decrypt(out.getvalue(), [identity]) == b"testimony"


def test_writer_left_by_an_exception_produces_a_file_that_never_verifies(
    identity: X25519Identity,
) -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError), Writer(out, [identity.recipient]) as writer:
        writer.write(os.urandom(3 * CHUNK))
        raise RuntimeError("upload aborted")
    with pytest.raises(PayloadError, match="truncated"):
        decrypt(out.getvalue(), [identity])


def test_writer_refuses_more_data_after_the_output_failed(identity: X25519Identity) -> None:
    class FullDisk(io.BytesIO):
        def write(self, data: object) -> int:
            if self.tell() > 100:
                raise OSError(28, "No space left on device")
            return super().write(data)  # type: ignore[arg-type]

    writer = Writer(FullDisk(), [identity.recipient])
    with pytest.raises(OSError):
        writer.write(os.urandom(2 * CHUNK))
    with pytest.raises(ValueError, match="earlier error"):
        writer.write(b"x")


def test_writer_needs_at_least_one_recipient() -> None:
    with pytest.raises(ValueError, match="no recipients"):
        Writer(io.BytesIO(), [])


def test_scrypt_recipient_must_be_alone(identity: X25519Identity) -> None:
    with pytest.raises(ValueError, match="only recipient"):
        Writer(io.BytesIO(), [ScryptRecipient(b"pass"), identity.recipient])


def test_writer_rejects_a_short_reading_rng(identity: X25519Identity) -> None:
    with pytest.raises(ValueError, match="rng"):
        Writer(io.BytesIO(), [identity.recipient], rng=lambda n: bytes(n - 1))


def test_armored_output_is_strict_pem_and_round_trips(identity: X25519Identity) -> None:
    plaintext = os.urandom(CHUNK + 1000)
    out = io.BytesIO()
    with Writer(out, [identity.recipient], armor=True) as writer:
        for piece in pieces(plaintext, [1, 47, 48, 49, 5000]):
            writer.write(piece)
    armored = out.getvalue()
    lines = armored.decode("ascii").split("\n")
    assert lines[0] == "-----BEGIN AGE ENCRYPTED FILE-----"
    assert lines[-2:] == ["-----END AGE ENCRYPTED FILE-----", ""]
    body = lines[1:-2]
    assert all(len(line) == 64 for line in body[:-1]) and 0 < len(body[-1]) <= 64
    binary = base64.b64decode("".join(body), validate=True)
    assert decrypt(binary, [identity]) == plaintext
    assert decrypt(armored, [identity]) == plaintext


def test_reader_accepts_whitespace_and_crlf_around_armor(identity: X25519Identity) -> None:
    out = io.BytesIO()
    with Writer(out, [identity.recipient], armor=True) as writer:
        writer.write(b"witness statement")
    crlf = out.getvalue().replace(b"\n", b"\r\n")
    assert decrypt(b"\n \t\r\n" + crlf + b"\n\n ", [identity]) == b"witness statement"


@pytest.mark.parametrize("endings", ["lf", "crlf", "mixed"])
def test_large_armored_files_decode_with_any_line_endings(
    identity: X25519Identity, endings: str
) -> None:
    plaintext = os.urandom(3 * CHUNK + 11)
    out = io.BytesIO()
    with Writer(out, [identity.recipient], armor=True) as writer:
        writer.write(plaintext)
    armored = out.getvalue()
    if endings == "crlf":
        armored = armored.replace(b"\n", b"\r\n")
    elif endings == "mixed":
        armored = armored.replace(b"\n", b"\r\n", 1000)
    assert decrypt(armored, [identity]) == plaintext


def test_custom_recipient_stanzas_are_wrapped_at_64_columns_and_ignored_by_others(
    identity: X25519Identity,
) -> None:
    class Grease:
        def wrap(self, file_key: bytes, rng: Callable[[int], bytes]) -> list[Stanza]:
            # 48 bytes is exactly one full line, so an empty final line follows.
            return [Stanza("example.org/grease", ("a", "b"), rng(48))]

    ciphertext = encrypt(b"hello", [Grease(), identity.recipient])
    assert re.search(rb"\n-> example.org/grease a b\n[A-Za-z0-9+/]{64}\n\n-> X25519 ", ciphertext)
    assert decrypt(ciphertext, [identity]) == b"hello"


# --- Reader ------------------------------------------------------------------


def test_reader_read_readinto_iteration_and_readall_agree(identity: X25519Identity) -> None:
    plaintext = os.urandom(3 * CHUNK + 777)
    ciphertext = encrypt(plaintext, [identity.recipient])

    reader = Reader(io.BytesIO(ciphertext), [identity])
    parts = [reader.read(1), reader.read(CHUNK), reader.read(10), reader.read()]
    assert b"".join(parts) == plaintext and len(parts[1]) == CHUNK
    assert reader.read() == b"" and reader.read(5) == b""

    reader = Reader(io.BytesIO(ciphertext), [identity])
    buffer = bytearray(100_000)
    got = bytearray()
    while n := reader.readinto(buffer):
        got += buffer[:n]
    assert got == plaintext

    chunks = list(Reader(io.BytesIO(ciphertext), [identity]))
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, CHUNK, 777]
    assert Reader(io.BytesIO(ciphertext), [identity]).readall() == plaintext
    assert io.BufferedReader(Reader(io.BytesIO(ciphertext), [identity])).read() == plaintext


def test_reader_of_empty_plaintext_yields_nothing(identity: X25519Identity) -> None:
    reader = Reader(io.BytesIO(encrypt(b"", [identity.recipient])), [identity])
    assert list(reader.chunks()) == []
    assert reader.read() == b""


def test_reader_tries_every_identity(identity: X25519Identity) -> None:
    others = [X25519Identity.generate() for _ in range(2)]
    ciphertext = encrypt(b"x", [others[0].recipient, identity.recipient])
    assert decrypt(ciphertext, [others[1], ScryptIdentity(b"nope"), identity]) == b"x"


def test_wrong_key_is_no_match(identity: X25519Identity) -> None:
    ciphertext = encrypt(b"x", [identity.recipient])
    with pytest.raises(NoIdentityMatchError):
        decrypt(ciphertext, [X25519Identity.generate()])


def test_wrong_passphrase_is_no_match() -> None:
    ciphertext = encrypt(b"x", [ScryptRecipient(b"right")])
    assert decrypt(ciphertext, [ScryptIdentity(b"right")]) == b"x"
    with pytest.raises(NoIdentityMatchError, match="passphrase"):
        decrypt(ciphertext, [ScryptIdentity(b"wrong")])


def test_reader_needs_at_least_one_identity(identity: X25519Identity) -> None:
    with pytest.raises(ValueError):
        Reader(io.BytesIO(encrypt(b"x", [identity.recipient])), [])


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda c: b"", HeaderError),
        (lambda c: b"age-encryption.org/v2" + c[21:], HeaderError),
        (
            lambda c: c.replace(b"age-encryption.org/v1\n", b"age-encryption.org/v1\r\n", 1),
            HeaderError,
        ),
        (lambda c: c.replace(b"\n-> X25519 ", b"\n-> X25519  ", 1), HeaderError),
        (lambda c: c.replace(b"\n--- ", b"\n---", 1), HeaderError),
        (lambda c: c.replace(b"-> X25519 ", b"-> x25519 ", 1), NoIdentityMatchError),
        (lambda c: b"\xef\xbb\xbf" + c, ArmorError),
        (lambda c: b"garbage", ArmorError),
    ],
    ids=[
        "empty",
        "wrong-version",
        "crlf",
        "empty-argument",
        "mac-without-space",
        "lowercase-type",
        "byte-order-mark",
        "not-age",
    ],
)
def test_malformed_headers_are_rejected(
    identity: X25519Identity, mangle: Callable[[bytes], bytes], error: type[AgeError]
) -> None:
    ciphertext = encrypt(b"testimony", [identity.recipient])
    with pytest.raises(error):
        decrypt(mangle(ciphertext), [identity])


def test_non_canonical_base64_in_the_header_is_rejected(identity: X25519Identity) -> None:
    ciphertext = encrypt(b"testimony", [identity.recipient])
    share = re.search(rb"-> X25519 ([A-Za-z0-9+/]{43})\n", ciphertext)
    assert share
    last = share.group(1)[-1:]
    # The last of 43 characters carries 2 unused bits; setting one gives a
    # second spelling of the same bytes, which a strict parser refuses.
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sibling = alphabet[alphabet.index(last) + 1 : alphabet.index(last) + 2]
    mangled = ciphertext.replace(share.group(1), share.group(1)[:-1] + sibling, 1)
    with pytest.raises(HeaderError, match="base64"):
        decrypt(mangled, [identity])
    padded = ciphertext.replace(share.group(1), share.group(1) + b"=", 1)
    with pytest.raises(HeaderError):
        decrypt(padded, [identity])


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    mutable = bytearray(data)
    mutable[offset] ^= 1 << bit
    return bytes(mutable)


def test_flipping_a_bit_of_the_header_mac_is_an_hmac_error(identity: X25519Identity) -> None:
    ciphertext = encrypt(b"testimony", [identity.recipient])
    line = re.search(rb"\n--- ([A-Za-z0-9+/]{43})\n", ciphertext)
    assert line
    mac = base64.b64decode(line.group(1) + b"=")
    forged = base64.b64encode(flip(mac, 5)).rstrip(b"=")
    with pytest.raises(HMACError):
        decrypt(ciphertext.replace(line.group(1), forged), [identity])


def test_flipping_a_bit_of_a_foreign_stanza_is_an_hmac_error(identity: X25519Identity) -> None:
    # The MAC covers stanzas for other recipients too, so nobody can swap them.
    other = X25519Identity.generate()
    ciphertext = encrypt(b"testimony", [other.recipient, identity.recipient])
    share = re.search(rb"-> X25519 ([A-Za-z0-9+/]{43})\n", ciphertext)
    assert share
    raw = base64.b64decode(share.group(1) + b"=")
    forged = base64.b64encode(flip(raw, 0)).rstrip(b"=")
    with pytest.raises(HMACError):
        decrypt(ciphertext.replace(share.group(1), forged, 1), [identity])


def test_flipping_a_bit_of_our_stanza_body_is_no_match(identity: X25519Identity) -> None:
    ciphertext = encrypt(b"testimony", [identity.recipient])
    body = re.search(rb"\n([A-Za-z0-9+/]{43})\n--- ", ciphertext)
    assert body
    raw = base64.b64decode(body.group(1) + b"=")
    forged = base64.b64encode(flip(raw, 3)).rstrip(b"=")
    with pytest.raises(NoIdentityMatchError):
        decrypt(ciphertext.replace(body.group(1), forged, 1), [identity])


@pytest.mark.parametrize("where", ["nonce", "first-chunk", "last-tag"])
def test_flipping_a_bit_of_the_payload_is_a_payload_error(
    identity: X25519Identity, where: str
) -> None:
    ciphertext = encrypt(os.urandom(100), [identity.recipient])
    offset = {"nonce": header_end(ciphertext), "first-chunk": header_end(ciphertext) + 20}.get(
        where, len(ciphertext) - 1
    )
    with pytest.raises(PayloadError):
        decrypt(flip(ciphertext, offset, 7), [identity])


def test_corrupt_chunk_releases_only_the_chunks_before_it(identity: X25519Identity) -> None:
    plaintext = os.urandom(3 * CHUNK + 10)
    ciphertext = encrypt(plaintext, [identity.recipient])
    start = header_end(ciphertext) + 16
    released, error = released_before_error(flip(ciphertext, start + ENC_CHUNK + 5), identity)
    assert isinstance(error, PayloadError)
    assert released == plaintext[:CHUNK]


def test_payload_failure_is_sticky(identity: X25519Identity) -> None:
    ciphertext = encrypt(os.urandom(2 * CHUNK + 1), [identity.recipient])
    reader = Reader(io.BytesIO(ciphertext[:-1]), [identity])
    assert len(reader.read(2 * CHUNK)) == 2 * CHUNK
    with pytest.raises(PayloadError):
        reader.read(1)
    with pytest.raises(PayloadError):
        reader.read(1)
    with pytest.raises(PayloadError):
        list(reader.chunks())


@pytest.mark.parametrize("size", [1, CHUNK, CHUNK + 1, 2 * CHUNK])
def test_every_truncation_is_detected(identity: X25519Identity, size: int) -> None:
    plaintext = os.urandom(size)
    ciphertext = encrypt(plaintext, [identity.recipient])
    start = header_end(ciphertext)
    cuts = {0, 10, start - 1, start, start + 8, start + 16, start + 17, len(ciphertext) - 1}
    cuts |= {start + 16 + k * ENC_CHUNK for k in range(1, size // CHUNK + 1)}
    for cut in sorted(c for c in cuts if c < len(ciphertext)):
        with pytest.raises(AgeError):
            decrypt(ciphertext[:cut], [identity])


def test_truncation_at_a_chunk_boundary_releases_whole_chunks_then_fails(
    identity: X25519Identity,
) -> None:
    plaintext = os.urandom(2 * CHUNK + 5)
    ciphertext = encrypt(plaintext, [identity.recipient])
    cut = header_end(ciphertext) + 16 + 2 * ENC_CHUNK
    released, error = released_before_error(ciphertext[:cut], identity)
    assert isinstance(error, PayloadError) and "truncated" in str(error)
    assert released == plaintext[: 2 * CHUNK]


@pytest.mark.parametrize("extra", [b"\x00", b"\n", os.urandom(ENC_CHUNK)])
def test_trailing_bytes_are_rejected(identity: X25519Identity, extra: bytes) -> None:
    ciphertext = encrypt(os.urandom(CHUNK), [identity.recipient])
    with pytest.raises(PayloadError):
        decrypt(ciphertext + extra, [identity])


def test_reader_works_on_a_source_that_returns_short_reads(identity: X25519Identity) -> None:
    plaintext = os.urandom(2 * CHUNK + 3)
    ciphertext = encrypt(plaintext, [identity.recipient])

    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            chunk = self._data.read(min(len(buffer), 4093))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    assert Reader(Trickle(ciphertext), [identity]).read() == plaintext  # type: ignore[arg-type]


# --- blocks(): the same plaintext, many chunks at a time ----------------------


def released_by_blocks(
    ciphertext: bytes, identity: X25519Identity, per_block: int
) -> tuple[bytes, AgeError | None, list[memoryview]]:
    blocks: list[memoryview] = []
    error = None
    try:
        for block in Reader(io.BytesIO(ciphertext), [identity]).blocks(per_block):
            blocks.append(block)
    except AgeError as exc:
        error = exc
    return b"".join(blocks), error, blocks


def damaged_versions(plaintext: bytes, identity: X25519Identity) -> dict[str, bytes]:
    ciphertext = encrypt(plaintext, [identity.recipient])
    start = header_end(ciphertext) + 16
    chunks = max(1, -(-len(plaintext) // CHUNK))
    versions = {
        "intact": ciphertext,
        "trailing byte": ciphertext + b"\x00",
        "trailing chunk": ciphertext + os.urandom(ENC_CHUNK),
        "cut inside the last chunk": ciphertext[:-1],
        "no chunk at all": ciphertext[:start],
    }
    for k in range(chunks):
        versions[f"chunk {k} altered"] = flip(ciphertext, start + k * ENC_CHUNK + 5)
        if k:
            versions[f"cut before chunk {k}"] = ciphertext[: start + k * ENC_CHUNK]
    return versions


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 7])
@pytest.mark.parametrize("per_block", [1, 2, 16])
def test_blocks_release_exactly_what_chunks_release(
    identity: X25519Identity, size: int, per_block: int
) -> None:
    for damage, ciphertext in damaged_versions(os.urandom(size), identity).items():
        by_chunks = bytearray()
        chunk_error: AgeError | None = None
        try:
            for chunk in Reader(io.BytesIO(ciphertext), [identity]).chunks():
                by_chunks += chunk
        except AgeError as exc:
            chunk_error = exc
        released, block_error, _blocks = released_by_blocks(ciphertext, identity, per_block)
        assert released == by_chunks, damage
        assert type(block_error) is type(chunk_error), damage
        assert str(block_error) == str(chunk_error), damage


def test_blocks_are_new_buffers_that_are_never_written_again(identity: X25519Identity) -> None:
    # Another thread may still be hashing or writing a block while the next is
    # decrypted: a block reused for the next one would change under it.
    plaintext = os.urandom(7 * CHUNK + 3)
    ciphertext = encrypt(plaintext, [identity.recipient])
    _released, error, blocks = released_by_blocks(ciphertext, identity, 2)
    assert error is None
    assert [len(b) for b in blocks] == [2 * CHUNK] * 3 + [CHUNK + 3]
    assert len({id(b.obj) for b in blocks}) == len(blocks)
    assert b"".join(blocks) == plaintext


def test_a_block_released_before_a_failure_holds_nothing_unverified(
    identity: X25519Identity,
) -> None:
    plaintext = os.urandom(5 * CHUNK)
    ciphertext = encrypt(plaintext, [identity.recipient])
    start = header_end(ciphertext) + 16
    released, error, blocks = released_by_blocks(
        flip(ciphertext, start + 3 * ENC_CHUNK + 9), identity, 4
    )
    assert isinstance(error, PayloadError) and "chunk 3" in str(error)
    assert released == plaintext[: 3 * CHUNK]
    # The block the failed chunk was decrypted into is not handed out: only
    # a copy of its verified part, with nothing behind it.
    (partial,) = blocks
    assert len(partial.obj) == 3 * CHUNK  # type: ignore[arg-type]


def test_blocks_cannot_be_mixed_with_other_reads(identity: X25519Identity) -> None:
    ciphertext = encrypt(os.urandom(3 * CHUNK), [identity.recipient])
    reader = Reader(io.BytesIO(ciphertext), [identity])
    assert len(reader.read(10)) == 10
    with pytest.raises(ValueError, match="already read"):
        list(reader.blocks())
    reader = Reader(io.BytesIO(ciphertext), [identity])
    next(iter(reader.blocks(1)))
    with pytest.raises(ValueError, match="blocks"):
        reader.read(10)


# --- writing plaintext to disk ------------------------------------------------
# The reviewer's tool writes what it decrypts with fsio.replace_with_chunks: the
# file appears only once the Reader's last chunk has verified.


def decrypt_to_path(src: io.BytesIO, identities: Sequence[X25519Identity], dest: Path) -> None:
    replace_with_chunks(dest, Reader(src, identities).chunks())


def test_decrypted_plaintext_appears_whole_with_its_hash(
    identity: X25519Identity, tmp_path: Path
) -> None:
    plaintext = os.urandom(2 * CHUNK + 9)
    dest = tmp_path / "testimony.bin"
    reader = Reader(io.BytesIO(encrypt(plaintext, [identity.recipient])), [identity])
    size, digest = replace_with_chunks(dest, reader.chunks())
    assert (size, digest) == (len(plaintext), hashlib.sha256(plaintext).hexdigest())
    assert dest.read_bytes() == plaintext
    assert dest.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["testimony.bin"]


def test_truncated_file_leaves_no_plaintext_and_keeps_the_old_file(
    identity: X25519Identity, tmp_path: Path
) -> None:
    dest = tmp_path / "testimony.bin"
    dest.write_bytes(b"previous version")
    ciphertext = encrypt(os.urandom(3 * CHUNK), [identity.recipient])
    with pytest.raises(PayloadError):
        decrypt_to_path(io.BytesIO(ciphertext[:-ENC_CHUNK]), [identity], dest)
    assert dest.read_bytes() == b"previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["testimony.bin"]


def test_a_header_failure_creates_nothing(identity: X25519Identity, tmp_path: Path) -> None:
    ciphertext = encrypt(b"x", [identity.recipient])
    with pytest.raises(NoIdentityMatchError):
        decrypt_to_path(io.BytesIO(ciphertext), [X25519Identity.generate()], tmp_path / "f")
    assert list(tmp_path.iterdir()) == []


@given(plaintext=st.binary(max_size=2 * CHUNK + 10), armor=st.booleans())
@settings(max_examples=50, deadline=None)
def test_round_trip_property(plaintext: bytes, armor: bool) -> None:
    identity = X25519Identity(hashlib.sha256(plaintext).digest())
    out = io.BytesIO()
    with Writer(out, [identity.recipient], armor=armor) as writer:
        writer.write(plaintext)
    assert decrypt(out.getvalue(), [identity]) == plaintext
