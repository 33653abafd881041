"""XEdDSA: an Ed25519 signature made with an X25519 key, checked against its age recipient.

A follow-up sent with a version 1 receipt seals the witness's age recipient
(`reply_to`). That recipient is not secret, so a crafted submission could
name it and join the witness's conversation; a reply to it would then go to
the witness's mailbox. The server holds the witness's X25519 identity while
they are logged in, so it signs the follow-up's manifest with it, and the
reviewer checks the signature against `reply_to` itself: whoever knows only
the recipient cannot make one.

This is Signal's XEdDSA (https://signal.org/docs/specifications/xeddsa/,
section 2.3): the X25519 private scalar is used as an Ed25519 one, negated
when needed so that the Edwards public key has sign bit 0, which is what
the Montgomery u-coordinate alone determines. The result is an ordinary
Ed25519 signature, verified by libsodium (PyNaCl) after converting the
recipient's u-coordinate to the Edwards y-coordinate. The group arithmetic
is libsodium's; only the key conversion is here.
"""

from __future__ import annotations

import hashlib
import os

import nacl.bindings as sodium
import nacl.exceptions
import nacl.signing

from portal.core.age import X25519Identity, X25519Recipient

_P = 2**255 - 19
# XEdDSA's hash_1: the first hash input is 2**256 - 2, little-endian.
_HASH1_PREFIX = b"\xfe" + b"\xff" * 31


class XEdDSAError(Exception):
    """The signature does not verify with this recipient (forged, altered, or another key)."""


def _scalar(identity: X25519Identity) -> bytes:
    k = bytearray(identity.secret_bytes())
    # X25519's clamping (RFC 7748): the scalar the recipient was made with.
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    return bytes(k)


def sign(identity: X25519Identity, message: bytes, random: bytes | None = None) -> bytes:
    """A 64-byte Ed25519 signature of `message` by the key behind `identity.recipient`."""
    nonce = random if random is not None else os.urandom(64)
    k = _scalar(identity)
    edwards = sodium.crypto_scalarmult_ed25519_base_noclamp(k)
    a = sodium.crypto_core_ed25519_scalar_reduce(k + bytes(32))
    if edwards[31] & 0x80:
        a = sodium.crypto_core_ed25519_scalar_negate(a)
    public = edwards[:31] + bytes([edwards[31] & 0x7F])
    r = sodium.crypto_core_ed25519_scalar_reduce(
        hashlib.sha512(_HASH1_PREFIX + a + message + nonce).digest()
    )
    big_r = sodium.crypto_scalarmult_ed25519_base_noclamp(r)
    h = sodium.crypto_core_ed25519_scalar_reduce(hashlib.sha512(big_r + public + message).digest())
    s = sodium.crypto_core_ed25519_scalar_add(r, sodium.crypto_core_ed25519_scalar_mul(h, a))
    return bytes(big_r + s)


def edwards_public_key(recipient: X25519Recipient) -> bytes:
    """The Ed25519 public key (sign bit 0) with the recipient's Montgomery u-coordinate.

    Raises:
        XEdDSAError: the u-coordinate is not canonical or has no Edwards point.
    """
    u = int.from_bytes(recipient.public_key, "little")
    if u >= _P or (u + 1) % _P == 0:
        raise XEdDSAError("the recipient is not a usable public key")
    y = (u - 1) * pow(u + 1, _P - 2, _P) % _P
    return y.to_bytes(32, "little")


def verify(recipient: X25519Recipient, message: bytes, signature: bytes) -> None:
    """Raises XEdDSAError unless `signature` is by the key behind `recipient`."""
    if len(signature) != 64:
        raise XEdDSAError("a signature is 64 bytes")
    try:
        nacl.signing.VerifyKey(edwards_public_key(recipient)).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise XEdDSAError("the signature does not verify with the reply recipient") from None
