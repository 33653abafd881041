"""The receipt: entropy, canonical form, and a check that catches typing mistakes."""

from __future__ import annotations

import math
import random

import pytest

from portal.core.receipt import (
    ENTROPY_BITS,
    GROUP_DIGITS,
    GROUPS,
    RECEIPT_DIGITS,
    ReceiptError,
    damm_digit,
    new_receipt,
    parse_receipt,
)

SAMPLES = [new_receipt(random.Random(seed).randrange) for seed in range(40)]


def test_receipt_has_at_least_80_bits() -> None:
    random_digits = GROUPS * (GROUP_DIGITS - 1)
    assert math.log2(10**random_digits) >= ENTROPY_BITS >= 80
    assert len({new_receipt().digits for _ in range(200)}) == 200


@pytest.mark.parametrize(("digits", "check"), [("572", 4), ("0", 0), ("1", 3)])
def test_damm_known_answers(digits: str, check: int) -> None:
    # Damm's worked example (also on Wikipedia): 572 -> 4.
    assert damm_digit(digits) == check
    # A number followed by its check digit checks to zero.
    assert damm_digit(digits + str(check)) == 0


def test_display_round_trips_and_is_five_groups_of_six() -> None:
    for receipt in SAMPLES:
        shown = receipt.display()
        assert [len(g) for g in shown.split(" ")] == [GROUP_DIGITS] * GROUPS
        assert parse_receipt(shown) == receipt
        assert len(receipt.digits) == RECEIPT_DIGITS


def test_spacing_dashes_and_full_width_digits_are_accepted() -> None:
    receipt = SAMPLES[0]
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in receipt.digits)
    for typed in (
        receipt.digits,
        "-".join(receipt.groups),
        f"  {full_width}\n",
        "\u3000".join(receipt.groups),
    ):
        assert parse_receipt(typed) == receipt


def test_every_single_wrong_digit_is_caught() -> None:
    for receipt in SAMPLES:
        for i, ch in enumerate(receipt.digits):
            for other in "0123456789":
                if other == ch:
                    continue
                typo = receipt.digits[:i] + other + receipt.digits[i + 1 :]
                with pytest.raises(ReceiptError) as caught:
                    parse_receipt(typo)
                assert caught.value.group == i // GROUP_DIGITS + 1


def test_every_swap_of_neighbouring_digits_is_caught() -> None:
    for receipt in SAMPLES:
        d = receipt.digits
        for i in range(len(d) - 1):
            if d[i] == d[i + 1]:
                continue
            with pytest.raises(ReceiptError):
                parse_receipt(d[:i] + d[i + 1] + d[i] + d[i + 2 :])


def test_groups_in_the_wrong_order_are_caught() -> None:
    for receipt in SAMPLES:
        groups = receipt.groups
        for i in range(GROUPS - 1):
            if groups[i] == groups[i + 1]:
                continue
            swapped = groups[:i] + [groups[i + 1], groups[i]] + groups[i + 2 :]
            with pytest.raises(ReceiptError):
                parse_receipt("".join(swapped))


@pytest.mark.parametrize("typed", ["", "12345", "abc", "1" * 31, "x" + "1" * 30])
def test_wrong_length_or_characters_are_refused(typed: str) -> None:
    with pytest.raises(ReceiptError) as caught:
        parse_receipt(typed)
    assert caught.value.group is None


def test_a_receipt_never_shows_itself_in_repr() -> None:
    receipt = SAMPLES[0]
    assert receipt.digits not in repr(receipt) and receipt.digits not in str(receipt)
    assert receipt.digits not in f"{receipt!r} {[receipt]}"


def test_new_receipts_are_version_2_and_old_ones_still_parse_as_version_1() -> None:
    rng = random.Random(25)
    for _ in range(300):
        current = new_receipt(rng.randrange)
        old = new_receipt(rng.randrange, version=1)
        assert parse_receipt(current.display()) == current and current.version == 2
        assert parse_receipt(old.display()) == old and old.version == 1
        # The versions feed different secrets to the key derivation.
        assert current.secret() != current.digits.encode() and len(current.seed()) == 32
        assert old.secret() == old.digits.encode()


def test_a_version_2_receipt_is_never_one_typo_away_from_a_version_1_receipt() -> None:
    # Every single wrong digit and every swap of neighbours leaves at least
    # one group failing the version 1 check: it is caught, never misread.
    for receipt in SAMPLES:
        d = receipt.digits
        variants = [
            d[:i] + o + d[i + 1 :] for i in range(len(d)) for o in "0123456789" if o != d[i]
        ]
        variants += [d[:i] + d[i + 1] + d[i] + d[i + 2 :] for i in range(len(d) - 1)]
        for typo in variants:
            if typo == d:
                continue
            with pytest.raises(ReceiptError):
                parse_receipt(typo)


def test_the_entropy_of_a_version_2_receipt_stays_83_bits() -> None:
    # Redrawing keeps only receipts with >= 3 groups failing the version 1
    # check: each fails with probability 9/10.
    kept = sum(math.comb(5, k) * 0.9**k * 0.1 ** (5 - k) for k in range(3, 6))
    assert math.floor(math.log2(10**25 * kept)) == ENTROPY_BITS == 83
