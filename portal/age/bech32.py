"""Bech32 (BIP 173) without the 90-character limit, as age uses it for keys.

Only the plain Bech32 checksum is implemented: age keys are not Bech32m.
"""

from __future__ import annotations

from collections.abc import Iterable

from portal.age.errors import KeyFormatError

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
