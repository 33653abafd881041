"""Key derivation and wrapping primitives shared by the header and stanzas."""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from portal.core.age.errors import HeaderError, NoIdentityMatchError

FILE_KEY_SIZE = 16
"""The file key is 128 bits: every recipient wraps the same 16 bytes."""

KEY_SIZE = 32
"""Every key derived with HKDF in age is 32 bytes long."""

TAG_SIZE = 16
"""Poly1305 tag appended by every ChaCha20-Poly1305 encryption."""

HEADER_LABEL = b"header"
PAYLOAD_LABEL = b"payload"

# The wrapping key is derived fresh for every stanza and used exactly once, so
# a fixed all-zero nonce is safe and keeps the stanza body to ciphertext + tag.
_ZERO_NONCE = bytes(12)


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """Derive a 32-byte key with HKDF-SHA-256 (extract, then expand)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(ikm)


def wrap_file_key(key: bytes, file_key: bytes) -> bytes:
    """Encrypt the file key under a single-use wrapping key."""
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)


def unwrap_file_key(key: bytes, body: bytes) -> bytes:
    """Decrypt a stanza body into the file key.

    Raises:
        HeaderError: the body is not exactly one wrapped file key long. This is
            checked before decrypting because ChaCha20-Poly1305 is not key
            committing: accepting other lengths would open the door to
            partitioning oracle attacks (for example against passphrases).
        NoIdentityMatchError: the key does not open the body.
    """
    if len(body) != FILE_KEY_SIZE + TAG_SIZE:
        raise HeaderError("stanza body is not a wrapped 16-byte file key")
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        raise NoIdentityMatchError("stanza was not encrypted to this identity") from None


def header_mac(file_key: bytes, header: bytes) -> bytes:
    """Compute the MAC over the header up to and including the "---" mark."""
    key = hkdf(file_key, b"", HEADER_LABEL)
    return hmac.digest(key, header, "sha256")


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    """Derive the STREAM key; the random nonce makes it unique per file."""
    return hkdf(file_key, nonce, PAYLOAD_LABEL)
