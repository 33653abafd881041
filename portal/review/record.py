"""The opened-folder record (`DIR/<id>/opened.json`, format `testimony-review/opened/1`).

`open` writes one record into each submission folder it completes: what it
decrypted, where it put each file and the SHA-256 of every plaintext and
ciphertext file. Re-runs, `verify`, `forward`, `table`, `reply` and the index
page read it back through `OpenedRecord.from_json`, which checks every member
before any of it names a file: a record is plain JSON in a folder the
reviewer (or someone else) can edit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from portal.core.layout import MANIFEST_NAME, is_valid_id

OPENED_FORMAT = "testimony-review/opened/1"
MANIFEST_JSON = "testimony.json"
RECORD_NAME = "opened.json"


class RecordError(Exception):
    """An `opened.json` is not a record this tool writes (damaged or edited)."""


class AttachmentStatus(StrEnum):
    """What `open` recorded of an attachment's integrity."""

    VERIFIED = "verified"
    # A record without a status, or with one this tool never writes (an
    # edited record): its files are never shown as verified.
    UNKNOWN = "unknown"

    @classmethod
    def read(cls, text: str) -> AttachmentStatus:
        return cls.VERIFIED if text == cls.VERIFIED.value else cls.UNKNOWN


def is_plain_name(name: object) -> bool:
    """True for a single, ordinary path component (what the allocator hands out)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\x00" not in name
        and not name.startswith(".")
    )


@dataclass(frozen=True)
class OpenedRecord:
    id: str
    opened: str
    received: str
    # The start of the testimony, for the index; None in records written
    # before the index was built from records.
    preview: str | None
    language: str
    thread: str
    manifest: RecordedManifest
    attachments: tuple[OpenedAttachment, ...]
    long_fields: tuple[LongField, ...] = ()
    ignored_empty_parts: tuple[IgnoredPart, ...] = ()
    ciphertext_sizes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        # The members in the order of the fields; tuples are written as JSON lists.
        return {"format": OPENED_FORMAT, **asdict(self)}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=1).encode()

    def ciphertext_hashes(self) -> dict[str, str]:
        """The SHA-256 of each ciphertext file as recorded when opened, by relative path."""
        expected = {MANIFEST_NAME: self.manifest.ciphertext_sha256}
        for attachment in self.attachments:
            expected[attachment.path] = attachment.ciphertext_sha256
        for part in self.ignored_empty_parts:
            expected[part.path] = part.ciphertext_sha256
        return expected

    @classmethod
    def from_json(cls, data: Any) -> OpenedRecord:
        """Check a decoded record member by member.

        Raises:
            RecordError: a member is missing, of the wrong type, or names a
                file outside its folder.
        """
        reader = _Reader(data, RECORD_NAME)
        if reader.text("format") != OPENED_FORMAT:
            raise RecordError(f"{RECORD_NAME} is not of the format {OPENED_FORMAT}")
        manifest = _Reader(reader.get("manifest"), f"{RECORD_NAME} 'manifest'")
        return cls(
            id=reader.text("id"),
            opened=reader.text("opened", default=""),
            received=reader.text("received", default=""),
            preview=reader.optional_text("preview"),
            language=reader.text("language", default=""),
            thread=reader.text("thread", default=""),
            manifest=RecordedManifest(
                file=manifest.plain_name("file", default=MANIFEST_JSON),
                sha256=manifest.text("sha256"),
                ciphertext_sha256=manifest.text("ciphertext_sha256"),
            ),
            attachments=tuple(
                OpenedAttachment(
                    path=item.text("path"),
                    name=item.text("name", default=""),
                    type=item.text("type", default=""),
                    file=item.plain_name("file"),
                    size=item.size("size"),
                    sha256=item.text("sha256"),
                    ciphertext_sha256=item.text("ciphertext_sha256"),
                    view=item.optional_text("view"),
                    view_reason=item.text("view_reason", default=""),
                    status=AttachmentStatus.read(item.text("status", default="")),
                )
                for item in reader.items("attachments")
            ),
            long_fields=tuple(
                LongField(
                    field=item.text("field"),
                    file=item.plain_name("file"),
                    size=item.size("size"),
                    sha256=item.text("sha256"),
                )
                for item in reader.items("long_fields", default=[])
            ),
            ignored_empty_parts=tuple(
                IgnoredPart(
                    path=item.text("path"), ciphertext_sha256=item.text("ciphertext_sha256")
                )
                for item in reader.items("ignored_empty_parts", default=[])
            ),
            ciphertext_sizes=reader.sizes("ciphertext_sizes"),
        )


@dataclass(frozen=True)
class OpenedAttachment:
    """One decrypted attachment: its manifest entry, the file it was written to, its hashes."""

    path: str
    name: str
    type: str
    file: str
    size: int
    sha256: str
    ciphertext_sha256: str
    # How the pages show it (see inert.Decision): a kind only when inert.
    view: str | None
    view_reason: str
    status: AttachmentStatus = AttachmentStatus.VERIFIED

    @property
    def verified(self) -> bool:
        return self.status == AttachmentStatus.VERIFIED


@dataclass(frozen=True)
class LongField:
    """A field too long for the page, written in full to a text file of its own."""

    field: str
    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RecordedManifest:
    """The decrypted manifest as written (`file`), and the hashes of it and its ciphertext."""

    file: str
    sha256: str
    ciphertext_sha256: str


@dataclass(frozen=True)
class IgnoredPart:
    """An empty, unnamed file part the server stored but left out of the manifest."""

    path: str
    ciphertext_sha256: str


_MISSING: Any = object()


class _Reader:
    """Typed access to one JSON object of a record, naming the member in every error."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise RecordError(f"{where} is not a JSON object")
        self.data: Mapping[str, Any] = data
        self.where = where

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise RecordError(f"{self.where} has no member {key!r}")
            return default
        return self.data[key]

    def text(self, key: str, default: Any = _MISSING) -> str:
        value = self.get(key, default)
        if not isinstance(value, str):
            raise RecordError(f"{self.where} member {key!r} is not a string")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self.get(key, None)
        if value is not None and not isinstance(value, str):
            raise RecordError(f"{self.where} member {key!r} is not a string")
        return value

    def size(self, key: str) -> int:
        value = self.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise RecordError(f"{self.where} member {key!r} is not a size")
        return value

    def plain_name(self, key: str, default: Any = _MISSING) -> str:
        value = self.text(key, default)
        if not is_plain_name(value):
            raise RecordError(f"{self.where} member {key!r} is not a plain file name")
        return value

    def items(self, key: str, default: Any = _MISSING) -> list[_Reader]:
        value = self.get(key, default)
        if not isinstance(value, list):
            raise RecordError(f"{self.where} member {key!r} is not a list")
        return [_Reader(item, f"{self.where} {key}[{n}]") for n, item in enumerate(value)]

    def sizes(self, key: str) -> dict[str, int]:
        value = self.get(key, {})
        if not isinstance(value, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value.values()
        ):
            raise RecordError(f"{self.where} member {key!r} is not a map of sizes")
        return dict(value)


