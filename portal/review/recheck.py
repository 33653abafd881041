"""Checking an opened submission again: every file hashed against what was recorded.

Sizes alone are not evidence: a second export with other ciphertext of the
same sizes, a flipped bit, or an edited opened file must all show. `open`
runs these checks before it skips a submission it opened before; `verify`
and `reply` run them too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from portal.core.fsio import CHUNK, sha256_file
from portal.core.manifest import Manifest, ManifestError, parse_manifest
from portal.review.discovery import listed_files
from portal.review.outcomes import Changed
from portal.review.record import MANIFEST_JSON, RECORD_NAME, OpenedRecord


def sha256_text(text: str) -> str:
    """The SHA-256 of text as UTF-8, encoded a slice at a time (no second copy of 60 MB)."""
    digest = hashlib.sha256()
    for start in range(0, len(text), CHUNK):
        digest.update(text[start : start + CHUNK].encode("utf-8"))
    return digest.hexdigest()


def changed_since(folder: Path, what: str) -> Changed:
    return Changed(
        f"{folder}: {what} since it was opened. Do not trust this copy: keep it as evidence, "
        "move the folder aside and open the submission again from the ciphertext"
    )


def read_opened_manifest(folder: Path, record: OpenedRecord) -> tuple[bytes, Manifest]:
    """An opened submission's `testimony.json`, as bytes and parsed, if it is still as opened.

    Raises:
        Changed: it cannot be read or parsed, or its SHA-256 is not the one recorded.
    """
    path = folder / MANIFEST_JSON
    try:
        data = path.read_bytes()
        manifest = parse_manifest(data)
    except (OSError, ManifestError) as exc:
        raise Changed(f"{path} cannot be read: {exc}") from None
    if hashlib.sha256(data).hexdigest() != record.manifest.sha256:
        raise Changed(f"{path} was changed after it was opened")
    return data, manifest


def check_opened_files(folder: Path, record: OpenedRecord) -> Manifest:
    """Hash every file of an opened submission against its record and manifest.

    Raises:
        Changed: a file is missing, added by a link, or differs from the
            SHA-256 recorded when it was opened.
    """
    manifest_path = folder / MANIFEST_JSON
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise changed_since(folder, f"{MANIFEST_JSON} is missing")
    manifest_bytes = manifest_path.read_bytes()
    if hashlib.sha256(manifest_bytes).hexdigest() != record.manifest.sha256:
        raise changed_since(folder, f"{MANIFEST_JSON} was edited")
    try:
        manifest = parse_manifest(manifest_bytes)
    except ManifestError as exc:
        raise changed_since(folder, f"{MANIFEST_JSON} is damaged ({exc})") from None
    del manifest_bytes
    by_path = {entry.path: entry for entry in manifest.attachments}
    if len(record.attachments) != len(by_path):
        raise changed_since(folder, f"{RECORD_NAME} no longer lists the manifest's attachments")
    files: list[tuple[str, str, int | None]] = []
    for entry in record.attachments:
        expected = by_path.get(entry.path)
        if expected is None or expected.sha256 != entry.sha256:
            raise changed_since(folder, f"{RECORD_NAME} does not match {MANIFEST_JSON}")
        files.append((entry.file, expected.sha256, expected.size))
    fields = manifest.fields
    for long_field in record.long_fields:
        if long_field.field not in fields:
            raise changed_since(folder, f"{RECORD_NAME} is damaged")
        files.append((long_field.file, sha256_text(fields[long_field.field]), None))
    for name, sha256, size in files:
        path = folder / name
        if path.is_symlink() or not path.is_file():
            raise changed_since(folder, f"{name} is missing or changed")
        if (size is not None and path.stat().st_size != size) or sha256_file(path) != sha256:
            raise changed_since(folder, f"{name} is missing or changed (its SHA-256 differs)")
    return manifest


def check_ciphertext(source_dir: Path, record: OpenedRecord) -> None:
    """Hash a submission's ciphertext against what was recorded when it was opened.

    Raises:
        Changed: a file was added, removed or altered.
    """
    expected = record.ciphertext_hashes()
    actual = listed_files(source_dir)
    if set(actual) != set(expected):
        raise Changed(
            f"{source_dir} holds other files than the ciphertext it was opened from "
            f"({', '.join(sorted(set(actual) ^ set(expected)))}): compare this copy with "
            "the server's or another export before trusting either"
        )
    for rel, path in sorted(actual.items()):
        if sha256_file(path) != expected[rel]:
            raise Changed(
                f"{source_dir / rel} differs from the ciphertext this submission was opened "
                "from (its SHA-256 changed): a different export, or altered; compare the "
                "copies before trusting either"
            )
