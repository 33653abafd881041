"""age keys: X25519 identities and recipients, key files, Bech32, and scrypt parameters."""

from __future__ import annotations

import inspect
import io
import os
import subprocess

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portal.core.age import (
    HeaderError,
    KeyFormatError,
    NoIdentityMatchError,
    ScryptIdentity,
    ScryptRecipient,
    Writer,
    X25519Identity,
    X25519Recipient,
    decrypt,
    encrypt,
    looks_encrypted_identity,
    parse_identities,
    parse_recipients,
)
from portal.core.age import _bech32 as bech32
from tests.support import require_tool

# The example key pair from the age specification (age-encryption.org/v1).
SPEC_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"

needs_age_keygen = pytest.mark.needs("age-keygen")


def change_char(s: str, index: int) -> str:
    """Replace one Bech32 data character with another valid one."""
    replacement = "q" if s[index].lower() != "q" else "p"
    if s[index].isupper():
        replacement = replacement.upper()
    return s[:index] + replacement + s[index + 1 :]


# --- X25519 keys ---------------------------------------------------------------


def test_spec_identity_derives_the_spec_recipient() -> None:
    identity = X25519Identity.parse(SPEC_IDENTITY)
    assert str(identity) == SPEC_IDENTITY
    assert str(identity.recipient) == SPEC_RECIPIENT
    assert identity.recipient == X25519Recipient.parse(SPEC_RECIPIENT)


def test_generated_identity_matches_pyrage() -> None:
    identity = X25519Identity.generate()
    assert str(identity).startswith("AGE-SECRET-KEY-1") and str(identity).isupper()
    assert str(identity.recipient).startswith("age1") and str(identity.recipient).islower()
    oracle = pyrage.x25519.Identity.from_str(str(identity))
    assert str(oracle.to_public()) == str(identity.recipient)


@needs_age_keygen
def test_generated_identity_matches_age_keygen() -> None:
    identity = X25519Identity.generate()
    public = subprocess.run(
        [require_tool("age-keygen"), "-y"],
        input=f"{identity}\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert public == str(identity.recipient)


def test_generate_uses_the_injected_rng() -> None:
    first = X25519Identity.generate(rng=lambda n: b"\x42" * n)
    assert str(first) == SPEC_IDENTITY


def test_identity_repr_does_not_reveal_the_secret_key() -> None:
    identity = X25519Identity.generate()
    assert str(identity) not in repr(identity)
    assert str(identity.recipient) in repr(identity)


def test_recipients_compare_and_hash_by_key() -> None:
    a = X25519Recipient.parse(SPEC_RECIPIENT)
    b = X25519Recipient.parse(SPEC_RECIPIENT)
    c = X25519Identity.generate().recipient
    assert a == b and hash(a) == hash(b) and a != c
    assert len({a, b, c}) == 2
    assert a != SPEC_RECIPIENT


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(SPEC_RECIPIENT.upper(), id="uppercase"),
        pytest.param("age1" + SPEC_RECIPIENT[4:10].upper() + SPEC_RECIPIENT[10:], id="mixed-case"),
        pytest.param(change_char(SPEC_RECIPIENT, 20), id="checksum-error"),
        pytest.param(SPEC_RECIPIENT[:-1], id="truncated"),
        pytest.param(SPEC_RECIPIENT + "q", id="extended"),
        pytest.param(SPEC_RECIPIENT.replace("age1", "agf1", 1), id="wrong-prefix"),
        pytest.param(SPEC_RECIPIENT.replace("1", "b", 1), id="no-separator"),
        pytest.param(SPEC_RECIPIENT + " ", id="trailing-space"),
        pytest.param(SPEC_IDENTITY, id="identity-instead"),
        pytest.param(bech32.encode("age", bytes(31)), id="31-bytes"),
        pytest.param(bech32.encode("age", bytes(33)), id="33-bytes"),
        pytest.param(bech32.encode("age", bytes(32)), id="low-order-point"),
        pytest.param(bech32.encode("age", b"\x01" + bytes(31)), id="low-order-point-one"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_recipients_are_rejected(text: str) -> None:
    with pytest.raises(KeyFormatError):
        X25519Recipient.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(SPEC_IDENTITY.lower(), id="lowercase"),
        pytest.param(change_char(SPEC_IDENTITY, 30), id="checksum-error"),
        pytest.param(SPEC_IDENTITY[:-2], id="truncated"),
        pytest.param(SPEC_RECIPIENT, id="recipient-instead"),
        pytest.param(bech32.encode("AGE-SECRET-KEY-", bytes(31)).upper(), id="31-bytes"),
        pytest.param(" " + SPEC_IDENTITY, id="leading-space"),
    ],
)
def test_malformed_identities_are_rejected(text: str) -> None:
    with pytest.raises(KeyFormatError):
        X25519Identity.parse(text)


@given(hrp=st.sampled_from(["age", "AGE-SECRET-KEY-", "x"]), data=st.binary(max_size=80))
@settings(max_examples=50)
def test_bech32_round_trips_without_a_length_limit(hrp: str, data: bytes) -> None:
    encoded = bech32.encode(hrp, data)
    assert bech32.decode(encoded) == (hrp.lower(), data)
    assert bech32.decode(encoded.upper()) == (hrp.upper(), data)


def test_bech32_detects_every_single_character_error() -> None:
    for index in range(len("age1"), len(SPEC_RECIPIENT)):
        with pytest.raises(KeyFormatError):
            bech32.decode(change_char(SPEC_RECIPIENT, index))


# --- key files -------------------------------------------------------------------


