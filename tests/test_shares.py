"""Paper backups: `key backup` splits an identity into SLIP-39 sheets, `key restore` rebuilds it."""

from __future__ import annotations

import io
import itertools
import re
import stat
from pathlib import Path

import pytest
from shamir_mnemonic.wordlist import WORDLIST

from portal.core.age import KeyFormatError, MLKEM768X25519Identity, X25519Identity, parse_identities
from portal.review import shares
from portal.review.cli import ExitStatus, main
from tests.review_support import review, write_identity


@pytest.fixture
def backup(tmp_path: Path) -> tuple[X25519Identity, list[Path]]:
    identity = write_identity(tmp_path / "identity.txt")
    run = review(["key", "backup", "--identity", tmp_path / "identity.txt", "--out",
                  tmp_path / "sheets"])  # fmt: skip
    assert run.status == ExitStatus.OK, run.err
    assert run.out.strip() == str(identity.recipient)
    sheets = sorted((tmp_path / "sheets").iterdir())
    return identity, sheets


def restore(out: Path, *sheets: Path, stdin: str = ""):
    return review(["key", "restore", "--out", out, "--no-passphrase", *sheets], stdin=stdin)


def sheet_words(sheet: Path) -> list[str]:
    return shares.parse_sheet(sheet.read_text(), str(sheet)).words.split()


def test_backup_writes_five_private_printable_sheets(
    backup: tuple[X25519Identity, list[Path]],
) -> None:
    identity, sheets = backup
    assert [p.name for p in sheets] == [f"share-{i}-of-5.txt" for i in range(1, 6)]
    for number, sheet in enumerate(sheets, start=1):
        text = sheet.read_text("utf-8")
        assert stat.S_IMODE(sheet.stat().st_mode) == 0o600
        assert f"SHARE {number} OF 5" in text and "Any 3 of the 5" in text
        assert str(identity.recipient) in text
        assert str(identity) not in text
        assert re.search(r"^ *1\. \w+", text, re.MULTILINE)
        assert len(sheet_words(sheet)) == 33
        assert all(word in WORDLIST for word in sheet_words(sheet))


def test_any_three_of_five_sheets_restore_the_same_identity(
    tmp_path: Path, backup: tuple[X25519Identity, list[Path]]
) -> None:
    identity, sheets = backup
    for combination in itertools.combinations(sheets, 3):
        inputs = [shares.parse_sheet(p.read_text(), p.name) for p in combination]
        assert str(shares.combine_shares(inputs)) == str(identity)

    out = tmp_path / "restored.txt"
    run = restore(out, sheets[4], sheets[0], sheets[2])
    assert run.status == ExitStatus.OK, run.err
    assert run.out.strip() == str(identity.recipient)
    assert [str(i) for i in parse_identities(out.read_text())] == [str(identity)]


def test_two_of_five_sheets_are_refused_clearly(
    tmp_path: Path, backup: tuple[X25519Identity, list[Path]]
) -> None:
    _identity, sheets = backup
    out = tmp_path / "restored.txt"
    run = restore(out, sheets[0], sheets[3])
    assert run.status == ExitStatus.ERROR
    assert "needs 3 different shares; only 2 given" in run.err
    assert not out.exists()


def test_the_same_sheet_twice_counts_once(
    tmp_path: Path, backup: tuple[X25519Identity, list[Path]]
) -> None:
    _identity, sheets = backup
    run = restore(tmp_path / "restored.txt", sheets[0], sheets[1], sheets[1])
    assert run.status == ExitStatus.ERROR
    assert "only 2 given" in run.err


def _with_word(sheet: Path, position: int, word: str, out: Path) -> Path:
    words = sheet_words(sheet)
    words[position] = word
    out.write_text(" ".join(words) + "\n")
    return out


def test_a_word_not_in_the_list_is_named(
    tmp_path: Path, backup: tuple[X25519Identity, list[Path]]
) -> None:
    _identity, sheets = backup
    typo = _with_word(sheets[1], 7, "zebrafish", tmp_path / "typo.txt")
    run = restore(tmp_path / "restored.txt", sheets[0], typo, sheets[2])
    assert run.status == ExitStatus.ERROR
    assert "'zebrafish' is not in the SLIP-39 word list" in run.err
    assert str(typo) in run.err
    assert not (tmp_path / "restored.txt").exists()


def test_a_wrong_but_valid_word_fails_the_checksum(
    tmp_path: Path, backup: tuple[X25519Identity, list[Path]]
) -> None:
    _identity, sheets = backup
    words = sheet_words(sheets[1])
    other = next(w for w in WORDLIST if w != words[20])
    wrong = _with_word(sheets[1], 20, other, tmp_path / "wrong.txt")
    run = restore(tmp_path / "restored.txt", sheets[0], wrong, sheets[2])
    assert run.status == ExitStatus.ERROR
    assert "checksum does not match" in run.err


