"""The hybrid post-quantum recipient type: "age1pq1..." and "AGE-SECRET-KEY-PQ-1..." keys.

The C2SP age specification (c2sp.org/age) defines it on HPKE (RFC 9180) with
the MLKEM768-X25519 KEM (X-Wing, from draft-ietf-hpke-pq), HKDF-SHA256 and
ChaCha20Poly1305, in base mode with info "age-encryption.org/mlkem768x25519"
and an empty aad. Everything cryptographic comes from `cryptography` (>= 47):
this module only encodes keys and stanzas.

A file stays secret as long as EITHER ML-KEM-768 or X25519 holds, so a
recording made today cannot be opened by a future quantum computer. That only
helps if every recipient of the file is post-quantum: one X25519 stanza
beside it would be the weak door. The Writer therefore refuses to mix them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from portal.core.age._bech32 import Bech32Identity, Bech32Recipient
from portal.core.age._format import Stanza, b64encode, stanzas_of_type
from portal.core.age.errors import HeaderError, KeyFormatError, NoIdentityMatchError
from portal.core.age.primitives import FILE_KEY_SIZE, TAG_SIZE

STANZA_TYPE = "mlkem768x25519"
HPKE_INFO = b"age-encryption.org/mlkem768x25519"
RECIPIENT_HRP = "age1pq"
IDENTITY_HRP = "AGE-SECRET-KEY-PQ-"
SEED_SIZE = 32
MLKEM_PUBLIC_SIZE = 1184
MLKEM_CIPHERTEXT_SIZE = 1088
X25519_SIZE = 32
PUBLIC_KEY_SIZE = MLKEM_PUBLIC_SIZE + X25519_SIZE
ENC_SIZE = MLKEM_CIPHERTEXT_SIZE + X25519_SIZE
BODY_SIZE = FILE_KEY_SIZE + TAG_SIZE

_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
# Any clamped scalar maps a low-order point to zero (see x25519.py).
_PROBE_SCALAR = bytes(range(1, 33))


def _is_low_order(private: X25519PrivateKey, public: bytes) -> bool:
    try:
        secret = private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return True
    return not any(secret)


def _expand_seed(seed: bytes) -> tuple[mlkem.MLKEM768PrivateKey, X25519PrivateKey]:
    # X-Wing / MLKEM768-X25519 key derivation: SHAKE256(seed) gives the 64-byte
    # ML-KEM-768 seed (d || z) followed by the 32-byte X25519 scalar.
    expanded = hashlib.shake_256(seed).digest(64 + X25519_SIZE)
    return (
        mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
        X25519PrivateKey.from_private_bytes(expanded[64:]),
    )


class MLKEM768X25519Recipient(Bech32Recipient):
    """A hybrid post-quantum public key (1216 bytes) that files are encrypted to ("age1pq1...")."""

    __slots__ = ("_hpke", "_public")
    HRP = RECIPIENT_HRP
    REFUSAL = "not a post-quantum recipient: expected a lowercase 'age1pq1...' key"

    post_quantum = True

    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != PUBLIC_KEY_SIZE:
            raise KeyFormatError(
                f"an mlkem768x25519 public key is {PUBLIC_KEY_SIZE} bytes, not {len(public_key)}"
            )
        try:
            mlkem_public = mlkem.MLKEM768PublicKey.from_public_bytes(public_key[:MLKEM_PUBLIC_SIZE])
        except ValueError:
            raise KeyFormatError("not a usable ML-KEM-768 public key") from None
        x25519_bytes = public_key[MLKEM_PUBLIC_SIZE:]
        if _is_low_order(X25519PrivateKey.from_private_bytes(_PROBE_SCALAR), x25519_bytes):
            raise KeyFormatError("not a usable X25519 public key (low-order point)")
        self._hpke = hpke.MLKEM768X25519PublicKey(
            mlkem_public, X25519PublicKey.from_public_bytes(x25519_bytes)
        )
        self._public = bytes(public_key)

    @property
    def public_key(self) -> bytes:
        """The raw 1216-byte public key (ML-KEM-768 key || X25519 point)."""
        return self._public

    def wrap(self, file_key: bytes, rng: Callable[[int], bytes] = os.urandom) -> list[Stanza]:
        """Wrap the file key with HPKE SealBase.

        `rng` is accepted for the Recipient protocol but unused: HPKE draws
        its ephemeral randomness inside OpenSSL, which offers no way to
        inject it.
        """
        sealed = _SUITE.encrypt(file_key, self._hpke, info=HPKE_INFO)
        enc, body = sealed[:ENC_SIZE], sealed[ENC_SIZE:]
        return [Stanza(STANZA_TYPE, (b64encode(enc),), body)]

    def __repr__(self) -> str:
        text = str(self)
        return f"MLKEM768X25519Recipient('{text[:16]}...{text[-8:]}')"


class MLKEM768X25519Identity(Bech32Identity[MLKEM768X25519Recipient]):
    """A hybrid post-quantum private key: a 32-byte seed ("AGE-SECRET-KEY-PQ-1...")."""

    __slots__ = ("_hpke", "_recipient", "_secret", "_x25519")
    SECRET_SIZE = SEED_SIZE
    HRP = IDENTITY_HRP
    REFUSAL = "not a post-quantum identity: expected an uppercase 'AGE-SECRET-KEY-PQ-1...' key"

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise KeyFormatError(f"an mlkem768x25519 identity is a {SEED_SIZE}-byte seed")
        mlkem_private, x25519_private = _expand_seed(seed)
        self._secret = bytes(seed)
        self._x25519 = x25519_private
        self._hpke = hpke.MLKEM768X25519PrivateKey(mlkem_private, x25519_private)
        self._recipient = MLKEM768X25519Recipient(
            mlkem_private.public_key().public_bytes_raw()
            + x25519_private.public_key().public_bytes_raw()
        )

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed (for paper backups; handle with care)."""
        return self._secret

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes:
        """Find and unwrap the file key from a stanza addressed to this identity.

        Raises:
            HeaderError: an mlkem768x25519 stanza is malformed, or its X25519
                share is low order (the spec's all-zero shared secret).
            NoIdentityMatchError: no mlkem768x25519 stanza opens with this key.
        """
        for stanza, enc in stanzas_of_type(stanzas, STANZA_TYPE, "enc", ENC_SIZE):
            # Checked before decrypting: a body of another length could be
            # used as a partitioning oracle.
            if len(stanza.body) != BODY_SIZE:
                raise HeaderError("mlkem768x25519 stanza body is not a wrapped 16-byte file key")
            # HPKE reports a low-order share as a plain decryption failure; the
            # spec makes it a hard error, so it is checked here first.
            if _is_low_order(self._x25519, enc[MLKEM_CIPHERTEXT_SIZE:]):
                raise HeaderError("invalid mlkem768x25519 stanza: low-order X25519 share")
            try:
                return _SUITE.decrypt(enc + stanza.body, self._hpke, info=HPKE_INFO)
            except InvalidTag:
                continue
        raise NoIdentityMatchError("no mlkem768x25519 stanza matches this identity")

    def __repr__(self) -> str:
        # Never put the secret key in a repr: reprs end up in logs and tracebacks.
        return f"MLKEM768X25519Identity(recipient={self._recipient!r})"
