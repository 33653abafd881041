"""What `open` writes into an opened folder beside the plaintext, and reads back for the index.

Once a submission is decrypted and checked, its folder gets the fields too
long for the page (each in a text file of its own), the readable page
`testimony.html`, and last the record `opened.json` (portal.review.record),
which makes re-runs skip what is done. The index is built from those
records, not from the manifests, so a run over thousands of submissions
reads no testimony again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from portal.core.fsio import CHUNK, create_new, fsync_dir, write_all
from portal.core.layout import is_valid_id
from portal.core.manifest import Manifest, ManifestError, parse_manifest
from portal.review import inert, report
from portal.review.opening.decrypt import Decrypted
from portal.review.record import (
    MANIFEST_JSON,
    RECORD_NAME,
    LongField,
    OpenedRecord,
    RecordError,
    is_plain_name,
    read_record,
)
from portal.review.safenames import NameAllocator

# The tool's own files in an opened folder: never the name of an attachment.
RESERVED_NAMES = (MANIFEST_JSON, RECORD_NAME, report.PAGE_NAME)


def folder_names(work: Path) -> NameAllocator:
    """The allocator of file names in a submission's folder, the tool's own names kept out."""
    return NameAllocator(work, reserved=RESERVED_NAMES)


def write_record(
    work: Path, decrypted: Decrypted, names: NameAllocator, opened: str
) -> OpenedRecord:
    """Complete the work folder of a decrypted submission: long fields, page, record, fsync."""
    manifest = decrypted.manifest
    record = OpenedRecord(
        id=manifest.id,
        opened=opened,
        received=manifest.received,
        preview=report.preview(manifest.testimony),
        language=manifest.language,
        thread=manifest.thread,
        manifest=decrypted.manifest_file,
        attachments=decrypted.attachments,
        long_fields=_write_long_fields(manifest, names, work),
        ignored_empty_parts=decrypted.ignored_empty_parts,
        ciphertext_sizes=decrypted.ciphertext_sizes,
    )
    page = report.render_submission_page(record, manifest.document, text_previews(work, record))
    report.write_atomically(work / report.PAGE_NAME, page)
    create_new(work / RECORD_NAME, record.to_bytes(), sync_dir=False)
    fsync_dir(work)
    return record


def _write_long_fields(
    manifest: Manifest, allocator: NameAllocator, work: Path
) -> tuple[LongField, ...]:
    """Write each field the page cannot show in full to a text file of its own.

    The text is encoded and written a slice at a time, so a 60 MB testimony
    costs no second copy in memory.
    """
    written = []
    shown = report.shown_chars(manifest.fields)
    for field_name, value in manifest.fields.items():
        if shown[field_name] >= len(value):
            continue
        name = allocator.create(f"{field_name or 'field'}.txt")
        digest, size = hashlib.sha256(), 0
        fd = os.open(work / name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for start in range(0, len(value), CHUNK):
                data = value[start : start + CHUNK].encode("utf-8")
                digest.update(data)
                size += len(data)
                write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        written.append(LongField(field_name, name, size, digest.hexdigest()))
    return tuple(written)


def text_previews(folder: Path, record: OpenedRecord) -> dict[str, str]:
    """The start of each plain-text attachment, to show (escaped) on the submission page."""
    previews = {}
    for entry in record.attachments:
        if entry.view == inert.TEXT and is_plain_name(entry.file):
            head = inert.read_head(folder / entry.file)
            previews[entry.file] = head.decode("utf-8", errors="replace")
    return previews


def load_opened(out_dir: Path) -> list[tuple[OpenedRecord, dict[str, Any]]]:
    """Every opened submission in `out_dir`: its record and what the index shows of it.

    The index needs the date, the language and the start of the testimony,
    which the record keeps; reading every manifest again would cost a run
    over thousands of submissions (or one of 60 MB) far more. A folder whose
    record is damaged is left out (`verify` names it).
    """
    found = []
    for entry in sorted(os.scandir(out_dir), key=lambda e: e.name):
        if not is_valid_id(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        folder = Path(entry.path)
        try:
            record = read_record(folder)
        except RecordError:
            continue
        if record is None:
            continue
        preview = record.preview
        if preview is None:
            # Opened by an older version, which kept no preview.
            try:
                manifest = parse_manifest((folder / MANIFEST_JSON).read_bytes())
            except (OSError, ManifestError):
                continue
            preview = report.preview(manifest.testimony)
        shown = {
            "thread": record.thread,
            "received": record.received,
            "language": record.language,
            "fields": {"testimony": preview},
        }
        found.append((record, shown))
    return found
