"""The native scrypt recipient type: files encrypted to a passphrase."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from portal.core.age._format import Stanza, b64encode, stanza_args, stanza_bytes
from portal.core.age.errors import HeaderError, NoIdentityMatchError
from portal.core.age.primitives import (
    FILE_KEY_SIZE,
    KEY_SIZE,
    TAG_SIZE,
    unwrap_file_key,
    wrap_file_key,
)

SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
STANZA_TYPE = "scrypt"
SALT_SIZE = 16
DEFAULT_WORK_FACTOR = 18
"""log2(N) for new files, what `age -p` writes: 2**18 x 1 KiB = 256 MiB and about a second
per guess on a laptop. The reviewer's passphrase-protected identity files use it
(`portal/review/keys.py`)."""

DEFAULT_MAX_WORK_FACTOR = 22
"""The largest log2(N) we agree to compute: 2**22 * 1 KiB = 4 GiB of memory."""

_MAX_SUPPORTED_WORK_FACTOR = 30
_WORK_FACTOR_RE = re.compile(r"[1-9][0-9]*")


def _derive(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    # The label in the scrypt salt separates these keys from any other use
    # of the same passphrase.
    kdf = Scrypt(salt=SCRYPT_LABEL + salt, length=KEY_SIZE, n=1 << work_factor, r=8, p=1)
    return kdf.derive(passphrase)


class ScryptRecipient:
    """Encrypts the file key to a passphrase. It must be a file's only recipient.

    A passphrase-encrypted file is expected to be readable only by whoever
    knows the passphrase, which mixing in other recipients would silently
    break; the writer and the reader both enforce that it stands alone.
    """

    __slots__ = ("_passphrase", "_work_factor")

    def __init__(self, passphrase: bytes, work_factor: int = DEFAULT_WORK_FACTOR) -> None:
        if not passphrase:
            raise ValueError("the passphrase must not be empty")
        if not 1 <= work_factor <= _MAX_SUPPORTED_WORK_FACTOR:
            raise ValueError(f"scrypt work factor must be 1..{_MAX_SUPPORTED_WORK_FACTOR}")
        self._passphrase = bytes(passphrase)
        self._work_factor = work_factor

    @property
    def work_factor(self) -> int:
        """log2 of the scrypt cost parameter N."""
        return self._work_factor

    def wrap(self, file_key: bytes, rng: Callable[[int], bytes] = os.urandom) -> list[Stanza]:
        """Wrap the file key under a key derived from the passphrase and a fresh salt."""
        salt = rng(SALT_SIZE)
        key = _derive(self._passphrase, salt, self._work_factor)
        args = (b64encode(salt), str(self._work_factor))
        return [Stanza(STANZA_TYPE, args, wrap_file_key(key, file_key))]

    def __repr__(self) -> str:
        return f"ScryptRecipient(work_factor={self._work_factor})"


class ScryptIdentity:
    """Decrypts files encrypted to a passphrase."""

    __slots__ = ("_max_work_factor", "_passphrase")

    def __init__(self, passphrase: bytes, max_work_factor: int = DEFAULT_MAX_WORK_FACTOR) -> None:
        if not 1 <= max_work_factor <= _MAX_SUPPORTED_WORK_FACTOR:
            raise ValueError(f"max work factor must be 1..{_MAX_SUPPORTED_WORK_FACTOR}")
        self._passphrase = bytes(passphrase)
        self._max_work_factor = max_work_factor

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes:
        """Unwrap the file key from the header's only stanza.

        Raises:
            HeaderError: the scrypt stanza is not alone, is malformed, or asks
                for more work than max_work_factor allows.
            NoIdentityMatchError: the passphrase is wrong, or the file is not
                passphrase-encrypted.
        """
        if not any(s.type == STANZA_TYPE for s in stanzas):
            raise NoIdentityMatchError("the file is not encrypted with a passphrase")
        if len(stanzas) != 1:
            raise HeaderError("an scrypt stanza must be the only stanza in the header")
        stanza = stanzas[0]
        _, text = stanza_args(stanza, 2, "a salt and a work factor")
        salt = stanza_bytes(stanza, 0, "salt", SALT_SIZE)
        # Decimal without sign or leading zeros, so each value has one spelling.
        if not _WORK_FACTOR_RE.fullmatch(text):
            raise HeaderError("malformed scrypt stanza: invalid work factor")
        # Refuse before computing: an attacker-chosen work factor could
        # otherwise pin the CPU and memory for hours.
        if len(text) > 2 or int(text) > self._max_work_factor:
            raise HeaderError(f"scrypt work factor exceeds the limit {self._max_work_factor}")
        work_factor = int(text)
        if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
            raise HeaderError("malformed scrypt stanza: body is not a wrapped file key")
        key = _derive(self._passphrase, salt, work_factor)
        try:
            return unwrap_file_key(key, stanza.body)
        except NoIdentityMatchError:
            raise NoIdentityMatchError("incorrect passphrase") from None

    def __repr__(self) -> str:
        return f"ScryptIdentity(max_work_factor={self._max_work_factor})"
