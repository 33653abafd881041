"""What a run did with each submission: a Status, and for a failure one exception class per kind.

Callers tell the kinds apart with `isinstance`; each class carries the label
the tool prints and whether it is evidence of tampering (which makes the
command exit with `ExitStatus.INTEGRITY`).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """What a run did with one submission; the index page shows it beside each file."""

    OPENED = "opened"
    # Opened by an earlier run; every hash was checked again in this one.
    ALREADY_OPENED = "already opened"
    FAILED = "failed"


class OpenFailure(Exception):
    """One submission could not be opened or checked; the message says why and what to do."""

    label = "not opened"
    # True for the kinds that mean the evidence itself is in doubt.
    integrity = False


class Tampered(OpenFailure):
    """The ciphertext or its manifest is damaged, altered or substituted."""

    label = "tampered or damaged"
    integrity = True


class NoKey(OpenFailure):
    """None of the given identities can decrypt the manifest."""

    label = "no matching key"


class Conflict(OpenFailure):
    """Something the tool did not write is in the way of the output folder."""

    label = "output conflict"


class Changed(OpenFailure):
    """An opened submission's ciphertext or files no longer match the hashes recorded then."""

    label = "changed since opened"
    integrity = True


class Unexpected(OpenFailure):
    """A bug or an unforeseen condition; the run goes on with the next submission."""

    label = "unexpected error"
