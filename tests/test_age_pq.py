"""The hybrid post-quantum recipient type (mlkem768x25519) and its interoperability.

The independent oracle is the npm package `age-encryption` (the age authors'
TypeScript implementation) run by node: files we write open with it and files
it writes open with us, at every chunk-boundary size. Debian's age 1.1.1 and
pyrage have no post-quantum support, so they cannot serve here.
"""

from __future__ import annotations

import functools
import io
import random

import pytest

from portal.core.age import (
    HeaderError,
    KeyFormatError,
    MLKEM768X25519Identity,
    MLKEM768X25519Recipient,
    NoIdentityMatchError,
    Reader,
    Recipient,
    Stanza,
    Writer,
    X25519Identity,
    X25519Recipient,
    check_mix,
    decrypt,
    encrypt,
    is_post_quantum,
    parse_identities,
    parse_identity,
    parse_recipient,
    parse_recipients,
)
from portal.core.age import _bech32 as bech32
from portal.core.age._format import BufferedSource, b64decode, b64encode, parse_header
from tests import node_oracle

MIB = 1024 * 1024
SIZES = [0, 1, 65535, 65536, 65537, 3 * MIB + 17]
# The testkit's post-quantum identity (C2SP CCTV age/testdata/hybrid).
TESTKIT_PQ_IDENTITY = (
    "AGE-SECRET-KEY-PQ-1HZLGZUPT4ETPKDEV8HSGFDCYZ4E522W0A7PU2LHT8EH9W6YLNC3SW78XKG"
)


@functools.cache
def our_identity() -> MLKEM768X25519Identity:
    return MLKEM768X25519Identity.generate()


