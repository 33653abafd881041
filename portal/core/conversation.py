"""Names derived from a witness's reply recipient, shared by the server and the reviewer.

Both are SHA-256 hashes of the recipient string under different fixed
labels, so neither can be turned back into the recipient, and a mailbox
name seen on a seized server cannot be matched to a thread in an opened
folder without the recipient itself (which only the sealed manifests hold).
"""

from __future__ import annotations

import hashlib
import re

MAILBOX_LABEL = b"testimony-portal/server/mailbox/1\x00"
THREAD_LABEL = b"testimony-portal/thread/1\x00"
SINGLE_THREAD_LABEL = b"testimony-portal/thread-of-one/1\x00"
SEED_THREAD_LABEL = b"testimony-portal/thread-of-seed/2\x00"
MAILBOX_RE = re.compile(r"[0-9a-f]{64}")


def mailbox_name(recipient: str) -> str:
    """The folder under `replies/` where replies to this recipient wait."""
    return hashlib.sha256(MAILBOX_LABEL + recipient.encode("ascii")).hexdigest()


def thread_id(recipient: str) -> str:
    """The opaque value every submission made with one receipt shares."""
    return hashlib.sha256(THREAD_LABEL + recipient.encode("ascii")).hexdigest()


def thread_of_seed(seed: bytes) -> str:
    """The thread of a version 2 receipt's submissions, from the seed they seal."""
    return hashlib.sha256(SEED_THREAD_LABEL + seed).hexdigest()


def thread_of_one(submission_id: str) -> str:
    """The thread of a submission that carries no reply recipient (format 1)."""
    return hashlib.sha256(SINGLE_THREAD_LABEL + submission_id.encode("utf-8")).hexdigest()


def is_mailbox_name(name: str) -> bool:
    return bool(MAILBOX_RE.fullmatch(name))
