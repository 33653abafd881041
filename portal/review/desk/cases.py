"""Case work (statuses, tags, notes) kept as entries of the custody log.

The custody log is the record of truth: a change at the desk is one
`case` entry, appended through `CustodyLog.append` (which verifies the
chain first), holding who, when and what:

    {"action": "case", "submission": ID, "change": "status", "value": "verified", ...}
    {"action": "case", "thread": THREAD, "change": "tag", "value": "회령", ...}

`change` is `status`, `tag`, `untag` or `note`. The state of every case is
what replaying those entries in order gives; the desk keeps it in memory
(and in the search index, for filtering) and reads the log again whenever
its size or time changed. The opened files are never touched.
"""

from __future__ import annotations

import threading
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from portal.review.custody import Action, CustodyError, CustodyLog, Entry

MAX_TAG_CHARS = 40
MAX_NOTE_CHARS = 20_000


class Change(StrEnum):
    STATUS = "status"
    TAG = "tag"
    UNTAG = "untag"
    NOTE = "note"


class CaseError(Exception):
    """A change the desk refuses (an unknown status, an empty tag); nothing was logged."""


@dataclass(frozen=True)
class Note:
    time: str
    reviewer: str
    text: str


@dataclass
class Case:
    status: str | None = None
    tags: set[str] = field(default_factory=set)
    notes: list[Note] = field(default_factory=list)


@dataclass(frozen=True)
class Book:
    """Every case's state, and the log it was read from (verified entry by entry)."""

    cases: dict[str, Case]
    entries: list[Entry]
    head: str
    damage: str | None


def thread_key(thread: str) -> str:
    """The case key of a conversation; a submission's key is its id."""
    return f"thread:{thread}"


def _key_of(entry: Entry) -> str | None:
    details = entry.entry.details
    if isinstance(details.get("submission"), str):
        return str(details["submission"])
    if isinstance(details.get("thread"), str):
        return thread_key(str(details["thread"]))
    return None


def replay(entries: list[Entry]) -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for line in entries:
        if line.entry.action != Action.CASE:
            continue
        key = _key_of(line)
        change, value = line.entry.details.get("change"), line.entry.details.get("value")
        if key is None or not isinstance(value, str):
            continue
        case = cases.setdefault(key, Case())
        if change == Change.STATUS:
            case.status = value
        elif change == Change.TAG:
            case.tags.add(value)
        elif change == Change.UNTAG:
            case.tags.discard(value)
        elif change == Change.NOTE:
            case.notes.append(Note(line.entry.time, line.entry.reviewer, value))
    return cases


def clean_tag(text: str) -> str:
    """A tag as stored: NFC, spaces folded, no control characters.

    Raises:
        CaseError: empty, or longer than MAX_TAG_CHARS.
    """
    tag = " ".join(unicodedata.normalize("NFC", text).split())
    tag = "".join(ch for ch in tag if unicodedata.category(ch)[0] != "C")
    if not tag or len(tag) > MAX_TAG_CHARS:
        raise CaseError("tag")
    return tag


class CaseBook:
    """The case state of one custody log, read again when the log changes."""

    def __init__(self, log: CustodyLog, statuses: tuple[str, ...]) -> None:
        self.log = log
        self.statuses = statuses
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._book = Book({}, [], "", None)

    def read(self) -> Book:
        """The current state; the log is verified again if it changed since the last read."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._book = self._load()
                self._stamp = stamp
            return self._book

    def _file_stamp(self) -> tuple[int, int]:
        try:
            info = self.log.path.stat()
        except FileNotFoundError:
            return (-1, -1)
        return (info.st_size, info.st_mtime_ns)

    def _load(self) -> Book:
        entries: list[Entry] = []
        try:
            for line in self.log.entries():
                entries.append(line)
            self.log.verify()
        except CustodyError as exc:
            return Book(replay(entries), entries, entries[-1].hash if entries else "", str(exc))
        return Book(replay(entries), entries, entries[-1].hash if entries else "", None)

    def change(self, key: str, change: Change, value: str, reviewer: str) -> Entry:
        """Append one change to the custody log.

        Raises:
            CaseError: the value is not allowed (unknown status, empty tag or note).
            CustodyError: the log is damaged or busy; nothing was written.
        """
        if change == Change.STATUS and value not in self.statuses:
            raise CaseError("status")
        if change in (Change.TAG, Change.UNTAG):
            value = clean_tag(value)
        if change == Change.NOTE:
            value = value.strip()
            if not value or len(value) > MAX_NOTE_CHARS:
                raise CaseError("note")
        where = (
            {"thread": key.removeprefix("thread:")}
            if key.startswith("thread:")
            else {"submission": key}
        )
        with self._lock:
            entry = self.log.append(Action.CASE, reviewer, change=str(change), value=value, **where)
            self._stamp = None
        return entry

    def history(self, keys: set[str]) -> list[Entry]:
        """Every entry about these cases (submission ids or thread keys), oldest first."""
        book = self.read()
        found = []
        for line in book.entries:
            if keys.intersection(line.entry.submissions) or _key_of(line) in keys:
                found.append(line)
        return found


def custody_path(log: CustodyLog) -> Path:
    return log.path
