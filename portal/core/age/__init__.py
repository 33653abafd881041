"""The age v1 file format (https://age-encryption.org/v1), on `cryptography`.

The server needs push-style encryption (Werkzeug calls write() as bytes
arrive), which is what Writer provides; Reader is for the offline reviewer.
Files interoperate with the age CLI, rage and pyrage. Hybrid post-quantum
(mlkem768x25519), X25519 and scrypt recipients are supported; other
recipient types are ignored when decrypting, as the spec requires.

This module is the package's one public surface, as filippo.io/age is for
Go: the header format (`_format`), the payload stream (`_stream`) and Bech32
(`_bech32`) are private, and no code outside the package imports any of its
modules (tests/test_age_module.py). The package needs only the standard
library and `cryptography`, and writes no files: the reviewer's tool writes
plaintext through `portal.core.fsio`.
"""

from portal.core.age._format import Stanza
from portal.core.age.age import (
    Identity,
    Reader,
    Recipient,
    Writer,
    decrypt,
    encrypt,
    header_stanzas,
)
from portal.core.age.errors import (
    AgeError,
    ArmorError,
    HeaderError,
    HMACError,
    KeyFormatError,
    NoIdentityMatchError,
    PayloadError,
)
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
    "encrypt",
    "header_stanzas",
    "is_post_quantum",
    "looks_encrypted_identity",
    "parse_identities",
    "parse_identity",
    "parse_recipient",
    "parse_recipients",
]
