"""Reviewer identity files: create them passphrase-protected, and load them.

An identity file is the text age-keygen writes ("# created: ...", "# public
key: age1pq1...", "AGE-SECRET-KEY-PQ-1..." for a post-quantum identity,
the same with "age1..." and "AGE-SECRET-KEY-1..." for a classic X25519 one).
By default it is stored encrypted
with an age scrypt (passphrase) stanza, exactly like `age -p` output, so the
stock CLI reads it too: `age -d -i reviewer-identity.age` asks for the
passphrase. A lost laptop then gives away nothing without the passphrase.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

from portal.core.age import (
    AgeError,
    HMACError,
    KeyFormatError,
    NoIdentityMatchError,
    PrivateKey,
    ScryptIdentity,
    ScryptRecipient,
    decrypt,
    encrypt,
    looks_encrypted_identity,
    parse_identities,
)
from portal.core.fsio import FILE_MODE, create_new
from portal.core.replysig import ReplySigningKey, SignatureError

# age's own default for `age -p`: about a second of work and 256 MiB of
# memory per guess on a laptop, which is what makes a stolen file slow to
# attack. Tests lower it through the `work_factor` arguments, never here.
IDENTITY_WORK_FACTOR = 18
MIN_PASSPHRASE_CHARS = 10
# An identity file holds a few lines; anything much larger is not one.
MAX_IDENTITY_FILE = 1 << 20


class KeyFileError(Exception):
    """An identity file cannot be written, read or unlocked; the message says why."""


PassphraseSource = Callable[[Path], bytes]


def identity_file_text(identity: PrivateKey, *, note: str = "created") -> bytes:
    """The text `age-keygen` writes for an identity, with a day-precision date."""
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return (f"# {note}: {today}\n# public key: {identity.recipient}\n{identity}\n").encode("ascii")


def check_passphrase(passphrase: bytes) -> None:
    """Raises KeyFileError for a passphrase too short to protect a key."""
    if len(passphrase.decode("utf-8", errors="replace")) < MIN_PASSPHRASE_CHARS:
        raise KeyFileError(
            f"the passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters; "
            "choose a longer one (several unrelated words work well)"
        )


def protect(plaintext: bytes, passphrase: bytes, work_factor: int = IDENTITY_WORK_FACTOR) -> bytes:
    """Encrypt an identity file with an age scrypt stanza (what `age -p` writes)."""
    return encrypt(plaintext, [ScryptRecipient(passphrase, work_factor=work_factor)])


def write_new_file(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Create `path` with `data`, durably, refusing to replace anything that exists.

    Raises:
        KeyFileError: the file exists or cannot be written.
    """
    try:
        create_new(path, data, mode=mode)
    except FileExistsError as exc:
        raise KeyFileError(
            f"{path} already exists; refusing to overwrite it (choose another file name)"
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from exc


def read_identity_text(path: Path, passphrase: PassphraseSource) -> bytes:
    """The plain identity text of a file, unlocking it with a passphrase if it is encrypted.

    Raises:
        KeyFileError: unreadable, wrong passphrase, or damaged.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_IDENTITY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read the identity file {path}: {exc.strerror}") from exc
    if len(data) > MAX_IDENTITY_FILE:
        raise KeyFileError(f"{path} is too large to be an identity file")
    if not looks_encrypted_identity(data):
        return data
    secret = passphrase(path)
    try:
        return decrypt(data, [ScryptIdentity(secret)])
    except (NoIdentityMatchError, HMACError) as exc:
        raise KeyFileError(f"wrong passphrase for {path} (or the file is damaged)") from exc
    except AgeError as exc:
        raise KeyFileError(f"{path} is not a readable encrypted identity: {exc}") from exc


def load_identities(paths: Sequence[Path], passphrase: PassphraseSource) -> list[PrivateKey]:
    """Every identity in the given files, in order.

    Raises:
        KeyFileError: a file cannot be read or unlocked, or holds no identity.
    """
    identities: list[PrivateKey] = []
    for path in paths:
        text = read_identity_text(path, passphrase)
        try:
            found = parse_identities(text.decode("utf-8"))
        except (UnicodeDecodeError, KeyFormatError) as exc:
            raise KeyFileError(
                f"{path} is not an age identity file "
                "(expected a line AGE-SECRET-KEY-PQ-1... or AGE-SECRET-KEY-1...)"
            ) from exc
        if not found:
            raise KeyFileError(
                f"{path} holds no identity (no AGE-SECRET-KEY-PQ-1... or AGE-SECRET-KEY-1... line)"
            )
        identities.extend(found)
    return identities


def signing_key_file_text(key: ReplySigningKey) -> bytes:
    """The text of a reply signing key file: a date, the public half, the private key."""
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return (
        f"# testimony-review reply signing key, created: {today}\n"
        f"# public key (for PORTAL_REPLY_SIGNERS): {key.public}\n{key.secret_line()}\n"
    ).encode("ascii")


def load_signing_key(path: Path, passphrase: PassphraseSource) -> ReplySigningKey:
    """The reply signing key in a file `keygen --signing` wrote.

    Raises:
        KeyFileError: unreadable, wrong passphrase, or not a signing key file.
    """
    text = read_identity_text(path, passphrase)
    try:
        return ReplySigningKey.parse_file_text(text.decode("utf-8"))
    except (UnicodeDecodeError, SignatureError) as exc:
        raise KeyFileError(
            f"{path} is not a reply signing key ({exc}); give the file "
            "`testimony-review keygen --signing` wrote"
        ) from None