def read_record(folder: Path) -> OpenedRecord | None:
    """The record of an opened submission folder; None if the folder has none of this tool's.

    Raises:
        RecordError: the folder has a record of this format, but it is damaged.
    """
    path = folder / RECORD_NAME
    if folder.is_symlink() or path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != OPENED_FORMAT:
        return None
    return OpenedRecord.from_json(data)


def require_record(folder: Path) -> OpenedRecord:
    """The record of a folder `open` wrote.

    Raises:
        RecordError: the folder has no record of this tool, or a damaged one.
    """
    try:
        record = read_record(folder)
    except RecordError as exc:
        raise RecordError(f"{folder / RECORD_NAME} is damaged ({exc})") from None
    if record is None:
        raise RecordError(f"{folder} is not a submission opened by `testimony-review open`")
    return record


def opened_ids(out_dir: Path) -> list[str]:
    """Ids of the submissions `open` has written into out_dir."""
    if not out_dir.is_dir():
        return []
    return sorted(
        entry.name
        for entry in os.scandir(out_dir)
        if is_valid_id(entry.name) and (Path(entry.path) / RECORD_NAME).is_file()
    )


# ---------------------------------------------------------------- sent replies

# Copies of the replies sent with `testimony-review reply`, one JSON file each
# in `DIR/replies/`, so the index shows each conversation with its replies.
SENT_REPLIES_DIR = "replies"
SENT_REPLY_FORMAT = "testimony-review/sent-reply/1"


@dataclass(frozen=True)
class ReplyCopy:
    """The reviewer's copy of one reply: what was sent to which conversation, and when."""

    submission: str
    thread: str
    sent: str
    message: str
    ciphertext_sha256: str

    def to_bytes(self) -> bytes:
        document = {"format": SENT_REPLY_FORMAT, **asdict(self)}
        return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")


def load_sent_replies(out_dir: Path) -> dict[str, list[ReplyCopy]]:
    """The replies sent from this folder, by thread, oldest first; unreadable copies skipped."""
    folder = out_dir / SENT_REPLIES_DIR
    found: dict[str, list[ReplyCopy]] = {}
    if folder.is_symlink() or not folder.is_dir():
        return found
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.name.endswith(".json") or not entry.is_file(follow_symlinks=False):
            continue
        try:
            copy = _Reader(json.loads(Path(entry.path).read_bytes()), entry.name)
            if copy.text("format") != SENT_REPLY_FORMAT:
                continue
            reply = ReplyCopy(
                submission=copy.text("submission"),
                thread=copy.text("thread"),
                sent=copy.text("sent"),
                message=copy.text("message"),
                ciphertext_sha256=copy.text("ciphertext_sha256", default=""),
            )
        except (OSError, ValueError, RecordError):
            continue
        found.setdefault(reply.thread, []).append(reply)
    for replies in found.values():
        replies.sort(key=lambda r: r.sent)
    return found