@functools.cache
def plaintext(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def header_stanzas(data: bytes) -> tuple[Stanza, ...]:
    return parse_header(BufferedSource(io.BytesIO(data))).stanzas


# --- keys ---------------------------------------------------------------------


def test_identity_round_trips_and_derives_a_1216_byte_recipient() -> None:
    identity = MLKEM768X25519Identity.generate()
    text = str(identity)
    assert text.startswith("AGE-SECRET-KEY-PQ-1") and text == text.upper()
    assert str(MLKEM768X25519Identity.parse(text)) == text
    recipient = identity.recipient
    assert len(recipient.public_key) == 1216
    assert str(recipient).startswith("age1pq1")
    assert MLKEM768X25519Recipient.parse(str(recipient)) == recipient
    assert is_post_quantum(recipient) and not is_post_quantum(X25519Identity.generate().recipient)


def test_secret_never_appears_in_repr() -> None:
    identity = MLKEM768X25519Identity.generate()
    assert str(identity) not in repr(identity)
    assert str(identity)[19:40] not in repr(identity)


def test_recipient_derivation_matches_the_typescript_implementation() -> None:
    # Key derivation (SHAKE256 seed expansion, ML-KEM-768 and X25519 key
    # generation) checked against an independent implementation.
    node_oracle.require()
    for text in (TESTKIT_PQ_IDENTITY, str(MLKEM768X25519Identity.generate())):
        assert str(parse_identity(text).recipient) == node_oracle.recipient_of(text)


def test_wrong_kinds_and_bad_keys_are_refused() -> None:
    x25519 = X25519Identity.generate()
    with pytest.raises(KeyFormatError, match="age1pq1"):
        MLKEM768X25519Recipient.parse(str(x25519.recipient))
    with pytest.raises(KeyFormatError, match="AGE-SECRET-KEY-PQ-1"):
        MLKEM768X25519Identity.parse(str(x25519))
    with pytest.raises(KeyFormatError, match="1216 bytes"):
        MLKEM768X25519Recipient(bytes(32))
    # A public key whose X25519 half is a low-order point would make the
    # classic half of every file worthless.
    good = our_identity().recipient.public_key
    with pytest.raises(KeyFormatError, match="low-order"):
        MLKEM768X25519Recipient(good[:1184] + bytes(32))
    # An ML-KEM key with coefficients >= q is not a valid encapsulation key.
    with pytest.raises(KeyFormatError, match="ML-KEM"):
        MLKEM768X25519Recipient(b"\xff" * 1184 + good[1184:])


# --- stanza -------------------------------------------------------------------------


def test_stanza_has_the_spec_shape() -> None:
    data = encrypt(b"x", [our_identity().recipient])
    (stanza,) = header_stanzas(data)
    assert stanza.type == "mlkem768x25519"
    assert len(stanza.args) == 1
    assert len(b64decode(stanza.args[0])) == 1120
    assert len(stanza.body) == 32


def test_each_file_gets_a_fresh_encapsulation() -> None:
    recipient = our_identity().recipient
    first = header_stanzas(encrypt(b"x", [recipient]))[0]
    second = header_stanzas(encrypt(b"x", [recipient]))[0]
    assert first.args != second.args


def test_wrong_identity_is_no_match_and_tampering_is_detected() -> None:
    data = encrypt(b"secret", [our_identity().recipient])
    with pytest.raises(NoIdentityMatchError):
        decrypt(data, [MLKEM768X25519Identity.generate()])
    # An X25519 identity ignores the post-quantum stanza.
    with pytest.raises(NoIdentityMatchError):
        decrypt(data, [X25519Identity.generate()])
    (stanza,) = header_stanzas(data)
    bad_body = Stanza(stanza.type, stanza.args, stanza.body[:-1] + bytes([stanza.body[-1] ^ 1]))
    with pytest.raises(NoIdentityMatchError):
        our_identity().unwrap([bad_body])
    long_body = Stanza(stanza.type, stanza.args, stanza.body + b"\0")
    with pytest.raises(HeaderError, match="16-byte file key"):
        our_identity().unwrap([long_body])
    enc = b64decode(stanza.args[0])
    low_order = Stanza(stanza.type, (b64encode(enc[:1088] + bytes(32)),), stanza.body)
    with pytest.raises(HeaderError, match="low-order"):
        our_identity().unwrap([low_order])
    extra = Stanza(stanza.type, (*stanza.args, "x"), stanza.body)
    with pytest.raises(HeaderError, match="one argument"):
        our_identity().unwrap([extra])


def test_the_right_stanza_is_found_among_several() -> None:
    others = [MLKEM768X25519Identity.generate().recipient for _ in range(2)]
    data = encrypt(b"many", [*others, our_identity().recipient])
    assert decrypt(data, [our_identity()]) == b"many"


# --- mixing rule ----------------------------------------------------------------------


def test_writer_refuses_to_mix_post_quantum_and_classic_recipients() -> None:
    mixed: list[Recipient] = [our_identity().recipient, X25519Identity.generate().recipient]
    for recipients in (mixed, mixed[::-1]):
        out = io.BytesIO()
        with pytest.raises(ValueError, match="cannot be mixed"):
            Writer(out, recipients)
        # Nothing, not even a header, was written.
        assert out.getvalue() == b""
    with pytest.raises(KeyFormatError, match="mixed"):
        check_mix(mixed)
    check_mix([our_identity().recipient, MLKEM768X25519Identity.generate().recipient])


def test_mixed_files_from_elsewhere_still_decrypt() -> None:
    # The rule binds writers; a reader accepts what the spec allows (the
    # testkit's hybrid_and_x25519 vector expects success too).
    node_oracle.require()
    classic = X25519Identity.generate()
    data = node_oracle.encrypt(b"mixed", str(our_identity().recipient), str(classic.recipient))
    assert decrypt(data, [our_identity()]) == b"mixed"
    assert decrypt(data, [classic]) == b"mixed"


# --- key files --------------------------------------------------------------------


def test_recipients_file_reads_post_quantum_keys_and_refuses_a_mix() -> None:
    pq = [MLKEM768X25519Identity.generate().recipient for _ in range(2)]
    text = f"# reviewers\n{pq[0]}\n\n# deputy\n{pq[1]}\n"
    assert parse_recipients(text) == pq
    classic = X25519Identity.generate().recipient
    with pytest.raises(KeyFormatError, match="line 3 is post-quantum but line 2 is not"):
        parse_recipients(f"# mixed\n{classic}\n{pq[0]}\n")


def test_single_recipient_parser_gives_the_right_type() -> None:
    pq = our_identity().recipient
    classic = X25519Identity.generate().recipient
    assert isinstance(parse_recipient(str(pq)), MLKEM768X25519Recipient)
    assert isinstance(parse_recipient(f"  {classic}\n"), X25519Recipient)
    with pytest.raises(KeyFormatError, match="malformed post-quantum recipient"):
        parse_recipient(str(pq)[:-1] + ("q" if str(pq)[-1] != "q" else "p"))


def test_identity_file_holds_both_kinds() -> None:
    pq, classic = MLKEM768X25519Identity.generate(), X25519Identity.generate()
    text = f"# new\n{pq}\n# old\n{classic}\n"
    assert [str(i) for i in parse_identities(text)] == [str(pq), str(classic)]
    with pytest.raises(KeyFormatError, match="line 1"):
        parse_identities(str(pq)[:-2] + "QQ")


def test_bech32_encoding_has_no_length_limit() -> None:
    text = str(our_identity().recipient)
    assert len(text) > 1900
    hrp, data = bech32.decode(text)
    assert (hrp, data) == ("age1pq", our_identity().recipient.public_key)


# --- interoperability with age-encryption (TypeScript) ------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_oracle_decrypts_what_we_encrypt(size: int) -> None:
    node_oracle.require()
    identity, recipient = node_oracle.keygen()
    out = io.BytesIO()
    with Writer(out, [parse_recipient(recipient)]) as writer:
        writer.write(plaintext(size))
    assert node_oracle.decrypt(out.getvalue(), identity) == plaintext(size)


@pytest.mark.parametrize("size", SIZES)
def test_we_decrypt_what_the_oracle_encrypts(size: int) -> None:
    node_oracle.require()
    data = node_oracle.encrypt(plaintext(size), str(our_identity().recipient))
    assert header_stanzas(data)[0].type == "mlkem768x25519"
    assert Reader(io.BytesIO(data), [our_identity()]).readall() == plaintext(size)


def test_oracle_refuses_our_file_for_the_wrong_key() -> None:
    # Guards the two tests above against an oracle that accepts anything.
    node_oracle.require()
    other_identity, _recipient = node_oracle.keygen()
    data = encrypt(b"not for you", [our_identity().recipient])
    with pytest.raises(node_oracle.OracleError):
        node_oracle.decrypt(data, other_identity)


def test_classic_keys_from_the_oracle_still_work() -> None:
    node_oracle.require()
    identity, recipient = node_oracle.keygen(classic=True)
    assert recipient.startswith("age1") and not recipient.startswith("age1pq1")
    data = encrypt(b"classic", [parse_recipient(recipient)])
    assert node_oracle.decrypt(data, identity) == b"classic"
