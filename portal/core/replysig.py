"""Signed replies: the organisation's offline Ed25519 key vouches for every reply file.

A reply is an age file encrypted to one witness, so the server cannot read
it, and it cannot tell an organisation's reply from one planted by whoever
can write to its data folder. Each reply therefore travels with a
signature file (`<name>.sig`, beside `<name>.age`) made on the air-gapped
machine with the organisation's signing key; the server holds only the
public halves (`PORTAL_REPLY_SIGNERS`), checks a signature before it stores
a reply and again before it shows one, and never needs to decrypt anything
to do so.

What is signed is the mailbox the reply is for, the SHA-256 of its
ciphertext and the day it was written: a signed reply cannot be moved into
another witness's mailbox, altered, or kept past its time. The exact bytes
are this module's label followed by the canonical JSON of the signature
file without its `signature` member (docs/FORMAT.md, "Reply signatures").

Plain Python over PyNaCl (libsodium's Ed25519); no Flask, no environment.
Both the reviewer's `reply` (which signs) and the server (which checks)
import it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

SIGNATURE_FORMAT = "testimony-portal/reply-signature/1"
SIGNATURE_SUFFIX = ".sig"
# A signer's public key as it is written in the signers file, one a line.
PUBLIC_PREFIX = "testimony-reply-signer-ed25519:"
# The private half, only ever inside the (passphrase-protected) key file.
SECRET_PREFIX = "TESTIMONY-REPLY-SIGNING-KEY-ED25519:"  # noqa: S105 (a prefix, not a secret)
# Domain separation: these signatures can never be mistaken for any other.
_LABEL = b"testimony-portal/reply-signature/1\x00"
# A signature file holds a few short members; anything larger is not one.
MAX_SIGNATURE_FILE = 4096
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MEMBERS = ("format", "mailbox", "ciphertext_sha256", "written", "signer", "signature")


class SignatureError(Exception):
    """A reply's signature is missing, malformed, by an unknown key, or does not match."""


def _b64decode(text: str, length: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SignatureError(f"{what} is not base64") from None
    if len(raw) != length or base64.b64encode(raw).decode("ascii") != text:
        raise SignatureError(f"{what} is not {length} bytes in canonical base64")
    return raw


@dataclass(frozen=True)
class ReplySigner:
    """A public signing key: the line `testimony-reply-signer-ed25519:<base64>`."""

    key: bytes

    def __str__(self) -> str:
        return PUBLIC_PREFIX + base64.b64encode(self.key).decode("ascii")

    @classmethod
    def parse(cls, line: str) -> ReplySigner:
        """Raises SignatureError for anything but one well-formed public key line."""
        text = line.strip()
        if not text.startswith(PUBLIC_PREFIX):
            raise SignatureError(f"not a reply signer (expected {PUBLIC_PREFIX}...)")
        return cls(_b64decode(text[len(PUBLIC_PREFIX) :], 32, "the signer's key"))

    def verify(self, message: bytes, signature: bytes) -> None:
        try:
            nacl.signing.VerifyKey(self.key).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            raise SignatureError("the signature does not match") from None


class ReplySigningKey:
    """The organisation's private signing key; kept on the air-gapped machine only."""

    def __init__(self, seed: bytes) -> None:
        self._key = nacl.signing.SigningKey(seed)

    def __repr__(self) -> str:
        return f"ReplySigningKey(<private>, public={self.public})"

    @classmethod
    def generate(cls) -> ReplySigningKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def public(self) -> ReplySigner:
        return ReplySigner(bytes(self._key.verify_key))

    def secret_line(self) -> str:
        return SECRET_PREFIX + base64.b64encode(bytes(self._key)).decode("ascii")

    @classmethod
    def parse_file_text(cls, text: str) -> ReplySigningKey:
        """The key in a key file's text (comments and blank lines allowed).

        Raises:
            SignatureError: no key line, several, or a malformed one.
        """
        lines = [ln.strip() for ln in text.splitlines()]
        found = [ln for ln in lines if ln and not ln.startswith("#")]
        if len(found) != 1 or not found[0].startswith(SECRET_PREFIX):
            raise SignatureError(f"not a reply signing key file (expected one {SECRET_PREFIX}...)")
        return cls(_b64decode(found[0][len(SECRET_PREFIX) :], 32, "the signing key"))

    def sign(self, mailbox: str, ciphertext: bytes, written: dt.date) -> bytes:
        """The signature file for one reply file bound for `mailbox`."""
        document: dict[str, Any] = {
            "format": SIGNATURE_FORMAT,
            "mailbox": mailbox,
            "ciphertext_sha256": hashlib.sha256(ciphertext).hexdigest(),
            "written": written.isoformat(),
            "signer": str(self.public),
        }
        signature = self._key.sign(signed_bytes(document)).signature
        document["signature"] = base64.b64encode(signature).decode("ascii")
        return canonical(document) + b"\n"


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def signed_bytes(document: dict[str, Any]) -> bytes:
    """What the signature covers: the label, then the canonical JSON without `signature`."""
    return _LABEL + canonical({k: v for k, v in document.items() if k != "signature"})


def parse_signers(text: str) -> list[ReplySigner]:
    """Every signer in a signers file: one public key a line, `#` comments.

    Raises:
        SignatureError: naming the first line that is not a public key.
    """
    signers = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            signers.append(ReplySigner.parse(stripped))
        except SignatureError as exc:
            raise SignatureError(f"line {number}: {exc}") from None
    return signers


def contains_signing_key(data: bytes) -> bool:
    """Whether bytes hold a private reply signing key in the clear."""
    return SECRET_PREFIX.encode("ascii") in data


def check_signature(
    signature_file: bytes, mailbox: str, ciphertext: bytes, signers: Iterable[ReplySigner]
) -> dt.date:
    """Check a reply's signature file; return the day the reply was written.

    Raises:
        SignatureError: saying what is wrong (no trusted signer, another
            mailbox, other ciphertext, a bad signature).
    """
    trusted = {str(s): s for s in signers}
    if not trusted:
        raise SignatureError("no reply signers are configured (PORTAL_REPLY_SIGNERS)")
    if len(signature_file) > MAX_SIGNATURE_FILE:
        raise SignatureError("the signature file is too large")
    try:
        document = json.loads(signature_file)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SignatureError("the signature file is not JSON") from None
    if not isinstance(document, dict) or set(document) != set(_MEMBERS):
        raise SignatureError("the signature file does not have the documented members")
    if not all(isinstance(document[k], str) for k in _MEMBERS):
        raise SignatureError("the signature file's members must be strings")
    if document["format"] != SIGNATURE_FORMAT:
        raise SignatureError(f"the signature is not of the format {SIGNATURE_FORMAT}")
    signer = trusted.get(document["signer"])
    if signer is None:
        raise SignatureError("signed by a key that is not in the reply signers")
    if document["mailbox"] != mailbox:
        raise SignatureError("the signature is for another mailbox: the reply was moved")
    digest = hashlib.sha256(ciphertext).hexdigest()
    if not _SHA256_RE.fullmatch(document["ciphertext_sha256"]) or (
        document["ciphertext_sha256"] != digest
    ):
        raise SignatureError("the signature is for other ciphertext: the reply was altered")
    if not _DAY_RE.fullmatch(document["written"]):
        raise SignatureError("the signature's date is not a day (YYYY-MM-DD)")
    try:
        written = dt.date.fromisoformat(document["written"])
    except ValueError:
        raise SignatureError("the signature's date is not a day (YYYY-MM-DD)") from None
    signer.verify(signed_bytes(document), _b64decode(document["signature"], 64, "the signature"))
    return written
