"""The native X25519 recipient type: "age1..." recipients, "AGE-SECRET-KEY-1..." identities."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from portal.core.age._bech32 import Bech32Identity, Bech32Recipient
from portal.core.age._format import Stanza, b64encode, stanzas_of_type
from portal.core.age.errors import HeaderError, KeyFormatError, NoIdentityMatchError
from portal.core.age.primitives import hkdf, unwrap_file_key, wrap_file_key

X25519_LABEL = b"age-encryption.org/v1/X25519"
STANZA_TYPE = "X25519"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "AGE-SECRET-KEY-"
POINT_SIZE = 32

# Any clamped scalar maps a low-order point to zero, so one fixed scalar is
# enough to recognise (and refuse) such a "public key" when it is parsed.
_PROBE_SCALAR = bytes(range(1, 33))


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def _shared_secret(private: X25519PrivateKey, public: bytes) -> bytes:
    """Compute X25519, refusing low-order points that give an all-zero secret.

    Raises:
        ValueError: the point is low order, so the secret would be known to
            anyone and would not bind the stanza to the key.
    """
    secret = private.exchange(X25519PublicKey.from_public_bytes(public))
    if not any(secret):
        raise ValueError("X25519 shared secret is all zeros")
    return secret


def _wrap_key(shared: bytes, share: bytes, recipient: bytes) -> bytes:
    # Binding both public values into the salt ties the wrap key to this
    # exchange, not only to the shared secret.
    return hkdf(shared, share + recipient, X25519_LABEL)


class X25519Recipient(Bech32Recipient):
    """A public key that files can be encrypted to; `parse` reads an "age1..." string."""

    __slots__ = ("_public",)
    HRP = RECIPIENT_HRP
    REFUSAL = "not an X25519 recipient: expected a lowercase 'age1...' key"

    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != POINT_SIZE:
            raise KeyFormatError("an X25519 public key is 32 bytes")
        try:
            _shared_secret(X25519PrivateKey.from_private_bytes(_PROBE_SCALAR), public_key)
        except ValueError:
            raise KeyFormatError("not a usable X25519 public key (low-order point)") from None
        self._public = bytes(public_key)

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public

    def wrap(self, file_key: bytes, rng: Callable[[int], bytes] = os.urandom) -> list[Stanza]:
        """Wrap the file key to this recipient with a fresh ephemeral key."""
        ephemeral = X25519PrivateKey.from_private_bytes(rng(POINT_SIZE))
        share = _raw_public(ephemeral.public_key())
        shared = _shared_secret(ephemeral, self._public)
        body = wrap_file_key(_wrap_key(shared, share, self._public), file_key)
        return [Stanza(STANZA_TYPE, (b64encode(share),), body)]

    def __repr__(self) -> str:
        return f"X25519Recipient({str(self)!r})"


class X25519Identity(Bech32Identity[X25519Recipient]):
    """A private key that decrypts files encrypted to its recipient ("AGE-SECRET-KEY-1...")."""

    __slots__ = ("_private", "_recipient", "_secret")
    SECRET_SIZE = POINT_SIZE
    HRP = IDENTITY_HRP
    REFUSAL = "not an X25519 identity: expected an uppercase 'AGE-SECRET-KEY-1...' key"

    def __init__(self, secret_key: bytes) -> None:
        if len(secret_key) != POINT_SIZE:
            raise KeyFormatError("an X25519 secret key is 32 bytes")
        self._secret = bytes(secret_key)
        self._private = X25519PrivateKey.from_private_bytes(secret_key)
        self._recipient = X25519Recipient(_raw_public(self._private.public_key()))

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes:
        """Find and unwrap the file key from a stanza addressed to this identity.

        Raises:
            HeaderError: an X25519 stanza is malformed or uses a low-order share.
            NoIdentityMatchError: no X25519 stanza opens with this key.
        """
        for stanza, share in stanzas_of_type(stanzas, STANZA_TYPE, "share", POINT_SIZE):
            try:
                shared = _shared_secret(self._private, share)
            except ValueError:
                raise HeaderError("invalid X25519 stanza: low-order share") from None
            key = _wrap_key(shared, share, self._recipient.public_key)
            try:
                return unwrap_file_key(key, stanza.body)
            except NoIdentityMatchError:
                continue
        raise NoIdentityMatchError("no X25519 stanza matches this identity")

    def __repr__(self) -> str:
        # Never put the secret key in a repr: reprs end up in logs and tracebacks.
        return f"X25519Identity(recipient={str(self._recipient)!r})"
