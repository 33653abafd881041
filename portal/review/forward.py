"""Forwarding opened submissions to a legal partner as one age-encrypted tar file.

The partner needs nothing of ours: `age -d -i partner-key.txt -o bundle.tar
FILE` and `tar -xf bundle.tar` give them, per submission, `<id>/testimony.json`
(the manifest), the attachments byte for byte as the witness sent them, and
at the top `SHA256SUMS` (for `sha256sum -c`), `custody.jsonl` (what our
custody log says about these submissions, cut to what the partner needs),
`README.txt` and `consent.json` (each witness's consent as checked, and any
override with its reason; see portal/review/consent.py).

A redacted bundle (`--omit-field`) carries nothing computed from what was
left out: no hash of the full manifest, of its ciphertext, or of a custody
line that holds one. Otherwise a partner could confirm guesses of the
omitted value by hashing each guess. A field name that a submission does not
have is refused, so a typo cannot send the full testimony under a bundle
that claims it was redacted.

Every file is checked against the SHA-256 in its manifest before the bundle
is made and again while it is copied in, so a file changed on the reviewer's
disk is never sent. The bundle is written under a temporary name and appears
under its final name only when complete; an existing file is never replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from portal.core.age import PublicKey, Writer
from portal.core.fsio import FILE_MODE, READ_FLAGS, fsync_dir, new_file, sha256_file, write_all
from portal.core.layout import is_valid_id
from portal.core.manifest import WITNESS_CHANNEL_MEMBERS
from portal.review.custody import Entry
from portal.review.outcomes import Changed
from portal.review.recheck import read_opened_manifest
from portal.review.record import MANIFEST_JSON, RECORD_NAME, RecordError, require_record

BUNDLE_FORMAT = "testimony-review/forward/1"
BUNDLE_CUSTODY_FORMAT = "testimony-review/bundle-custody/1"
_READ_SIZE = 1 << 20


class ForwardError(Exception):
    """The bundle cannot be made; nothing was written. The message says why."""


@dataclass
class _Member:
    name: str
    data: bytes | None = None
    path: Path | None = None
    sha256: str = ""
    size: int = 0


@dataclass
class ForwardResult:
    path: Path
    sha256: str
    size: int
    files: list[dict[str, str]] = field(default_factory=list)

    def file_entry(self) -> dict[str, object]:
        """The bundle as its custody entry names it."""
        return {"file": str(self.path), "sha256": self.sha256, "size": self.size}


class _HashingWriter:
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        write_all(self._raw, data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


class _TarSink:
    """The write-only file object tarfile streams into: it feeds the age Writer."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def write(self, data: bytes) -> int:
        return self._writer.write(data)


