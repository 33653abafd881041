"""Exceptions raised by the age implementation.

Each failure class has its own type so that callers can react to it (for
example, tell a reviewer "wrong key" rather than "corrupted file") without
parsing messages. Messages never contain key material or plaintext.
"""

from __future__ import annotations

__all__ = [
    "AgeError",
    "ArmorError",
    "HMACError",
    "HeaderError",
    "KeyFormatError",
    "NoIdentityMatchError",
    "PayloadError",
]


class AgeError(Exception):
    """Base class of every error raised by portal.core.age."""


class HeaderError(AgeError):
    """The file header is malformed, or a stanza addressed to us is invalid."""


class HMACError(HeaderError):
    """The header MAC does not match: the header was altered after encryption."""


class PayloadError(AgeError):
    """The encrypted payload is truncated, corrupted or has trailing data."""


class ArmorError(AgeError):
    """The ASCII armor around the file is malformed."""


class NoIdentityMatchError(AgeError):
    """None of the given identities can unwrap the file key."""


class KeyFormatError(AgeError):
    """A recipient or identity string (or file of them) is malformed."""