def test_recipients_file_allows_comments_blank_lines_and_crlf() -> None:
    other = X25519Identity.generate().recipient
    text = f"# organisation keys\r\n\r\n{SPEC_RECIPIENT}\r\n  # old laptop\n{other}  \n\n"
    assert parse_recipients(text) == [X25519Recipient.parse(SPEC_RECIPIENT), other]


def test_recipients_file_with_only_comments_is_empty() -> None:
    assert parse_recipients("# no keys yet\n\n") == []


def test_recipients_file_error_names_the_line_but_not_its_content() -> None:
    bad = change_char(SPEC_RECIPIENT, 12)
    with pytest.raises(KeyFormatError, match="line 3") as info:
        parse_recipients(f"# keys\n{SPEC_RECIPIENT}\n{bad}\n")
    assert bad not in str(info.value)


def test_private_key_in_recipients_file_is_refused_without_echoing_it() -> None:
    with pytest.raises(KeyFormatError, match="line 2: found a private key") as info:
        parse_recipients(f"{SPEC_RECIPIENT}\n{SPEC_IDENTITY}\n")
    assert SPEC_IDENTITY not in str(info.value)
    with pytest.raises(KeyFormatError, match="private key"):
        parse_recipients(SPEC_IDENTITY.lower())


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZ0b3Rlc3Rrb3Rlc3Rrb3Rlc3Rrb3Rlc3Rr",
            "line 2: found an SSH public key.*expected one age public key per line",
        ),
        ("age1pq1" + "q" * 60, "line 2: malformed post-quantum recipient"),
        ("age1yubikey1qwerty", "line 2: found an age plugin recipient"),
        (f"{SPEC_RECIPIENT} # alice", "line 2: found text after the key"),
        ("hello", "line 2: this is not an age public key; expected one age public key"),
        (SPEC_RECIPIENT[:-1], "line 2: malformed X25519 recipient"),
    ],
    ids=["ssh", "post-quantum-truncated", "plugin", "trailing-comment", "junk", "typo"],
)
def test_recipients_file_bad_lines_get_one_clear_error(line: str, expected: str) -> None:
    with pytest.raises(KeyFormatError, match=expected) as info:
        parse_recipients(f"# keys\n{line}\n")
    # The message names the line but never echoes it.
    assert line not in str(info.value)


@needs_age_keygen
def test_identity_file_from_age_keygen_parses() -> None:
    output = subprocess.run(
        [require_tool("age-keygen")], capture_output=True, text=True, check=True
    ).stdout
    public = next(
        line.split(": ")[1] for line in output.splitlines() if line.startswith("# public key")
    )
    (identity,) = parse_identities(output)
    assert str(identity.recipient) == public


def test_identity_file_error_names_the_line_but_not_its_content() -> None:
    bad = change_char(SPEC_IDENTITY, 40)
    with pytest.raises(KeyFormatError, match="line 2") as info:
        parse_identities(f"# key\n{bad}\n")
    assert bad not in str(info.value)


def test_identity_file_reads_post_quantum_identities() -> None:
    text = "AGE-SECRET-KEY-PQ-1HZLGZUPT4ETPKDEV8HSGFDCYZ4E522W0A7PU2LHT8EH9W6YLNC3SW78XKG"
    (identity,) = parse_identities(f"# pq\n{text}\n")
    assert str(identity) == text
    assert str(identity.recipient).startswith("age1pq1")


def test_encrypted_identity_files_are_recognised() -> None:
    identity_text = f"# created by testimony-review\n{SPEC_IDENTITY}\n".encode()
    encrypted = encrypt(identity_text, [ScryptRecipient(b"pass", work_factor=10)])
    armored = io.BytesIO()
    with Writer(armored, [ScryptRecipient(b"pass", work_factor=10)], armor=True) as writer:
        writer.write(identity_text)
    assert looks_encrypted_identity(encrypted)
    assert looks_encrypted_identity(b"\n" + armored.getvalue())
    assert not looks_encrypted_identity(identity_text)
    assert not looks_encrypted_identity(b"")
    plaintext = decrypt(encrypted, [ScryptIdentity(b"pass")]).decode()
    assert [str(i) for i in parse_identities(plaintext)] == [SPEC_IDENTITY]


# --- scrypt parameters -------------------------------------------------------------


@pytest.mark.slow  # scrypt at 2^18
def test_scrypt_recipient_uses_production_work_factor_by_default() -> None:
    # Tests elsewhere lower the cost for speed; this pins the real default.
    assert inspect.signature(ScryptRecipient).parameters["work_factor"].default == 18
    recipient = ScryptRecipient(b"correct horse battery staple")
    assert recipient.work_factor == 18
    (stanza,) = recipient.wrap(os.urandom(16), os.urandom)
    assert stanza.type == "scrypt" and stanza.args[1] == "18"


def test_scrypt_identity_refuses_work_factors_above_its_limit_before_computing() -> None:
    assert inspect.signature(ScryptIdentity).parameters["max_work_factor"].default == 22
    ciphertext = encrypt(b"x", [ScryptRecipient(b"pw", work_factor=12)])
    with pytest.raises(HeaderError, match="work factor"):
        decrypt(ciphertext, [ScryptIdentity(b"pw", max_work_factor=11)])
    assert decrypt(ciphertext, [ScryptIdentity(b"pw", max_work_factor=12)]) == b"x"


def test_scrypt_identity_does_not_match_other_files() -> None:
    ciphertext = encrypt(b"x", [X25519Identity.generate().recipient])
    with pytest.raises(NoIdentityMatchError):
        decrypt(ciphertext, [ScryptIdentity(b"pw")])


@pytest.mark.parametrize("work_factor", [0, 31, -1])
def test_scrypt_recipient_rejects_impossible_work_factors(work_factor: int) -> None:
    with pytest.raises(ValueError):
        ScryptRecipient(b"pw", work_factor=work_factor)
