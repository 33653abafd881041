"""The witness's receipt: 30 digits in five groups, each group checked on its own.

A receipt is the only thing a witness keeps, written by hand, and typed
back later (perhaps on a phone, perhaps with a Korean or Chinese input
method). Digits are the same in every script the portal speaks and every
keyboard has them, so a receipt is digits only::

    804213 551937 270348 919206 664180

Each group of six is five random digits and one Damm check digit computed
over the group's position and its five digits. The Damm algorithm catches
every single wrong digit and every swap of two neighbouring digits; folding
the position in also catches two whole groups written in the wrong order.
Five groups of five random digits hold 10**25 values, about 83 bits.

The check runs before any key derivation, so a typo costs the server
nothing but a string comparison, and the witness is told which group to
look at again.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

GROUPS = 5
DATA_DIGITS = 5
GROUP_DIGITS = DATA_DIGITS + 1
RECEIPT_DIGITS = GROUPS * GROUP_DIGITS
# log2(10**25), rounded down: the entropy of a receipt.
ENTROPY_BITS = 83

# The Damm quasigroup of order 10 (totally anti-symmetric, zero diagonal):
# Damm, "Total anti-symmetrische Quasigruppen", 2004.
_DAMM = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)
# Characters a witness may type between digits: spaces (also the ideographic
# one), hyphens and dots of several kinds. Anything else is a mistake.
_SEPARATORS = frozenset(" \t\r\n-.\u00b7\u2010\u2011\u2012\u2013\u2014\u2212\u3000\u30fb")


class ReceiptError(Exception):
    """The typed receipt is not a well-formed receipt (a typo, most likely).

    `group` is the 1-based group holding the mistake, or None when the
    length or the characters are wrong.
    """

    def __init__(self, message: str, group: int | None = None) -> None:
        super().__init__(message)
        self.group = group


def damm_digit(digits: str) -> int:
    """The Damm check digit of a string of ASCII digits."""
    interim = 0
    for ch in digits:
        interim = _DAMM[interim][ord(ch) - 48]
    return interim


def _group_check(position: int, data: str) -> str:
    return str(damm_digit(str(position) + data))


@dataclass(frozen=True)
class Receipt:
    """A well-formed receipt. `digits` is its canonical form: 30 ASCII digits."""

    digits: str

    def __repr__(self) -> str:
        # A receipt must never reach a log line or a traceback by accident.
        return "Receipt(<hidden>)"

    __str__ = __repr__

    @property
    def groups(self) -> list[str]:
        return [self.digits[i : i + GROUP_DIGITS] for i in range(0, RECEIPT_DIGITS, GROUP_DIGITS)]

    def display(self) -> str:
        """The form written down: five groups of six digits."""
        return " ".join(self.groups)

    def secret(self) -> bytes:
        """What the key derivation is fed: the canonical digits as ASCII."""
        return self.digits.encode("ascii")


def new_receipt(randbelow: Callable[[int], int] = secrets.randbelow) -> Receipt:
    groups = []
    for position in range(1, GROUPS + 1):
        data = f"{randbelow(10**DATA_DIGITS):0{DATA_DIGITS}d}"
        groups.append(data + _group_check(position, data))
    return Receipt("".join(groups))


def parse_receipt(typed: str) -> Receipt:
    """Check a receipt as typed and return it in canonical form.

    Full-width digits (from an East Asian input method) count as digits;
    spaces, hyphens and dots between them are ignored.

    Raises:
        ReceiptError: wrong characters, wrong length, or a group whose check
            digit does not match (naming the group).
    """
    # NFKC turns full-width digits such as "８" into ASCII ones.
    text = unicodedata.normalize("NFKC", typed or "")
    digits = []
    for ch in text:
        if "0" <= ch <= "9":
            digits.append(ch)
        elif ch not in _SEPARATORS:
            raise ReceiptError("a receipt holds only digits")
    canonical = "".join(digits)
    if len(canonical) != RECEIPT_DIGITS:
        raise ReceiptError(f"a receipt has {RECEIPT_DIGITS} digits, not {len(canonical)}")
    for index in range(GROUPS):
        group = canonical[index * GROUP_DIGITS : (index + 1) * GROUP_DIGITS]
        if _group_check(index + 1, group[:DATA_DIGITS]) != group[DATA_DIGITS]:
            raise ReceiptError(f"group {index + 1} of the receipt has a mistake", group=index + 1)
    return Receipt(canonical)
