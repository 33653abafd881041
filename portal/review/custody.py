"""The chain-of-custody log: append-only JSON lines, each holding the hash of the one before.

Every line is one JSON object written in a canonical form (sorted keys, no
spaces, UTF-8). Its `prev` member is the SHA-256 of the previous line's bytes
(without the newline); the first line's `prev` is sixty-four zeros. Editing,
reordering or deleting any line therefore breaks the link into the line after
it, and `verify()` names the first broken line.

What a hash chain alone cannot show is that lines were cut off the end: a
shortened log is still a valid chain. Against that, the head (the hash of the
last line) is anchored in two places:

- the tool keeps the last head it wrote, with its line number, in a second
  file beside the log (`custody.jsonl.head`) and checks on every run that the
  log still holds that line with that hash: truncating or editing the tail
  then fails, and so does a missing or emptied log;
- `open` and `forward` print the new head, and the reviewer writes it down
  (or sends it to a colleague); `verify(expect_head=...)` proves later that
  the head recorded then is still in the chain. Someone with write access to
  the folder can rewrite the log and the head file together; only a head
  kept elsewhere catches that.

A run verifies the whole chain once, under an exclusive lock, and then
appends in constant time (`CustodyLog.session()`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from portal.core.fsio import DIR_MODE, FILE_MODE, READ_FLAGS, replace_file, write_all

CUSTODY_FORMAT = "testimony-review/custody/1"
ANCHOR_FORMAT = "testimony-review/custody-head/1"
GENESIS = "0" * 64
_HASH_RE = re.compile(r"[0-9a-f]{64}")


class Action(StrEnum):
    """What an entry records; the readers below know the members of OPEN and FORWARD."""

    OPEN = "open"
    FORWARD = "forward"
    REPLY = "reply"
    # Case work at the desk: a status, a tag or a note on a submission or a
    # conversation (portal/review/desk/cases.py reads these back).
    CASE = "case"


class CustodyError(Exception):
    """The custody log is damaged, or could not be read or written."""


class CustodyDamaged(CustodyError):
    """The custody log or its recorded head fails a check: it was edited, cut or replaced."""


# The members every entry has; the rest belong to its action.
_COMMON = ("format", "seq", "prev", "time", "reviewer", "action")


@dataclass(frozen=True)
class LoggedFile:
    """One decrypted attachment as an `open` entry records it."""

    path: str
    file: str
    size: int
    sha256: str
    ciphertext_sha256: str


@dataclass(frozen=True)
class Opening:
    """What an `open` entry vouches for: the manifest's and each file's hashes."""

    submission: str
    manifest_sha256: str | None
    manifest_ciphertext_sha256: str | None
    # (file, sha256) of each attachment, as logged; a malformed item is left out.
    files: tuple[tuple[object, object], ...]
    # Each attachment's logged members, for a partner's copy of the log.
    attachments: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Forwarding:
    """What a `forward` entry records: which submissions went out, what was left out."""

    submissions: tuple[str, ...]
    omitted_fields: tuple[Any, ...]
    consent: tuple[dict[str, Any], ...]

    def consent_for(self, wanted: set[str]) -> list[dict[str, Any]]:
        return [item for item in self.consent if item.get("submission") in wanted]


@dataclass(frozen=True)
class CustodyEntry:
    """One entry of the log: the members every entry has, and its action's own (`details`).

    `to_json()` is what is written (in canonical form); `from_json()` reads
    a line back, checking the common members. The action's members are
    read through `opening`, `forwarding` and `submissions`, which never
    raise: a log line is evidence even when a member is odd.
    """

    seq: int
    prev: str
    time: str
    reviewer: str
    action: str
    details: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        common = asdict(self)
        details = common.pop("details")
        return {**details, "format": CUSTODY_FORMAT, **common}

    def to_bytes(self) -> bytes:
        return canonical(self.to_json())

    @classmethod
    def from_json(cls, data: Any, where: str) -> CustodyEntry:
        """Check the common members of a parsed line.

        Raises:
            CustodyDamaged: not an object of this format with a sequence number.
        """
        if not isinstance(data, dict) or data.get("format") != CUSTODY_FORMAT:
            raise CustodyDamaged(f"{where} is not a {CUSTODY_FORMAT} entry")
        seq = data.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise CustodyDamaged(
                f"{where} has the wrong sequence number ({seq!r}): lines were deleted, added "
                "or reordered"
            )
        return cls(
            seq=seq,
            prev=str(data.get("prev")),
            time=str(data.get("time", "")),
            reviewer=str(data.get("reviewer", "")),
            action=str(data.get("action", "")),
            details={k: v for k, v in data.items() if k not in _COMMON},
        )

    @property
    def submissions(self) -> tuple[str, ...]:
        """The submissions this entry concerns."""
        ids = self.details.get("submissions") or [self.details.get("submission")]
        return tuple(i for i in ids if isinstance(i, str)) if isinstance(ids, list) else ()

    @property
    def opening(self) -> Opening | None:
        """The `open` entry's members, or None for another action."""
        submission = self.details.get("submission")
        if self.action != Action.OPEN or not isinstance(submission, str):
            return None
        manifest = self.details.get("manifest")
        manifest = manifest if isinstance(manifest, dict) else {}
        items = self.details.get("attachments")
        attachments = (
            tuple(i for i in items if isinstance(i, dict)) if isinstance(items, list) else ()
        )
        return Opening(
            submission=submission,
            manifest_sha256=manifest.get("sha256"),
            manifest_ciphertext_sha256=manifest.get("ciphertext_sha256"),
            files=tuple((i.get("file"), i.get("sha256")) for i in attachments),
            attachments=attachments,
        )

    @property
    def forwarding(self) -> Forwarding | None:
        """The `forward` entry's members, or None for another action."""
        if self.action != Action.FORWARD:
            return None
        submissions = self.details.get("submissions")
        consent = self.details.get("consent")
        return Forwarding(
            submissions=tuple(
                i
                for i in (submissions if isinstance(submissions, list) else [])
                if isinstance(i, str)
            ),
            omitted_fields=tuple(self.details.get("omitted_fields") or ()),
            consent=tuple(
                i for i in (consent if isinstance(consent, list) else []) if isinstance(i, dict)
            ),
        )


