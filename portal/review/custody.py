"""The chain-of-custody log: append-only JSON lines, each holding the hash of the one before.

Every line is one JSON object written in a canonical form (sorted keys, no
spaces, UTF-8). Its `prev` member is the SHA-256 of the previous line's bytes
(without the newline); the first line's `prev` is sixty-four zeros. Editing,
reordering or deleting any line therefore breaks the link into the line after
it, and `verify()` names the first broken line.

What a hash chain alone cannot show is that lines were cut off the end: a
shortened log is still a valid chain. Against that, `verify()` returns the
head (the hash of the last line) and the count; a reviewer writes both down
after each session (or sends them to a colleague), and a later
`verify(expect_head=...)` proves that the head recorded then is still in the
chain.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portal.store import write_all

CUSTODY_FORMAT = "testimony-review/custody/1"
GENESIS = "0" * 64
FILE_MODE = 0o600


class CustodyError(Exception):
    """The custody log is damaged, or could not be read or written."""


@dataclass(frozen=True)
class Entry:
    line_number: int
    raw: bytes
    hash: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Verification:
    count: int
    head: str
    expected_head_line: int | None = None


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
                    raise CustodyError(
                        f"{self.path}: line {number} is incomplete (no newline): the log was "
                        "cut off or edited"
                    )
                raw = line[:-1]
                try:
                    data = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise CustodyError(f"{self.path}: line {number} is not JSON") from exc
                if not isinstance(data, dict) or canonical(data) != raw:
                    raise CustodyError(
                        f"{self.path}: line {number} is not in canonical form: it was edited"
                    )
                if data.get("format") != CUSTODY_FORMAT or data.get("seq") != number:
                    raise CustodyError(
                        f"{self.path}: line {number} has the wrong sequence number "
                        f"({data.get('seq')!r}): lines were deleted, added or reordered"
                    )
                if data.get("prev") != prev:
                    raise CustodyError(
                        f"{self.path}: line {number} does not carry the hash of line "
                        f"{number - 1}: a line before it was edited, deleted or reordered"
                    )
                digest = line_hash(raw)
                yield Entry(number, raw, digest, data)
                prev = digest

    def verify(self, expect_head: str | None = None) -> Verification:
        """Check the whole chain; with `expect_head`, also that that entry is still in it.

        Raises:
            CustodyError: the chain is broken, or `expect_head` is not in it
                (entries were cut off the end, or the log was replaced).
        """
        count, head, found = 0, GENESIS, None
        for entry in self.entries():
            count, head = entry.line_number, entry.hash
            if expect_head is not None and entry.hash == expect_head.strip().lower():
                found = entry.line_number
        if expect_head is not None and found is None:
            raise CustodyError(
                f"{self.path}: the head you recorded ({expect_head}) is not in the log: "
                "entries were removed from the end, or this is a different log"
            )
        return Verification(count=count, head=head, expected_head_line=found)

    def append(self, action: str, reviewer: str, **details: Any) -> Entry:
        """Verify the chain, then durably append one entry and return it.

        Refusing to write after a broken link keeps the damage visible at
        the place it happened instead of burying it under new entries.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, FILE_MODE)
        except OSError as exc:
            raise CustodyError(f"cannot open the custody log {self.path}: {exc.strerror}") from exc
        try:
            # One writer at a time: two `open` runs must not both link to the
            # same previous line.
            fcntl.flock(fd, fcntl.LOCK_EX)
            last: Entry | None = None
            for last in self.entries():  # noqa: B007 (we want the last one)
                pass
            data = {
                **details,
                "format": CUSTODY_FORMAT,
                "seq": (last.line_number + 1) if last else 1,
                "prev": last.hash if last else GENESIS,
                "time": _now(),
                "reviewer": reviewer,
                "action": action,
            }
            raw = canonical(data)
            write_all(fd, raw + b"\n")
            os.fsync(fd)
        except OSError as exc:
            raise CustodyError(f"cannot write the custody log {self.path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        return Entry(data["seq"], raw, line_hash(raw), data)

    def entries_for(self, submission_ids: set[str]) -> list[Entry]:
        """The entries that concern any of these submissions, in order."""
        found = []
        for entry in self.entries():
            ids = entry.data.get("submissions") or [entry.data.get("submission")]
            if submission_ids.intersection(i for i in ids if isinstance(i, str)):
                found.append(entry)
        return found
