"""What a run did with each submission: a Status, and for a failure one exception class per kind.

Callers tell the kinds apart with `isinstance`; each class carries the label
the tool prints and whether it is evidence of tampering (which makes the
command exit with `ExitStatus.INTEGRITY`). An `OpenReport` gathers the
`Outcome` of every submission of one `open` run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Status(StrEnum):
    """What a run did with one submission; the index page shows it beside each file."""

    OPENED = "opened"
    # Opened by an earlier run; every hash was checked again in this one.
    ALREADY_OPENED = "already opened"
    FAILED = "failed"


class OpenFailure(Exception):
    """One submission could not be opened or checked; the message says why and what to do.

    Each kind is a subclass that names its `label` (what the tool prints) and
    whether it is evidence of tampering (`integrity`, exit status 3).
    """

    label = "not opened"
    integrity = False

    def __init_subclass__(cls, *, label: str, integrity: bool = False) -> None:
        super().__init_subclass__()
        cls.label = label
        cls.integrity = integrity


class Tampered(OpenFailure, label="tampered or damaged", integrity=True):
    """The ciphertext or its manifest is damaged, altered or substituted."""


class NoKey(OpenFailure, label="no matching key"):
    """None of the given identities can decrypt the manifest."""


class Conflict(OpenFailure, label="output conflict"):
    """Something the tool did not write is in the way of the output folder."""


class Changed(OpenFailure, label="changed since opened", integrity=True):
    """An opened submission's ciphertext or files no longer match the hashes recorded then."""


class Unexpected(OpenFailure, label="unexpected error"):
    """A bug or an unforeseen condition; the run goes on with the next submission."""


@dataclass
class Outcome:
    submission_id: str
    status: Status
    # Set when the status is FAILED: why, with its kind and label.
    failure: OpenFailure | None = None

    @property
    def reason(self) -> str:
        return str(self.failure) if self.failure is not None else ""

    @property
    def kind(self) -> str:
        return self.failure.label if self.failure is not None else ""


@dataclass
class OpenReport:
    outcomes: list[Outcome] = field(default_factory=list)
    index_path: Path | None = None

    def _with(self, status: Status) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def opened(self) -> list[Outcome]:
        return self._with(Status.OPENED)

    @property
    def skipped(self) -> list[Outcome]:
        return self._with(Status.ALREADY_OPENED)

    @property
    def failed(self) -> list[Outcome]:
        return self._with(Status.FAILED)
