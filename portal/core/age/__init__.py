"""The age v1 file format (https://age-encryption.org/v1), on `cryptography`.

The server needs push-style encryption (Werkzeug calls write() as bytes
arrive), which is what Writer provides; Reader and decrypt_to_path are for
the offline reviewer. Files interoperate with the age CLI, rage and pyrage.
Hybrid post-quantum (mlkem768x25519), X25519 and scrypt recipients are
supported; other recipient types are ignored
when decrypting, as the spec requires.
"""

from portal.core.age.age import Identity, Reader, Recipient, Writer, decrypt, encrypt
from portal.core.age.errors import (
    AgeError,
    ArmorError,
    HeaderError,
    HMACError,
    KeyFormatError,
    NoIdentityMatchError,
    PayloadError,
)
from portal.core.age.files import decrypt_to_path
from portal.core.age.format import Stanza
from portal.core.age.keys import (
    PrivateKey,
    PublicKey,
    check_mix,
    contains_secret_key,
    is_post_quantum,
    looks_encrypted_identity,
    parse_identities,
    parse_identity,
    parse_recipient,
    parse_recipients,
)
from portal.core.age.mlkem768x25519 import MLKEM768X25519Identity, MLKEM768X25519Recipient
from portal.core.age.scrypt import ScryptIdentity, ScryptRecipient
from portal.core.age.x25519 import X25519Identity, X25519Recipient

__all__ = [
    "AgeError",
    "ArmorError",
    "HMACError",
    "HeaderError",
    "Identity",
    "KeyFormatError",
    "MLKEM768X25519Identity",
    "MLKEM768X25519Recipient",
    "NoIdentityMatchError",
    "PayloadError",
    "PrivateKey",
    "PublicKey",
    "Reader",
    "Recipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "Stanza",
    "Writer",
    "X25519Identity",
    "X25519Recipient",
    "check_mix",
    "contains_secret_key",
    "decrypt",
    "decrypt_to_path",
    "encrypt",
    "is_post_quantum",
    "looks_encrypted_identity",
    "parse_identities",
    "parse_identity",
    "parse_recipient",
    "parse_recipients",
]
