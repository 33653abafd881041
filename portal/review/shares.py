"""Paper backups of a reviewer identity, split among trustees with SLIP-39.

The identity's 32-byte secret is split into word shares by Shamir's secret
sharing as SLIP-39 specifies it (the `shamir-mnemonic` reference code): any
`threshold` shares rebuild it, fewer reveal nothing about it. SLIP-39 words
carry a checksum, so a mistyped word is caught, and a digest inside the
shared secret catches shares from different backups mixed together. Each
sheet also prints the public key (for a post-quantum key, whose public key
is about 1,950 characters, a SHA-256 fingerprint of it), so the restored
identity can be checked against it before anyone relies on it.

Both kinds of identity have a 32-byte secret, so the kind travels inside the
shared secret: an X25519 identity is shared as its 32 bytes alone (33 words,
as before post-quantum keys existed, so old backups still restore), a
post-quantum one as a 2-byte tag followed by its 32-byte seed (35 words).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import shamir_mnemonic
from shamir_mnemonic import MnemonicError, Share

from portal.core.age import (
    KeyFormatError,
    MLKEM768X25519Identity,
    PrivateKey,
    PublicKey,
    X25519Identity,
    is_post_quantum,
)

MAX_SHARES = 16
WORDS_BEGIN = "----- BEGIN SHARE WORDS -----"
WORDS_END = "----- END SHARE WORDS -----"
_PUBLIC_KEY_RE = re.compile(r"^Public key \(for checking\):\s*(age1[0-9a-z]+)\s*$", re.MULTILINE)
_FINGERPRINT_RE = re.compile(
    r"^Public key fingerprint \(for checking\):\s*(SHA256:[0-9a-f ]+?)\s*$", re.MULTILINE
)
# Prefixed to a post-quantum seed in the shared secret; an X25519 secret has none.
PQ_TAG = b"PQ"
_WORD_COLUMNS = 3


class ShareError(Exception):
    """The shares cannot rebuild an identity; the message says what is wrong."""


@dataclass(frozen=True)
class ShareInput:
    """One share as read from a sheet or typed in, with where it came from."""

    words: str
    source: str
    public_key: str | None = None


def identity_secret(identity: PrivateKey) -> bytes:
    """The secret that is shared: the raw key, tagged if it is post-quantum."""
    secret = identity.secret_bytes()
    if isinstance(identity, MLKEM768X25519Identity):
        return PQ_TAG + secret
    return secret


def identity_from_secret(secret: bytes) -> PrivateKey:
    """The identity a shared secret encodes (see identity_secret).

    Raises:
        KeyFormatError: neither a 32-byte X25519 key nor a tagged 32-byte seed.
    """
    if len(secret) == 32:
        return X25519Identity(secret)
    if len(secret) == 34 and secret.startswith(PQ_TAG):
        return MLKEM768X25519Identity(secret[len(PQ_TAG) :])
    raise KeyFormatError(f"a {len(secret)}-byte secret is not an age identity")


def public_key_check(recipient: PublicKey) -> str:
    """What a sheet prints to check a restored key: the key, or a fingerprint of a long one."""
    if is_post_quantum(recipient):
        digest = hashlib.sha256(str(recipient).encode("ascii")).hexdigest()[:32]
        # Groups of four are easier to compare by eye on paper.
        return "SHA256:" + " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))
    return str(recipient)


def split_identity(identity: PrivateKey, shares: int, threshold: int) -> list[str]:
    """Split an identity into `shares` SLIP-39 mnemonics, any `threshold` of which rebuild it.

    Raises:
        ShareError: the numbers do not make a valid scheme.
    """
    if not 1 <= threshold <= shares <= MAX_SHARES:
        raise ShareError(
            f"need 1 <= threshold <= shares <= {MAX_SHARES}; got {threshold} of {shares}"
        )
    if threshold == 1 and shares > 1:
        raise ShareError(
            "a threshold of 1 would make every sheet a full copy of the key; "
            "use --threshold 2 or more (or --shares 1 for a single paper copy)"
        )
    groups = shamir_mnemonic.generate_mnemonics(
        group_threshold=1,
        groups=[(threshold, shares)],
        master_secret=identity_secret(identity),
        passphrase=b"",
    )
    return [str(mnemonic) for mnemonic in groups[0]]


def render_sheet(
    mnemonic: str, *, index: int, shares: int, threshold: int, recipient: PublicKey
) -> str:
    """One printable trustee sheet (plain UTF-8 text)."""
    words = mnemonic.split()
    rows = (len(words) + _WORD_COLUMNS - 1) // _WORD_COLUMNS
    lines = []
    for row in range(rows):
        cells = []
        for column in range(_WORD_COLUMNS):
            position = column * rows + row
            if position < len(words):
                cells.append(f"{position + 1:>2}. {words[position]:<10}")
        lines.append("   ".join(cells).rstrip())
    today = dt.datetime.now(dt.UTC).date().isoformat()
    set_words = " ".join(words[:2])
    check = public_key_check(recipient)
    if is_post_quantum(recipient):
        kind = "post-quantum (age1pq1...)"
        check_line = f"Public key fingerprint (for checking): {check}"
    else:
        kind = "X25519 (age1...)"
        check_line = f"Public key (for checking): {check}"
    return f"""TESTIMONY PORTAL - REVIEWER KEY BACKUP - SHARE {index} OF {shares}

