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

Two versions share this form. Version 2 receipts (issued since issue 25)
fold positions 6 to 10 into their check digits instead of 1 to 5, so the
digits alone say which version a receipt is. A new receipt is drawn again
unless at least three of its groups fail the version 1 check: then no single
wrong digit, swap of neighbours or pair of groups in the wrong order can
turn it into a valid version 1 receipt (each leaves a failing group in
place). That keeps 99.1% of draws, so a receipt still holds 83 bits. The
version decides what the key derivation is fed (`Receipt.secret()`, see
`portal.core.replykey`).

The check runs before any key derivation, so a typo costs the server
nothing but a string comparison, and the witness is told which group to
look at again.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from portal.core.replykey import seed_of

GROUPS = 5
DATA_DIGITS = 5
GROUP_DIGITS = DATA_DIGITS + 1
RECEIPT_DIGITS = GROUPS * GROUP_DIGITS
# log2(10**25), rounded down: the entropy of a receipt.
ENTROPY_BITS = 83
# The receipt versions (see the module docstring); new receipts are the last.
VERSIONS = (1, 2)
CURRENT_VERSION = 2
_MIN_GROUPS_FAILING_V1 = 3

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


def _group_check(position: int, data: str, version: int) -> str:
    return str(damm_digit(str(position + (version - 1) * GROUPS) + data))


def _bad_groups(digits: str, version: int) -> list[int]:
    """The 1-based groups of `digits` whose check digit fails under `version`."""
    bad = []
    for index in range(GROUPS):
        group = digits[index * GROUP_DIGITS : (index + 1) * GROUP_DIGITS]
        if _group_check(index + 1, group[:DATA_DIGITS], version) != group[DATA_DIGITS]:
            bad.append(index + 1)
    return bad


@dataclass(frozen=True)
class Receipt:
    """A well-formed receipt. `digits` is its canonical form: 30 ASCII digits."""

    digits: str
    version: int = 1

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
        """What the key derivation is fed: version 1, the digits; version 2, the seed."""
        if self.version == 1:
            return self.digits.encode("ascii")
        return seed_of(self.digits)

    def seed(self) -> bytes:
        """A version 2 receipt's seed, which its submissions seal (`portal.core.replykey`)."""
        if self.version == 1:
            raise ValueError("a version 1 receipt has no seed")
        return seed_of(self.digits)


def new_receipt(
    randbelow: Callable[[int], int] = secrets.randbelow, *, version: int = CURRENT_VERSION
) -> Receipt:
    """A fresh receipt of `version` (tests make version 1 ones, as issued before)."""
    while True:
        # All the data digits from one draw (uniform, so each group is too):
        # one call to the system's random source instead of one per group.
        drawn = f"{randbelow(10 ** (DATA_DIGITS * GROUPS)):0{DATA_DIGITS * GROUPS}d}"
        groups = []
        for position in range(1, GROUPS + 1):
            data = drawn[(position - 1) * DATA_DIGITS : position * DATA_DIGITS]
            groups.append(data + _group_check(position, data, version))
        digits = "".join(groups)
        # Version 1 wins when both pass (for the receipts issued before):
        # keep only version 2 receipts that no usual typo makes pass as it.
        if version == 1 or len(_bad_groups(digits, 1)) >= _MIN_GROUPS_FAILING_V1:
            return Receipt(digits, version)


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
    # Version 1 first: the receipts issued before version 2 must keep their
    # meaning, and no version 2 receipt passes as version 1.
    bad = {version: _bad_groups(canonical, version) for version in VERSIONS}
    for version in VERSIONS:
        if not bad[version]:
            return Receipt(canonical, version)
    # A typo: name the first wrong group of the version it is closest to.
    closest = min(reversed(VERSIONS), key=lambda version: len(bad[version]))
    group = bad[closest][0]
    raise ReceiptError(f"group {group} of the receipt has a mistake", group=group)