class _CheckedReader:
    """Reads a file for tarfile while hashing it, to compare once it is copied in."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.sha256.update(data)
        return data


def collect(
    from_dir: Path, submission_ids: Sequence[str], omit_fields: Sequence[str]
) -> tuple[list[_Member], list[dict[str, str]]]:
    """Check each selected submission against its manifest and list what goes in the bundle.

    Raises:
        ForwardError: a submission is not opened here, or a file differs from
            its manifest.
    """
    members: list[_Member] = []
    listing: list[dict[str, str]] = []
    for submission_id in sorted(set(submission_ids)):
        folder = from_dir / submission_id
        if not is_valid_id(submission_id):
            raise ForwardError(f"{submission_id!r} is not a submission id")
        try:
            record = require_record(folder)
            manifest_bytes, manifest = read_opened_manifest(folder, record)
        except RecordError as exc:
            raise ForwardError(f"{exc} (check the id and --from); nothing was sent") from None
        except Changed as exc:
            raise ForwardError(f"{exc}; nothing was sent") from None
        by_path = {entry.path: entry for entry in manifest.attachments}
        if missing := sorted(set(omit_fields) - set(manifest.fields)):
            present = ", ".join(repr(name) for name in sorted(manifest.fields)) or "none"
            raise ForwardError(
                f"submission {submission_id} has no field {', '.join(map(repr, missing))} to "
                f"omit; its fields are: {present}. Nothing was sent; check the spelling"
            )
        if omit_fields or any(key in manifest.document for key in WITNESS_CHANNEL_MEMBERS):
            manifest_bytes = _redacted_manifest(manifest.document, omit_fields)
        members.append(_Member(f"{submission_id}/{MANIFEST_JSON}", data=manifest_bytes))
        for entry in record.attachments:
            expected = by_path.get(entry.path)
            path = folder / entry.file
            if expected is None or expected.sha256 != entry.sha256:
                raise ForwardError(
                    f"{folder / RECORD_NAME} does not match {folder / MANIFEST_JSON}"
                )
            if path.is_symlink() or not path.is_file():
                raise ForwardError(f"{path} is missing; open the submission again")
            if sha256_file(path) != expected.sha256:
                raise ForwardError(
                    f"{path} no longer matches the SHA-256 in its manifest: it was changed "
                    "after opening. Nothing was sent; open the submission again from the "
                    "ciphertext"
                )
            members.append(
                _Member(
                    f"{submission_id}/{entry.file}",
                    path=path,
                    sha256=expected.sha256,
                    size=expected.size,
                )
            )
            listing.append(
                {"submission": submission_id, "file": entry.file, "sha256": expected.sha256}
            )
    return members, listing


def _redacted_manifest(document: dict[str, Any], omit_fields: Sequence[str]) -> bytes:
    """The manifest without the omitted fields and the witness's channel, serialised afresh."""
    omitted = set(omit_fields)
    redacted = {k: v for k, v in document.items() if k not in WITNESS_CHANNEL_MEMBERS}
    redacted["fields"] = {k: v for k, v in document["fields"].items() if k not in omitted}
    if omitted:
        redacted["omitted_fields"] = sorted(omitted)
    return json.dumps(redacted, ensure_ascii=False, indent=1, sort_keys=True).encode()


