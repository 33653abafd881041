"""`testimony-review keygen` and identity files: passphrase-protected, readable by stock age."""

from __future__ import annotations

import getpass
import io
import stat
import subprocess
from pathlib import Path

import pytest

from portal.core.age import (
    MLKEM768X25519Recipient,
    ScryptIdentity,
    X25519Recipient,
    decrypt,
    encrypt,
    parse_identities,
    parse_recipient,
)
from portal.review import cli
from portal.review.cli import ExitStatus
from portal.review.keys import IDENTITY_WORK_FACTOR
from portal.server.intake import store_submission
from tests import node_oracle
from tests.review_support import (
    Run,
    age_with_passphrase,
    make_store,
    open_args,
    review,
    submit,
)
from tests.support import require_tool

PASSPHRASE = "correct horse battery staple"
needs_age = pytest.mark.needs("age")


@pytest.fixture
def passphrase_file(tmp_path: Path) -> Path:
    path = tmp_path / "passphrase.txt"
    path.write_text(PASSPHRASE + "\n")
    return path


def keygen(out: Path, *extra: object) -> Run:
    return review(["keygen", "--out", out, *extra])


def test_keygen_without_passphrase_writes_a_private_age_identity_file(tmp_path: Path) -> None:
    out = tmp_path / "identity.txt"
    run = keygen(out, "--no-passphrase")

    assert run.status == ExitStatus.OK, run.err
    recipient = run.out.strip()
    [identity] = parse_identities(out.read_text())
    assert str(identity.recipient) == recipient
    # Post-quantum by default.
    assert MLKEM768X25519Recipient.parse(recipient)
    assert out.read_text().splitlines()[2].startswith("AGE-SECRET-KEY-PQ-1")
    assert f"# public key: {recipient}" in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # It tells how to switch: replace the classic lines, a mix is refused.
    assert "keys/recipients.txt" in run.err and "REPLACE every age1..." in run.err
    assert "post-quantum" in run.err


def test_keygen_classic_writes_an_x25519_identity(tmp_path: Path) -> None:
    out = tmp_path / "identity.txt"
    run = keygen(out, "--no-passphrase", "--classic")
    assert run.status == ExitStatus.OK, run.err
    [identity] = parse_identities(out.read_text())
    assert X25519Recipient.parse(run.out.strip()) == identity.recipient
    assert out.read_text().splitlines()[2].startswith("AGE-SECRET-KEY-1")
    # A classic key goes beside the old one (key rotation).
    assert "BESIDE" in run.err and "classic X25519" in run.err


def test_keygen_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "identity.txt"
    out.write_text("precious old key\n")
    run = keygen(out, "--no-passphrase")
    assert run.status == ExitStatus.ERROR
    assert "already exists" in run.err
    assert out.read_text() == "precious old key\n"


def test_keygen_with_passphrase_writes_an_scrypt_encrypted_identity(
    tmp_path: Path, passphrase_file: Path
) -> None:
    out = tmp_path / "identity.age"
    run = keygen(out, "--passphrase-file", passphrase_file)

    assert run.status == ExitStatus.OK, run.err
    data = out.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n-> scrypt ")
    assert b"AGE-SECRET-KEY" not in data
    text = decrypt(data, [ScryptIdentity(PASSPHRASE.encode())]).decode()
    [identity] = parse_identities(text)
    assert str(identity.recipient) == run.out.strip()


def test_encrypted_identity_opens_submissions_and_a_wrong_passphrase_is_named(
    tmp_path: Path, passphrase_file: Path
) -> None:
    key = tmp_path / "identity.age"
    recipient = keygen(key, "--passphrase-file", passphrase_file).out.strip()
    store = make_store(tmp_path / "data")
    sid = store_submission(store, [parse_recipient(recipient)], {"testimony": "hello"}, [], "en")
    args = open_args(store.root, key, tmp_path / "out", tmp_path / "c.jsonl")

    run = review([*args, "--passphrase-file", passphrase_file])
    assert run.status == ExitStatus.OK, run.err
    assert (tmp_path / "out" / sid / "testimony.json").exists()

    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase\n")
    run = review([*open_args(store.root, key, tmp_path / "out2", tmp_path / "c.jsonl"),
                  "--passphrase-file", wrong])  # fmt: skip
    assert run.status == ExitStatus.ERROR
    assert f"wrong passphrase for {key}" in run.err