@dataclass(frozen=True)
class Entry:
    """One line of the log as read: where it is, its bytes and hash, and what it says."""

    line_number: int
    raw: bytes
    hash: str
    entry: CustodyEntry

    @property
    def data(self) -> dict[str, Any]:
        """The line as its JSON object."""
        return self.entry.to_json()


@dataclass(frozen=True)
class Verification:
    count: int
    head: str
    expected_head_line: int | None = None
    anchored_line: int | None = None


@dataclass(frozen=True)
class Anchor:
    """The last head this tool wrote: line `seq` of the log has hash `head`."""

    seq: int
    head: str


def canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def line_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class CustodyLog:
    """One custody log file on the reviewer's machine."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> Iterator[Entry]:
        """Every entry, checked link by link.

        Raises:
            CustodyError: naming the first line that is malformed, out of
                order or does not carry the hash of the line before it.
        """
        prev = GENESIS
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 (closed below; a generator)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CustodyError(f"cannot read the custody log {self.path}: {exc.strerror}") from exc
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):
                    raise CustodyDamaged(
                        f"{self.path}: line {number} is incomplete (no newline): the log was "
                        "cut off or edited"
                    )
                raw = line[:-1]
                try:
                    data = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise CustodyDamaged(f"{self.path}: line {number} is not JSON") from exc
                if not isinstance(data, dict) or canonical(data) != raw:
                    raise CustodyDamaged(
                        f"{self.path}: line {number} is not in canonical form: it was edited"
                    )
                entry = CustodyEntry.from_json(data, f"{self.path}: line {number}")
                if entry.seq != number:
                    raise CustodyDamaged(
                        f"{self.path}: line {number} has the wrong sequence number "
                        f"({entry.seq!r}): lines were deleted, added or reordered"
                    )
                if entry.prev != prev:
                    raise CustodyDamaged(
                        f"{self.path}: line {number} does not carry the hash of line "
                        f"{number - 1}: a line before it was edited, deleted or reordered"
                    )
                digest = line_hash(raw)
                yield Entry(number, raw, digest, entry)
                prev = digest

    def verify(self, expect_head: str | None = None) -> Verification:
        """Check the whole chain; with `expect_head`, also that that entry is still in it.

        Raises:
            CustodyError: the chain is broken, or `expect_head` is not in it
                (entries were cut off the end, or the log was replaced).
        """
        anchor = self.read_anchor()
        count, head, found, anchored = 0, GENESIS, None, None
        for entry in self.entries():
            count, head = entry.line_number, entry.hash
            if expect_head is not None and entry.hash == expect_head.strip().lower():
                found = entry.line_number
            if anchor is not None and entry.line_number == anchor.seq:
                anchored = entry.hash
        if expect_head is not None and found is None:
            raise CustodyDamaged(
                f"{self.path}: the head you recorded ({expect_head}) is not in the log: "
                "entries were removed from the end, or this is a different log"
            )
        if anchor is not None and anchored != anchor.head:
            what = (
                f"has only {count} entries"
                if anchored is None
                else f"holds another line {anchor.seq} than was written"
            )
            raise CustodyDamaged(
                f"{self.path} {what}: the last head this tool wrote (line {anchor.seq}, "
                f"{anchor.head}, kept in {self.anchor_path}) is not in it. The log was "
                "truncated, emptied, replaced or its end edited"
            )
        return Verification(
            count=count,
            head=head,
            expected_head_line=found,
            anchored_line=anchor.seq if anchor else None,
        )

    @property
    def anchor_path(self) -> Path:
        return self.path.with_name(self.path.name + ".head")

    def read_anchor(self) -> Anchor | None:
        """The head recorded beside the log, or None if none was ever written.

        Raises:
            CustodyError: the head file exists but is damaged.
        """
        try:
            fd = os.open(self.anchor_path, READ_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CustodyError(f"cannot read {self.anchor_path}: {exc.strerror}") from exc
        with open(fd, "rb") as handle:
            raw = handle.read(4096)
        try:
            data = json.loads(raw)
            anchor = Anchor(int(data["seq"]), str(data["head"]))
            valid = data.get("format") == ANCHOR_FORMAT and anchor.seq >= 1
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid or not _HASH_RE.fullmatch(anchor.head):
            raise CustodyDamaged(
                f"{self.anchor_path} (the recorded head of {self.path}) is damaged: it was edited"
            )
        return anchor

    def _write_anchor(self, seq: int, head: str) -> None:
        """Replace the head file in one step (temporary file, fsync, rename)."""
        data = canonical({"format": ANCHOR_FORMAT, "seq": seq, "head": head}) + b"\n"
        try:
            replace_file(self.anchor_path, data)
        except OSError as exc:
            raise CustodyError(f"cannot write {self.anchor_path}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """Lock the log, verify it once, and yield a Session that appends in constant time.

        The recorded head is brought up to date when the session ends, also
        after an error or an interrupt.

        Raises:
            CustodyError: the log is damaged, its recorded head is not in it,
                or another run holds it.
        """
        self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, FILE_MODE)
        except OSError as exc:
            raise CustodyError(f"cannot open the custody log {self.path}: {exc.strerror}") from exc
        try:
            try:
                # One writer at a time: two runs must not both link to the
                # same previous line.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise CustodyError(
                        f"another testimony-review command is using the custody log {self.path}; "
                        "wait for it to finish, then run this again"
                    ) from None
                raise CustodyError(f"cannot lock {self.path}: {exc.strerror}") from exc
            result = self.verify()
            session = Session(self, fd, result.count, result.head)
            try:
                yield session
            finally:
                if session.count and session.count != (result.anchored_line or 0):
                    self._write_anchor(session.count, session.head)
        finally:
            os.close(fd)

    def append(self, action: Action, reviewer: str, **details: Any) -> Entry:
        """Verify the chain, then durably append one entry and return it.

        Refusing to write after a broken link keeps the damage visible at
        the place it happened instead of burying it under new entries.
        """
        with self.session() as session:
            return session.append(action, reviewer, **details)

    def entries_for(self, submission_ids: set[str]) -> list[Entry]:
        """The entries that concern any of these submissions, in order."""
        return [e for e in self.entries() if submission_ids.intersection(e.entry.submissions)]


class Session:
    """Appends to a custody log that was verified once and stays locked meanwhile."""

    def __init__(self, log: CustodyLog, fd: int, count: int, head: str) -> None:
        self.log = log
        self._fd = fd
        self.count = count
        self.head = head
        self._broken = False

    def append(self, action: Action, reviewer: str, **details: Any) -> Entry:
        """Durably append one entry linked to the last one; constant time."""
        if self._broken:
            raise CustodyError(f"an earlier write to {self.log.path} failed; nothing more is added")
        entry = CustodyEntry(self.count + 1, self.head, _now(), reviewer, action, details)
        raw = entry.to_bytes()
        try:
            write_all(self._fd, raw + b"\n")
            os.fsync(self._fd)
        except OSError as exc:
            # A partly written line may be in the file: the next run reports it.
            self._broken = True
            raise CustodyError(
                f"cannot write the custody log {self.log.path}: {exc.strerror}"
            ) from exc
        line = Entry(entry.seq, raw, line_hash(raw), entry)
        self.count, self.head = line.line_number, line.hash
        return line
