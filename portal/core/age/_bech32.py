"""Bech32 (BIP 173) without the 90-character limit, as age uses it for keys.

Only the plain Bech32 checksum is implemented: age keys are not Bech32m.
The base classes at the end give every key type (X25519, mlkem768x25519)
its one text form: `parse`, `str`, `generate`, and equality of recipients.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Iterable
from typing import ClassVar, Generic, Self, TypeVar

from portal.core.age.errors import KeyFormatError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= g
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Iterable[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    max_value = (1 << to_bits) - 1
    max_acc = (1 << (from_bits + to_bits - 1)) - 1
    for value in data:
        acc = ((acc << from_bits) | value) & max_acc
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & max_value)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & max_value)
    elif bits >= from_bits or (acc << (to_bits - bits)) & max_value:
        # Leftover bits must be fewer than one symbol and all zero, so that
        # every key has exactly one valid encoding.
        raise KeyFormatError("invalid Bech32 padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Encode `data` under `hrp`; the result is lowercase."""
    hrp = hrp.lower()
    values = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod([*_hrp_expand(hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[v] for v in values + checksum)


def decode(text: str) -> tuple[str, bytes]:
    """Decode a Bech32 string into (hrp, data), keeping the hrp's case.

    Raises:
        KeyFormatError: mixed case, bad characters, or a bad checksum.
    """
    if text.lower() != text and text.upper() != text:
        raise KeyFormatError("invalid Bech32: mixed case")
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise KeyFormatError("invalid Bech32: separator misplaced")
    hrp = text[:pos]
    if not all(33 <= ord(c) <= 126 for c in hrp):
        raise KeyFormatError("invalid Bech32: bad character in the prefix")
    lower = text.lower()
    try:
        values = [_CHARSET_REV[c] for c in lower[pos + 1 :]]
    except KeyError:
        raise KeyFormatError("invalid Bech32: bad character in the data") from None
    # The checksum is defined over the lowercase form of the string.
    if _polymod([*_hrp_expand(lower[:pos]), *values]) != 1:
        raise KeyFormatError("invalid Bech32: checksum mismatch (a typo in the key?)")
    return hrp, bytes(_convert_bits(values[:-6], 5, 8, pad=False))


class Bech32Key:
    """A key whose text form is Bech32 under a fixed prefix: each key type's `parse`.

    A subclass sets `HRP` (its case is part of it: recipients are lowercase,
    identities uppercase) and `REFUSAL`, the error for another kind of key,
    and takes the decoded bytes in its constructor.
    """

    __slots__ = ()
    HRP: ClassVar[str]
    REFUSAL: ClassVar[str]

    def __init__(self, data: bytes, /) -> None:
        raise NotImplementedError  # every key type has its own

    @classmethod
    def parse(cls, text: str) -> Self:
        """Read a key from its text form.

        Raises:
            KeyFormatError: not valid Bech32 (mixed case, a typo), another
                kind of key, or bytes that are not a usable key of this kind.
        """
        hrp, data = decode(text)
        if hrp != cls.HRP:
            raise KeyFormatError(cls.REFUSAL)
        return cls(data)


class Bech32Recipient(Bech32Key):
    """A public key whose text form is its raw bytes; equal keys compare equal.

    The subclass keeps the raw key in `_public`. Comparison is in constant
    time, out of habit: a recipient is not secret.
    """

    __slots__ = ()
    _public: bytes

    def __str__(self) -> str:
        return encode(self.HRP, self._public)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Bech32Recipient)
        return hmac.compare_digest(self._public, other._public)

    def __hash__(self) -> int:
        return hash((type(self), self._public))


R = TypeVar("R", bound=Bech32Recipient)


class Bech32Identity(Bech32Key, Generic[R]):
    """A private key whose text form is its `SECRET_SIZE` secret bytes, in uppercase.

    The subclass keeps those bytes in `_secret` and its public key in
    `_recipient`, both set by its constructor; `generate` draws the bytes.
    """

    __slots__ = ()
    SECRET_SIZE: ClassVar[int]
    _secret: bytes
    _recipient: R

    @property
    def recipient(self) -> R:
        """The public recipient that files for this identity are encrypted to."""
        return self._recipient

    @classmethod
    def generate(cls, rng: Callable[[int], bytes] = os.urandom) -> Self:
        """Create a new identity from `SECRET_SIZE` random bytes."""
        return cls(rng(cls.SECRET_SIZE))

    def __str__(self) -> str:
        return encode(self.HRP, self._secret).upper()

    def secret_bytes(self) -> bytes:
        """The identity's raw secret (`SECRET_SIZE` bytes), which its constructor takes back.

        For splitting a key into shares; everything else uses the text form.
        """
        return self._secret