def test_without_a_terminal_or_passphrase_file_keygen_says_what_to_do(tmp_path: Path) -> None:
    run = keygen(tmp_path / "identity.age")
    assert run.status == ExitStatus.ERROR
    assert "--passphrase-file" in run.err and "--no-passphrase" in run.err
    assert not (tmp_path / "identity.age").exists()


def test_a_short_passphrase_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    run = keygen(tmp_path / "identity.age", "--passphrase-file", short)
    assert run.status == ExitStatus.ERROR
    assert "shorter than" in run.err
    assert not (tmp_path / "identity.age").exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_keygen_asks_twice_and_refuses_a_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([PASSPHRASE, PASSPHRASE + " typo"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt, stream=None: next(answers))
    stderr = io.StringIO()
    out = tmp_path / "identity.age"
    status = cli.main(
        ["keygen", "--out", str(out)],
        stdin=_Terminal(),
        stdout=io.StringIO(),
        stderr=stderr,
        env={},
    )
    assert status == ExitStatus.ERROR
    assert "passphrases differ" in stderr.getvalue()
    assert not out.exists()

    answers = iter([PASSPHRASE, PASSPHRASE])
    status = cli.main(
        ["keygen", "--out", str(out)],
        stdin=_Terminal(),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        env={},
    )
    assert status == ExitStatus.OK
    assert out.read_bytes().startswith(b"age-encryption.org/v1\n-> scrypt ")


@pytest.mark.slow  # scrypt at 2^18, twice
@pytest.mark.production_kdf
def test_production_identity_files_use_work_factor_18_and_stock_age_reads_them(
    tmp_path: Path, passphrase_file: Path
) -> None:
    assert IDENTITY_WORK_FACTOR == 18
    key = tmp_path / "identity.age"
    # Debian's age 1.1.1 reads only classic keys; post-quantum ones need age >= 1.3.
    run = review(["keygen", "--classic", "--out", key, "--passphrase-file", passphrase_file])
    assert run.status == ExitStatus.OK, run.err
    header = key.read_bytes().split(b"\n")[1].split()
    assert header[:2] == [b"->", b"scrypt"] and header[3] == b"18"

    require_tool("age")
    message = tmp_path / "message.age"
    message.write_bytes(encrypt(b"for the reviewer", [X25519Recipient.parse(run.out.strip())]))
    plain = tmp_path / "message.txt"
    status = age_with_passphrase(["-d", "-i", str(key), "-o", str(plain), str(message)], PASSPHRASE)
    assert status == 0
    assert plain.read_bytes() == b"for the reviewer"


@needs_age
def test_stock_age_decrypts_submissions_with_a_plain_keygen_identity(tmp_path: Path) -> None:
    key = tmp_path / "identity.txt"
    recipient = keygen(key, "--no-passphrase", "--classic").out.strip()
    store = make_store(tmp_path / "data")
    identity = parse_identities(key.read_text())[0]
    assert str(identity.recipient) == recipient
    sid = submit(store, [identity], "hello", [("a.txt", b"attachment")])
    result = subprocess.run(
        ["age", "-d", "-i", str(key), str(store.path(sid) / "files" / "1.age")],
        capture_output=True,
        check=True,
    )
    assert result.stdout == b"attachment"


def test_typescript_age_decrypts_submissions_with_a_post_quantum_keygen_identity(
    tmp_path: Path,
) -> None:
    node_oracle.require()
    key = tmp_path / "identity.txt"
    recipient = keygen(key, "--no-passphrase").out.strip()
    store = make_store(tmp_path / "data")
    identity = parse_identities(key.read_text())[0]
    assert str(identity.recipient) == recipient and recipient.startswith("age1pq1")
    sid = submit(store, [identity], "hello", [("a.txt", b"attachment")])
    ciphertext = (store.path(sid) / "files" / "1.age").read_bytes()
    assert b"-> mlkem768x25519 " in ciphertext
    assert node_oracle.decrypt(ciphertext, str(identity)) == b"attachment"