Any {threshold} of the {shares} shares of this backup together rebuild the
reviewer key; fewer reveal nothing about it. Keep this sheet somewhere safe
and private. Never photograph it, scan it, or type it into a computer that
is connected to a network.

Share: {index} of {shares}            Needed to restore: {threshold}
Backup made: {today}          Words: {len(words)}
Key kind: {kind}
All shares of this backup begin with: {set_words}
{check_line}

{WORDS_BEGIN}
{chr(10).join(lines)}
{WORDS_END}

To restore the key, bring {threshold} sheets to the air-gapped reviewer computer
and run:

    testimony-review key restore --out reviewer-identity.age

then type the words of each share when asked (one share per line), or give
the sheet files on the command line. The tool checks every word, refuses
too few shares, and compares the rebuilt key with the public key above.
"""


def parse_sheet(text: str, source: str) -> ShareInput:
    """Read a share's words (and the public key, if printed) from a sheet or a typed line.

    A sheet written by `render_sheet` is read between its BEGIN and END
    lines; any other text is taken as words, with numbering ("1." or "1)")
    and punctuation ignored.
    """
    public = _PUBLIC_KEY_RE.search(text) or _FINGERPRINT_RE.search(text)
    body = text
    if WORDS_BEGIN in text:
        body = text.split(WORDS_BEGIN, 1)[1].split(WORDS_END, 1)[0]
    numbered = re.findall(r"(\d+)\s*[.)]?\s*([A-Za-z]+)", body)
    if numbered:
        # Sheets print the words in columns: the numbers give the order.
        by_number = {int(number): word for number, word in numbered}
        if len(by_number) != len(numbered):
            raise ShareError(f"share from {source}: a word number appears twice")
        words = [by_number[number] for number in sorted(by_number)]
    else:
        words = re.findall(r"[A-Za-z]+", body)
    words = [word.lower() for word in words]
    checked = " ".join(public.group(1).split()) if public else None
    return ShareInput(" ".join(words), source, checked)


def _decode(share: ShareInput) -> Share:
    words = share.words.split()
    try:
        return Share.from_mnemonic(share.words)
    except MnemonicError as exc:
        message = str(exc)
        unknown = re.search(r"Invalid mnemonic word '([^']*)'", message)
        if unknown:
            detail = (
                f"the word {unknown.group(1)!r} is not in the SLIP-39 word list; "
                "check its spelling against the sheet"
            )
        elif "checksum" in message:
            detail = (
                "its checksum does not match: a word is mistyped, missing or out of order; "
                "check each word against the sheet"
            )
        else:
            detail = f"it has {len(words)} words, which is not a valid share length"
        raise ShareError(f"share from {share.source}: {detail}") from None


def combine_shares(inputs: Sequence[ShareInput]) -> PrivateKey:
    """Rebuild the identity from enough shares, checking it against printed public keys.

    Raises:
        ShareError: a word is wrong, shares come from different backups,
            there are too few, or the result does not match the sheets.
    """
    if not inputs:
        raise ShareError("no shares given")
    decoded = [(_decode(item), item) for item in inputs]
    first, first_input = decoded[0]
    params = first.common_parameters()
    unique: dict[int, Share] = {}
    for share, item in decoded:
        if (
            share.common_parameters() != params
            or share.group_parameters() != first.group_parameters()
        ):
            raise ShareError(
                f"share from {item.source} belongs to a different backup than the share from "
                f"{first_input.source} (their first words differ)"
            )
        known = unique.setdefault(share.index, share)
        if known.value != share.value:
            raise ShareError(
                f"share from {item.source} has the same number as another share but "
                "different words; one of them is mistyped"
            )
    needed = first.member_threshold
    if len(unique) < needed:
        raise ShareError(
            f"this backup needs {needed} different shares; only {len(unique)} given. "
            "Fetch more trustees' sheets"
        )
    chosen = [share.mnemonic() for share in list(unique.values())[:needed]]
    try:
        secret = shamir_mnemonic.combine_mnemonics(chosen, passphrase=b"")
        identity = identity_from_secret(secret)
    except (MnemonicError, KeyFormatError) as exc:
        raise ShareError(f"the shares do not fit together: {exc}") from None
    expected = {item.public_key for _share, item in decoded if item.public_key}
    actual = public_key_check(identity.recipient)
    if expected and expected != {actual}:
        raise ShareError(
            f"the rebuilt key's public key {actual} differs from the one printed on the "
            f"sheets ({', '.join(sorted(expected))}); a sheet is wrong or from another backup"
        )
    return identity


def check_share(share: ShareInput) -> int:
    """Check one share's words; return how many shares its backup needs.

    Raises:
        ShareError: a word is not in the list, or the checksum fails.
    """
    return int(_decode(share).member_threshold)


def read_typed_shares(lines: Iterable[str], source: str) -> list[ShareInput]:
    """Shares typed one per line (blank lines ignored)."""
    return [
        parse_sheet(line, f"{source} line {number}")
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
