"""Recipients files and identity files: one key per line, '#' comments.

Errors name the line number but never echo the line: a mistaken file may
hold a secret key, and error messages end up in logs and terminals.
"""

from __future__ import annotations

from collections.abc import Iterator

from portal.age.armor import BEGIN as ARMOR_BEGIN
from portal.age.errors import KeyFormatError
from portal.age.format import INTRO
from portal.age.x25519 import IDENTITY_HRP, X25519Identity, X25519Recipient

_PQ_IDENTITY_PREFIX = "AGE-SECRET-KEY-PQ-"
_PQ_RECIPIENT_PREFIX = "age1pq1"


def _key_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.split("\n"), start=1):
        # Surrounding whitespace (including the CR of CRLF files) is an
        # editor artefact, never part of a key.
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def parse_recipients(text: str) -> list[X25519Recipient]:
    """Parse a recipients file: one "age1..." key per line.

    Returns an empty list if the text holds only comments and blank lines;
    the caller decides whether that is an error (encrypting to nobody is).

    Raises:
        KeyFormatError: a line is not an X25519 recipient, or is a private key.
    """
    recipients = []
    for number, line in _key_lines(text):
        if line.upper().startswith(IDENTITY_HRP):
            raise KeyFormatError(
                f"line {number}: found a private key (AGE-SECRET-KEY-...); a recipients "
                "file must hold only public 'age1...' keys. Remove it and keep it offline."
            )
        if line.startswith(_PQ_RECIPIENT_PREFIX):
            raise KeyFormatError(f"line {number}: post-quantum recipients are not supported")
        try:
            recipients.append(X25519Recipient.parse(line))
        except KeyFormatError as e:
            raise KeyFormatError(f"line {number}: malformed recipient: {e}") from None
    return recipients


def parse_identities(text: str) -> list[X25519Identity]:
    """Parse an identity file: one "AGE-SECRET-KEY-1..." key per line.

    Returns an empty list if the text holds only comments and blank lines.

    Raises:
        KeyFormatError: a line is not an X25519 identity.
    """
    identities = []
    for number, line in _key_lines(text):
        if line.startswith(_PQ_IDENTITY_PREFIX):
            raise KeyFormatError(f"line {number}: post-quantum identities are not supported")
        try:
            identities.append(X25519Identity.parse(line))
        except KeyFormatError as e:
            raise KeyFormatError(f"line {number}: malformed identity: {e}") from None
    return identities


def looks_encrypted_identity(data: bytes) -> bool:
    """Tell whether an identity file is itself an age file (binary or armored).

    The age CLI lets identity files be passphrase-encrypted; such a file must
    be decrypted with a ScryptIdentity before parse_identities can read it.
    """
    return data.startswith(INTRO) or data.lstrip().startswith(ARMOR_BEGIN)