def test_sheets_from_two_different_backups_are_refused(tmp_path: Path) -> None:
    sheets = []
    for name in ("a", "b"):
        write_identity(tmp_path / f"{name}.txt")
        review(["key", "backup", "--identity", tmp_path / f"{name}.txt", "--out",
                tmp_path / f"sheets-{name}", "--shares", "3", "--threshold", "2"])  # fmt: skip
        sheets.append(sorted((tmp_path / f"sheets-{name}").iterdir())[0])
    run = restore(tmp_path / "restored.txt", *sheets)
    assert run.status == ExitStatus.ERROR
    assert "different backup" in run.err


def test_shares_typed_one_per_line_restore_the_identity(
    tmp_path: Path, backup: tuple[X25519Identity, list[Path]]
) -> None:
    identity, sheets = backup
    typed = "\n".join(" ".join(sheet_words(p)).upper() for p in sheets[1:4]) + "\n"
    run = restore(tmp_path / "restored.txt", stdin=typed)
    assert run.status == ExitStatus.OK, run.err
    assert run.out.strip() == str(identity.recipient)


def test_restore_protects_the_new_file_with_a_passphrase_and_refuses_to_overwrite(
    tmp_path: Path, backup: tuple[X25519Identity, list[Path]]
) -> None:
    identity, sheets = backup
    passphrase = tmp_path / "pass.txt"
    passphrase.write_text("a long enough passphrase\n")
    out = tmp_path / "restored.age"
    run = review(["key", "restore", "--out", out, "--passphrase-file", passphrase,
                  *sheets[:3]])  # fmt: skip
    assert run.status == ExitStatus.OK, run.err
    assert out.read_bytes().startswith(b"age-encryption.org/v1\n-> scrypt ")
    again = restore(out, *sheets[:3])
    assert again.status == ExitStatus.ERROR and "already exists" in again.err


def test_a_sheet_whose_printed_public_key_differs_is_refused(
    tmp_path: Path, backup: tuple[X25519Identity, list[Path]]
) -> None:
    _identity, sheets = backup
    other = str(X25519Identity.generate().recipient)
    edited = tmp_path / "edited.txt"
    text = sheets[0].read_text()
    edited.write_text(re.sub(r"age1[0-9a-z]+", other, text))
    run = restore(tmp_path / "restored.txt", edited, sheets[1], sheets[2])
    assert run.status == ExitStatus.ERROR
    assert "differs from the one printed on the sheets" in run.err


def test_backup_of_an_encrypted_identity_asks_for_its_passphrase(tmp_path: Path) -> None:
    passphrase = tmp_path / "pass.txt"
    passphrase.write_text("a long enough passphrase\n")
    key = tmp_path / "id.age"
    run = review(["keygen", "--out", key, "--passphrase-file", passphrase])  # fmt: skip
    recipient = run.out.strip()
    run = review(["key", "backup", "--identity", key, "--out", tmp_path / "s",
                  "--passphrase-file", passphrase, "--shares", "2",
                  "--threshold", "2"])  # fmt: skip
    assert run.status == ExitStatus.OK, run.err
    run = restore(tmp_path / "back.txt", *sorted((tmp_path / "s").iterdir()))
    assert run.out.strip() == recipient


@pytest.mark.parametrize(
    ("count", "threshold", "message"),
    [("5", "1", "threshold of 1"), ("3", "4", "threshold <= shares"), ("17", "3", "<= 16")],
)
def test_impossible_schemes_are_refused(
    tmp_path: Path, count: str, threshold: str, message: str
) -> None:
    write_identity(tmp_path / "id.txt")
    run = review(["key", "backup", "--identity", tmp_path / "id.txt", "--out", tmp_path / "s",
                  "--shares", count, "--threshold", threshold])  # fmt: skip
    assert run.status == ExitStatus.ERROR
    assert message in run.err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_restore_asks_until_enough_shares_and_retries_a_typo(
    tmp_path: Path, backup: tuple[X25519Identity, list[Path]]
) -> None:
    identity, sheets = backup
    words = [" ".join(sheet_words(p)) for p in sheets]
    typo = " ".join(w if i != 5 else "zebrafish" for i, w in enumerate(words[0].split()))
    stdin = _Terminal("\n".join([typo, words[0], words[2], words[4], "never read"]) + "\n")
    stdout, stderr = io.StringIO(), io.StringIO()
    status = main(
        ["key", "restore", "--out", str(tmp_path / "r.txt"), "--no-passphrase"],
        stdin=stdin, stdout=stdout, stderr=stderr, env={},
    )  # fmt: skip
    assert status == ExitStatus.OK, stderr.getvalue()
    assert "'zebrafish' is not in the SLIP-39 word list" in stderr.getvalue()
    assert "Type that share again" in stderr.getvalue()
    assert "Share 3 of 3" in stderr.getvalue()
    assert stdout.getvalue().strip() == str(identity.recipient)


