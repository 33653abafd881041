"""portal.core.age passes the C2SP CCTV age conformance vectors (age-encryption.org/testkit).

Each vector is an age file plus the expected outcome. The vectors live outside
the repository, in ../shared/age-testkit or wherever AGE_TESTKIT points; they
are read in place, never copied.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from portal.core.age import (
    AgeError,
    ArmorError,
    HeaderError,
    HMACError,
    Identity,
    NoIdentityMatchError,
    PayloadError,
    Reader,
    ScryptIdentity,
    X25519Identity,
    parse_identity,
)
from portal.core.fsio import replace_with_chunks
from tests.support import unavailable

TESTKIT = Path(
    os.environ.get("AGE_TESTKIT") or Path(__file__).resolve().parents[2] / "shared" / "age-testkit"
)

KNOWN_KEYS = {
    "expect",
    "payload",
    "identity",
    "passphrase",
    "armored",
    "compressed",
    "file key",
    "comment",
}

EXPECTED_ERROR: dict[str, type[AgeError]] = {
    "header failure": HeaderError,
    "HMAC failure": HMACError,
    "payload failure": PayloadError,
    "armor failure": ArmorError,
    "no match": NoIdentityMatchError,
}


def _testkit_missing() -> NoReturn:
    """Fail in CI (the vectors are required there), skip visibly elsewhere."""
    message = (
        f"age conformance vectors not found at {TESTKIT}: get the C2SP CCTV age testkit "
        "(https://github.com/C2SP/CCTV, folder age/testdata) and set AGE_TESTKIT=/path/to/it"
    )
    unavailable(message)


@dataclass
class Vector:
    name: str
    expect: str
    body: bytes
    payload: str | None = None
    identities: list[str] = field(default_factory=list)
    passphrases: list[str] = field(default_factory=list)
    armored: bool = False
    unknown_keys: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Vector:
        data = path.read_bytes()
        meta, _, body = data.partition(b"\n\n")
        vector = cls(name=path.name, expect="", body=body)
        compressed = False
        for line in meta.decode("utf-8").split("\n"):
            key, _, value = line.partition(": ")
            if key not in KNOWN_KEYS:
                vector.unknown_keys.append(key)
            elif key == "expect":
                vector.expect = value
            elif key == "payload":
                vector.payload = value
            elif key == "identity":
                vector.identities.append(value)
            elif key == "passphrase":
                vector.passphrases.append(value)
            elif key == "armored":
                vector.armored = value == "yes"
            elif key == "compressed":
                assert value == "zlib", f"{path.name}: unknown compression {value!r}"
                compressed = True
        if compressed:
            vector.body = zlib.decompress(body)
        return vector

    def skip_reason(self) -> str | None:
        if self.unknown_keys:
            return f"unknown testkit keys {self.unknown_keys} (skipped, as the README says)"
        return None

    def age_identities(self) -> list[Identity]:
        identities: list[Identity] = [parse_identity(i) for i in self.identities]
        identities += [ScryptIdentity(p.encode()) for p in self.passphrases]
        # A vector with no key at all must fail before any key is needed; an
        # unrelated identity lets the reader get that far.
        return identities or [X25519Identity.generate()]


def _vector_params() -> list[object]:
    if not TESTKIT.is_dir():
        return [pytest.param(None, id="testkit-missing")]
    paths = sorted(p for p in TESTKIT.iterdir() if p.is_file() and p.name != "README.md")
    return [pytest.param(p, id=p.name) for p in paths]


@pytest.fixture(params=_vector_params())
def vector(request: pytest.FixtureRequest) -> Vector:
    path = request.param
    if path is None:
        _testkit_missing()
    loaded = Vector.load(path)
    reason = loaded.skip_reason()
    if reason:
        pytest.skip(reason)
    return loaded


def assert_expected_error(vector: Vector, error: AgeError | None) -> None:
    if vector.expect == "success":
        assert error is None, f"{vector.name}: unexpected {error!r}"
        return
    expected = EXPECTED_ERROR[vector.expect]
    assert isinstance(error, expected), (
        f"{vector.name}: expected {expected.__name__}, got {error!r}"
    )
    if expected is HeaderError:
        assert not isinstance(error, HMACError), f"{vector.name}: MAC was not the problem"


def assert_releases_expected(
    vector: Vector, pieces: Callable[[Reader], Iterable[bytes | memoryview]]
) -> AgeError | None:
    """Decrypt `vector` through `pieces`; check its outcome and what was released; the error."""
    released = hashlib.sha256()
    error: AgeError | None = None
    try:
        reader = Reader(io.BytesIO(vector.body), vector.age_identities())
        for piece in pieces(reader):
            released.update(piece)
    except AgeError as e:
        error = e
    assert_expected_error(vector, error)
    if vector.payload is not None:
        assert released.hexdigest() == vector.payload
    return error


def test_vector_decrypts_to_expected_outcome_and_releases_expected_plaintext(
    vector: Vector,
) -> None:
    assert_releases_expected(vector, Reader.chunks)


def test_vector_released_in_blocks_as_open_writes_it(vector: Vector, tmp_path: Path) -> None:
    # `open` decrypts attachments with blocks() and writes them behind: the
    # same outcome, the same released plaintext, and a file only on success.
    error = assert_releases_expected(vector, lambda reader: reader.blocks(1))
    dest = tmp_path / "plaintext"
    try:
        reader = Reader(io.BytesIO(vector.body), vector.age_identities())
        size, digest = replace_with_chunks(dest, reader.blocks(), behind=True)
    except AgeError as e:
        assert type(e) is type(error)
        assert not dest.exists()
    else:
        assert error is None and size == dest.stat().st_size
        if vector.payload is not None:
            assert digest == vector.payload
    # No temporary file is left behind either way.
    assert [p.name for p in tmp_path.iterdir()] == ([] if error else ["plaintext"])


def test_vector_written_to_disk_leaves_a_file_only_on_success(
    vector: Vector, tmp_path: Path
) -> None:
    # As the reviewer's tool writes plaintext: through fsio.replace_with_chunks.
    dest = tmp_path / "plaintext"
    error: AgeError | None = None
    try:
        reader = Reader(io.BytesIO(vector.body), vector.age_identities())
        size, digest = replace_with_chunks(dest, reader.chunks())
    except AgeError as e:
        error = e
    assert_expected_error(vector, error)
    if error is None:
        assert (dest.stat().st_mode & 0o777) == 0o600
        assert size == dest.stat().st_size
        assert digest == hashlib.sha256(dest.read_bytes()).hexdigest()
        if vector.payload is not None:
            assert digest == vector.payload
    else:
        assert not dest.exists()
    # No temporary file is left behind either way.
    assert sorted(p.name for p in tmp_path.iterdir()) == (["plaintext"] if error is None else [])


def test_testkit_has_the_documented_size() -> None:
    if not TESTKIT.is_dir():
        _testkit_missing()
    vectors = [p for p in TESTKIT.iterdir() if p.is_file() and p.name != "README.md"]
    # Guards against a partial checkout silently shrinking the conformance run.
    assert len(vectors) >= 143
