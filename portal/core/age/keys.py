"""Recipients files and identity files: one key per line, '#' comments.

Both native public-key types are read: hybrid post-quantum "age1pq1..." /
"AGE-SECRET-KEY-PQ-1..." keys and classic X25519 "age1..." /
"AGE-SECRET-KEY-1..." keys. Callers get the right type for each line and
need not care which it is.

Errors name the line number but never echo the line: a mistaken file may
hold a secret key, and error messages end up in logs and terminals.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from portal.core.age._bech32 import CHARSET
from portal.core.age._format import INTRO
from portal.core.age.armor import BEGIN as ARMOR_BEGIN
from portal.core.age.errors import KeyFormatError
from portal.core.age.mlkem768x25519 import (
    IDENTITY_HRP as PQ_IDENTITY_HRP,
)
from portal.core.age.mlkem768x25519 import (
    RECIPIENT_HRP as PQ_RECIPIENT_HRP,
)
from portal.core.age.mlkem768x25519 import (
    MLKEM768X25519Identity,
    MLKEM768X25519Recipient,
)
from portal.core.age.x25519 import X25519Identity, X25519Recipient

PublicKey = X25519Recipient | MLKEM768X25519Recipient
"""A recipient that a recipients file can hold."""

PrivateKey = X25519Identity | MLKEM768X25519Identity
"""An identity that an identity file can hold."""

EXPECTED_RECIPIENT = (
    "expected one age public key per line ('age1pq1...' post-quantum or 'age1...' X25519), "
    "with comments on lines of their own starting with '#'"
)

# A real secret key, not a mention of one: the HRP, the separator and the
# whole Bech32 data part (52 data characters for 32 bytes, 6 checksum),
# standing alone. Matches plugin identities too, which are just as secret.
_BECH32_DATA = f"[{CHARSET}]"
SECRET_KEY_RE = re.compile(
    rf"(?<![A-Za-z0-9-])AGE-(?:SECRET-KEY-(?:PQ-)?|PLUGIN-[A-Za-z0-9-]+-)1{_BECH32_DATA}{{58,}}"
    rf"(?![{CHARSET}])".encode("ascii"),
    re.IGNORECASE,
)


def contains_secret_key(data: bytes) -> bool:
    """Tell whether `data` holds age private-key material (classic, PQ or plugin).

    Only the full Bech32 syntax counts, so text that merely mentions the
    prefix ("never put an AGE-SECRET-KEY-... here") does not.
    """
    return SECRET_KEY_RE.search(data) is not None


def _key_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.split("\n"), start=1):
        # Surrounding whitespace (including the CR of CRLF files) is an
        # editor artefact, never part of a key.
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def _what_is_wrong(line: str) -> str:
    """A description of a bad recipients-file line that does not quote it."""
    lower = line.lower()
    if contains_secret_key(line.encode("utf-8", "replace")) or lower.startswith("age-secret-key-"):
        return (
            "found a private key (AGE-SECRET-KEY-...); a recipients file must hold only "
            "public keys. Remove it and keep it offline"
        )
    if lower.startswith(("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-")):
        return (
            f"found an SSH public key, which this portal does not encrypt to; {EXPECTED_RECIPIENT}"
        )
    if lower.startswith("age1") and len(line.split()) > 1:
        return f"found text after the key (a trailing comment?); {EXPECTED_RECIPIENT}"
    if lower.startswith("age1") and lower.rfind("1") > len("age"):
        return (
            "found an age plugin recipient, which this portal does not support; "
            f"{EXPECTED_RECIPIENT}"
        )
    return f"this is not an age public key; {EXPECTED_RECIPIENT}"


def parse_recipient(s: str) -> PublicKey:
    """Parse one "age1pq1..." or "age1..." recipient string.

    Raises:
        KeyFormatError: neither kind of recipient.
    """
    s = s.strip()
    if len(s.split()) != 1 or not s.startswith("age1"):
        raise KeyFormatError(_what_is_wrong(s))
    if s.startswith(PQ_RECIPIENT_HRP + "1"):
        try:
            return MLKEM768X25519Recipient.parse(s)
        except KeyFormatError as e:
            raise KeyFormatError(f"malformed post-quantum recipient: {e}") from None
    if s.rfind("1") > len("age"):
        # "age1" is followed by more of a human-readable part: a plugin key.
        raise KeyFormatError(_what_is_wrong(s))
    try:
        return X25519Recipient.parse(s)
    except KeyFormatError as e:
        raise KeyFormatError(f"malformed X25519 recipient: {e}") from None


def is_post_quantum(recipient: object) -> bool:
    """True for a recipient that stays secure against a quantum computer."""
    return isinstance(recipient, MLKEM768X25519Recipient)


def check_mix(recipients: Sequence[object]) -> None:
    """Refuse post-quantum and classic recipients together.

    The C2SP age spec says a file SHOULD NOT be encrypted to both, and the
    age CLI refuses it: the classic stanza would be the door a future
    quantum computer walks through, silently voiding the protection.

    Raises:
        KeyFormatError: both kinds are present.
    """
    kinds = {is_post_quantum(r) for r in recipients}
    if kinds == {True, False}:
        raise KeyFormatError(
            "post-quantum (age1pq1...) and X25519 (age1...) recipients are mixed; a file "
            "encrypted to both is only as strong as X25519, so this is refused. List only "
            "age1pq1... keys (give every reviewer a post-quantum key with "
            "`testimony-review keygen`), or only age1... keys"
        )


def parse_recipients(text: str) -> list[PublicKey]:
    """Parse a recipients file: one "age1pq1..." or "age1..." key per line.

    Returns an empty list if the text holds only comments and blank lines;
    the caller decides whether that is an error (encrypting to nobody is).

    Raises:
        KeyFormatError: a line is not a recipient (the message names the line
            and what is expected), or the file mixes post-quantum and classic keys.
    """
    recipients: list[PublicKey] = []
    lines: dict[bool, int] = {}
    for number, line in _key_lines(text):
        try:
            recipient = parse_recipient(line)
        except KeyFormatError as e:
            raise KeyFormatError(f"line {number}: {e}") from None
        lines.setdefault(is_post_quantum(recipient), number)
        recipients.append(recipient)
    try:
        check_mix(recipients)
    except KeyFormatError as e:
        raise KeyFormatError(
            f"line {lines[True]} is post-quantum but line {lines[False]} is not: {e}"
        ) from None
    return recipients


def parse_identity(s: str) -> PrivateKey:
    """Parse one "AGE-SECRET-KEY-PQ-1..." or "AGE-SECRET-KEY-1..." identity string.

    Raises:
        KeyFormatError: neither kind of identity.
    """
    if s.upper().startswith(PQ_IDENTITY_HRP + "1"):
        return MLKEM768X25519Identity.parse(s)
    return X25519Identity.parse(s)


def parse_identities(text: str) -> list[PrivateKey]:
    """Parse an identity file: one "AGE-SECRET-KEY-PQ-1..." or "AGE-SECRET-KEY-1..." per line.

    Returns an empty list if the text holds only comments and blank lines.

    Raises:
        KeyFormatError: a line is not an identity.
    """
    identities = []
    for number, line in _key_lines(text):
        try:
            identities.append(parse_identity(line))
        except KeyFormatError as e:
            raise KeyFormatError(f"line {number}: malformed identity: {e}") from None
    return identities


def looks_encrypted_identity(data: bytes) -> bool:
    """Tell whether an identity file is itself an age file (binary or armored).

    The age CLI lets identity files be passphrase-encrypted; such a file must
    be decrypted with a ScryptIdentity before parse_identities can read it.
    """
    return data.startswith(INTRO) or data.lstrip().startswith(ARMOR_BEGIN)