def partner_custody(
    entries: Sequence[Entry], submission_ids: Sequence[str], *, redacted: bool
) -> bytes:
    """Our custody entries for these submissions, cut to what a partner needs.

    Left out: local paths, other partners' keys and bundles, submissions not
    in this bundle. In a redacted bundle also every hash that was computed
    from the full manifest (its plaintext and ciphertext hashes, and the
    hash of our own log line, which holds them).
    """
    wanted = set(submission_ids)
    lines = []
    for line_read in entries:
        entry = line_read.entry
        line: dict[str, Any] = {
            "format": BUNDLE_CUSTODY_FORMAT,
            "seq": entry.seq,
            "time": entry.time,
            "reviewer": entry.reviewer,
            "action": entry.action,
        }
        if not redacted:
            line["log_line_sha256"] = line_read.hash
        if (opening := entry.opening) is not None:
            line["submission"] = opening.submission
            if not redacted:
                line["manifest"] = {
                    "sha256": opening.manifest_sha256,
                    "ciphertext_sha256": opening.manifest_ciphertext_sha256,
                }
            line["attachments"] = [
                {key: item.get(key) for key in ("file", "size", "sha256", "ciphertext_sha256")}
                for item in opening.attachments
            ]
        elif (forwarding := entry.forwarding) is not None:
            line["submissions"] = sorted(i for i in forwarding.submissions if i in wanted)
            line["omitted_fields"] = list(forwarding.omitted_fields)
            line["consent"] = forwarding.consent_for(wanted)
        else:
            continue
        lines.append(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
    return "".join(lines).encode()


def _readme(
    submission_ids: Sequence[str], omit_fields: Sequence[str], consent_note: str = ""
) -> bytes:
    omitted = (
        f"\nAt the sender's request these fields were left out of each testimony.json:\n"
        f'  {", ".join(sorted(set(omit_fields)))}\n(its "omitted_fields" member lists them).\n'
        if omit_fields
        else ""
    )
    return f"""Testimony bundle ({BUNDLE_FORMAT})

Submissions in this bundle:
{chr(10).join("  " + s for s in sorted(set(submission_ids)))}

Each folder holds testimony.json (the submission's manifest: the testimony,
the date received, and each attachment's original name, type, size and
SHA-256) and the attachments exactly as the witness sent them.
{omitted}
{consent_note}
To check that every file is intact, run in this folder:

    sha256sum -c SHA256SUMS

custody.jsonl holds what the sender's chain-of-custody log records about
these submissions (one JSON object per line): when each was decrypted and
by whom, the SHA-256 of each file's ciphertext and plaintext, and earlier
forwards. "seq" is the line's number in the sender's full log, and
"log_line_sha256" (absent when fields were left out) the SHA-256 of that
line, so the sender's log can prove these lines later.

Attachments are untrusted: open them in a sandbox or on a machine without
network access, never by double-clicking them on your everyday computer.
""".encode()


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = FILE_MODE
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_bundle(
    out_path: Path,
    members: list[_Member],
    recipient: PublicKey,
    *,
    custody_lines: Sequence[Entry],
    submission_ids: Sequence[str],
    omit_fields: Sequence[str],
    mtime: int,
    consent_note: str = "",
    consent_records: Sequence[dict[str, Any]] = (),
) -> ForwardResult:
    """Write the encrypted tar bundle to `out_path`, which must not exist yet.

    Raises:
        ForwardError: `out_path` exists, cannot be written, or a file changed
            while it was being copied in (the partial bundle is removed).
    """
    if out_path.exists() or out_path.is_symlink():
        raise ForwardError(f"{out_path} already exists; refusing to overwrite it")
    custody_bytes = partner_custody(custody_lines, submission_ids, redacted=bool(omit_fields))
    top = [
        _Member("README.txt", data=_readme(submission_ids, omit_fields, consent_note)),
        _Member("custody.jsonl", data=custody_bytes),
    ]
    if consent_records:
        # Each witness's consent and every override with its reason (issue 12).
        consent_json = json.dumps(list(consent_records), ensure_ascii=False, indent=1) + "\n"
        top.append(_Member("consent.json", data=consent_json.encode()))
    for member in members + top:
        if member.data is not None:
            member.sha256 = hashlib.sha256(member.data).hexdigest()
            member.size = len(member.data)
    sums = "".join(f"{m.sha256}  {m.name}\n" for m in sorted(members + top[1:], key=_key))
    sums_member = _Member("SHA256SUMS", data=sums.encode(), size=len(sums.encode()))
    everything = sorted([*top, sums_member, *members], key=_key)
    temp = out_path.with_name(f".{out_path.name}.{secrets.token_hex(6)}.partial")
    try:
        # Flushed, fsynced and closed when the block ends; removed if it fails.
        with new_file(temp, sync_dir=False) as raw:
            hashed = _HashingWriter(raw)
            writer = Writer(cast(BinaryIO, hashed), [recipient])
            with tarfile.open(
                fileobj=_TarSink(writer),
                mode="w|",
                format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
            ) as tar:
                for member in everything:
                    _add(tar, member, mtime)
            writer.close()
    except OSError as exc:
        raise ForwardError(f"cannot write {out_path}: {exc.strerror or exc}") from exc
    try:
        if out_path.exists() or out_path.is_symlink():
            raise ForwardError(f"{out_path} appeared while the bundle was written; not replaced")
        os.rename(temp, out_path)
        fsync_dir(out_path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise ForwardError(f"cannot write {out_path}: {exc.strerror or exc}") from exc
        raise
    return ForwardResult(out_path, hashed.sha256.hexdigest(), hashed.size)


def _key(member: _Member) -> tuple[int, str]:
    # README first, then the checksums and custody, then submissions by name.
    order = {"README.txt": 0, "SHA256SUMS": 1, "custody.jsonl": 2, "consent.json": 3}
    return (order.get(member.name, 4), member.name)


def _add(tar: tarfile.TarFile, member: _Member, mtime: int) -> None:
    info = _tarinfo(member.name, member.size, mtime)
    if member.data is not None:
        tar.addfile(info, io.BytesIO(member.data))
        return
    assert member.path is not None
    fd = os.open(member.path, READ_FLAGS)
    with open(fd, "rb") as handle:
        if os.fstat(handle.fileno()).st_size != member.size:
            raise ForwardError(f"{member.path} changed size after it was checked; not sent")
        reader = _CheckedReader(handle)
        tar.addfile(info, reader)
    if reader.sha256.hexdigest() != member.sha256:
        raise ForwardError(f"{member.path} changed while it was being copied; not sent")


def extra_member(name: str, path: Path, sha256: str, size: int) -> _Member:
    """A file made for the bundle (a cleaned copy), checked while copied in like the rest."""
    return _Member(name, path=path, sha256=sha256, size=size)
