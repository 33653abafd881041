"""From a receipt to the witness's age identity, on either machine.

A witness's receipt is turned into an X25519 age identity with argon2id
under the deployment's salt. The identity's mailbox on the server holds the
replies; its recipient is what the reviewer encrypts a reply to.

Two generations of receipt exist (`portal.core.receipt`):

- Version 1: argon2id runs over the receipt's digits. The server derives the
  identity at every submission and seals its recipient (`reply_to`).
- Version 2 (issued since issue 25): argon2id runs over the receipt's
  *seed*, a SHA-256 of its digits under a fixed label. The server seals the
  seed, the salt and the cost (`reply_key`) instead of a recipient, so a
  submission costs one SHA-256 and no memory-hard derivation; the reviewer
  runs argon2id offline when it writes a reply. A guess at a receipt still
  costs one argon2id wherever it is checked (the follow-up login derives the
  identity from the receipt, and a mailbox name is a hash of the recipient),
  and the seed cannot be turned back into the receipt (SHA-256 over 83
  random bits).

What a seed gives whoever holds it (only the reviewer, through the
encrypted manifest): the witness's reply identity, so the replies the
organisation wrote to them. Not the receipt, so not a login as the witness.
docs/THREAT_MODEL.md says what this changes for a stolen reviewer key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import nacl.pwhash.argon2id as argon2id

from portal.core.age import X25519Identity

# Domain separation: what argon2id is fed, and what a version 2 seed is.
KDF_LABEL = b"testimony-portal/receipt-identity/1\x00"
SEED_LABEL = b"testimony-portal/receipt-seed/2\x00"
SEED_BYTES = 32
SALT_BYTES = argon2id.SALTBYTES
KDF_NAME = "argon2id"
# A sealed cost is read from a manifest that may be crafted: the reviewer's
# machine derives at most this much memory and these many passes for one
# (the server's own settings stay far below: 19 MiB and 2 passes by default).
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 1024 * 1024 * 1024


class ReplyKeyError(Exception):
    """A sealed reply key is not of the documented shape, or its cost is out of bounds."""


@dataclass(frozen=True)
class KdfCost:
    """argon2id costs: passes over memory and memory in bytes."""

    opslimit: int
    memlimit: int

    def check(self) -> None:
        """Raises ReplyKeyError for a cost below argon2id's minimum or above the bounds."""
        if not (argon2id.OPSLIMIT_MIN <= self.opslimit <= MAX_OPSLIMIT):
            raise ReplyKeyError(
                f"argon2id passes {self.opslimit} outside {argon2id.OPSLIMIT_MIN}-{MAX_OPSLIMIT}"
            )
        if not (argon2id.MEMLIMIT_MIN <= self.memlimit <= MAX_MEMLIMIT):
            raise ReplyKeyError(
                f"argon2id memory {self.memlimit} bytes outside "
                f"{argon2id.MEMLIMIT_MIN}-{MAX_MEMLIMIT}"
            )


def derive_identity(secret: bytes, salt: bytes, cost: KdfCost) -> X25519Identity:
    """The witness's age identity: argon2id(secret) under the deployment's salt.

    `secret` is a version 1 receipt's digits or a version 2 receipt's seed
    (`Receipt.secret()`).
    """
    key = argon2id.kdf(32, KDF_LABEL + secret, salt, opslimit=cost.opslimit, memlimit=cost.memlimit)
    return X25519Identity(key)


def seed_of(digits: str) -> bytes:
    """A version 2 receipt's seed: one SHA-256 of its canonical digits."""
    return hashlib.sha256(SEED_LABEL + digits.encode("ascii")).digest()


@dataclass(frozen=True)
class ReplyKey:
    """What a version 2 submission seals so the reviewer can derive the witness's recipient."""

    seed: bytes
    salt: bytes
    cost: KdfCost

    def __repr__(self) -> str:
        # The seed gives the witness's reply identity: never in a log or traceback.
        return "ReplyKey(<hidden>)"

    def identity(self) -> X25519Identity:
        """Runs argon2id: tens of milliseconds and `cost.memlimit` bytes."""
        return derive_identity(self.seed, self.salt, self.cost)

    def recipient(self) -> str:
        return str(self.identity().recipient)

    def to_json(self) -> dict[str, Any]:
        return {
            "kdf": KDF_NAME,
            "seed": self.seed.hex(),
            "salt": self.salt.hex(),
            "opslimit": self.cost.opslimit,
            "memlimit": self.cost.memlimit,
        }

    @classmethod
    def from_json(cls, raw: Any) -> ReplyKey:
        """The strict reader of `to_json`'s object.

        Raises:
            ReplyKeyError: a member is missing, of the wrong type or out of bounds.
        """
        if not isinstance(raw, dict) or set(raw) != {"kdf", "seed", "salt", "opslimit", "memlimit"}:
            raise ReplyKeyError("reply_key must hold exactly kdf, seed, salt, opslimit, memlimit")
        if raw["kdf"] != KDF_NAME:
            raise ReplyKeyError(f"reply_key kdf is not {KDF_NAME!r}")
        seed = _hex(raw["seed"], SEED_BYTES, "seed")
        salt = _hex(raw["salt"], SALT_BYTES, "salt")
        numbers = (raw["opslimit"], raw["memlimit"])
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
            raise ReplyKeyError("reply_key opslimit and memlimit must be integers")
        cost = KdfCost(opslimit=raw["opslimit"], memlimit=raw["memlimit"])
        cost.check()
        return cls(seed=seed, salt=salt, cost=cost)


def _hex(value: Any, size: int, name: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or value != value.lower():
        raise ReplyKeyError(f"reply_key {name} is not {2 * size} lowercase hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ReplyKeyError(f"reply_key {name} is not {2 * size} lowercase hex digits") from None