def test_backup_refuses_a_folder_holding_sheets_of_another_backup(
    tmp_path: Path, backup: tuple[X25519Identity, list[Path]]
) -> None:
    _identity, sheets = backup
    before = {p: p.read_bytes() for p in sheets}
    run = review(["key", "backup", "--identity", tmp_path / "identity.txt", "--out",
                  tmp_path / "sheets"])  # fmt: skip
    assert run.status == ExitStatus.ERROR and "choose an empty folder" in run.err
    assert {p: p.read_bytes() for p in sorted((tmp_path / "sheets").iterdir())} == before


# --- post-quantum identities ------------------------------------------------------------


@pytest.fixture
def pq_backup(tmp_path: Path) -> tuple[MLKEM768X25519Identity, list[Path]]:
    key = tmp_path / "pq-identity.txt"
    run = review(["keygen", "--out", key, "--no-passphrase"])
    assert run.status == ExitStatus.OK, run.err
    [identity] = parse_identities(key.read_text())
    assert isinstance(identity, MLKEM768X25519Identity)
    run = review(["key", "backup", "--identity", key, "--out", tmp_path / "pq-sheets"])
    assert run.status == ExitStatus.OK, run.err
    assert run.out.strip() == str(identity.recipient)
    return identity, sorted((tmp_path / "pq-sheets").iterdir())


def test_post_quantum_sheets_print_a_fingerprint_and_the_kind(
    pq_backup: tuple[MLKEM768X25519Identity, list[Path]],
) -> None:
    identity, sheets = pq_backup
    fingerprint = shares.public_key_check(identity.recipient)
    assert re.fullmatch(r"SHA256:([0-9a-f]{4} ){7}[0-9a-f]{4}", fingerprint)
    for sheet in sheets:
        text = sheet.read_text("utf-8")
        assert f"Public key fingerprint (for checking): {fingerprint}" in text
        assert "Key kind: post-quantum (age1pq1...)" in text
        # Neither the 1,950-character public key nor the secret is printed.
        assert str(identity.recipient) not in text and str(identity) not in text
        # 32-byte seed plus the 2-byte kind tag: 35 words.
        assert len(sheet_words(sheet)) == 35


def test_any_three_post_quantum_sheets_restore_the_post_quantum_identity(
    tmp_path: Path, pq_backup: tuple[MLKEM768X25519Identity, list[Path]]
) -> None:
    identity, sheets = pq_backup
    for combination in itertools.combinations(sheets, 3):
        inputs = [shares.parse_sheet(p.read_text(), p.name) for p in combination]
        restored = shares.combine_shares(inputs)
        assert isinstance(restored, MLKEM768X25519Identity)
        assert str(restored) == str(identity)
    out = tmp_path / "restored.txt"
    run = restore(out, sheets[1], sheets[3], sheets[4])
    assert run.status == ExitStatus.OK, run.err
    assert run.out.strip() == str(identity.recipient)
    assert [str(i) for i in parse_identities(out.read_text())] == [str(identity)]


def test_typed_post_quantum_shares_restore_without_the_sheets(
    tmp_path: Path, pq_backup: tuple[MLKEM768X25519Identity, list[Path]]
) -> None:
    # Typed words carry no public key: the kind must come from the words alone.
    identity, sheets = pq_backup
    typed = "\n".join(" ".join(sheet_words(p)) for p in sheets[:3]) + "\n"
    run = restore(tmp_path / "typed.txt", stdin=typed)
    assert run.status == ExitStatus.OK, run.err
    assert run.out.strip() == str(identity.recipient)


def test_a_post_quantum_sheet_with_another_fingerprint_is_refused(
    tmp_path: Path, pq_backup: tuple[MLKEM768X25519Identity, list[Path]]
) -> None:
    _identity, sheets = pq_backup
    other = shares.public_key_check(MLKEM768X25519Identity.generate().recipient)
    edited = tmp_path / "edited.txt"
    edited.write_text(re.sub(r"SHA256:[0-9a-f ]+", other, sheets[0].read_text()))
    run = restore(tmp_path / "restored.txt", edited, sheets[1], sheets[2])
    assert run.status == ExitStatus.ERROR
    assert "differs from the one printed on the sheets" in run.err


def test_shared_secret_kinds_cannot_be_confused() -> None:
    classic = X25519Identity.generate()
    pq = MLKEM768X25519Identity.generate()
    assert len(shares.identity_secret(classic)) == 32
    assert shares.identity_secret(pq)[:2] == b"PQ" and len(shares.identity_secret(pq)) == 34
    assert str(shares.identity_from_secret(shares.identity_secret(classic))) == str(classic)
    assert str(shares.identity_from_secret(shares.identity_secret(pq))) == str(pq)
    with pytest.raises(KeyFormatError):
        shares.identity_from_secret(b"XX" + bytes(32))
