"""Finding submissions: where under SRC the `<id>/` folders are, and what each one holds.

SRC may be a server data directory or an export (both hold `submissions/`),
a copy of a `submissions/` folder, or one submission folder itself. Nothing
here follows a symbolic link: a link where a submission or its files should
be is reported, never read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from portal.core.fsio import READ_FLAGS
from portal.core.layout import MANIFEST_NAME, LayoutError, is_valid_id, submission_files
from portal.review.outcomes import Tampered

PARTIAL_PREFIX = ".partial-"


class SourceError(Exception):
    """SRC is not a folder of submissions; the message says what was expected."""


def open_ciphertext(path: Path) -> BinaryIO:
    """Open a file for reading without following a symbolic link."""
    fd = os.open(path, READ_FLAGS)
    return open(fd, "rb", buffering=0)


def find_submissions(source: Path) -> tuple[Path, list[str]]:
    """The folder holding `<id>/` submission folders under SRC, and their ids.

    Raises:
        SourceError: SRC holds no submissions in any of the known layouts.
    """
    source = Path(source)
    if not source.is_dir():
        raise SourceError(f"{source} is not a folder (give the export folder or data directory)")
    if (source / MANIFEST_NAME).is_file() and is_valid_id(source.name):
        return source.parent, [source.name]
    if (source / "submissions").is_symlink():
        # An export never holds links; one here would make the tool read
        # (and the custody log vouch for) whatever folder it points to.
        raise SourceError(
            f"{source / 'submissions'} is a symbolic link, not a folder; not followed. "
            "Use the export exactly as `testimony-portal export` wrote it"
        )
    base = source / "submissions" if (source / "submissions").is_dir() else source
    # Symbolic links, files and devices named like a submission are listed
    # too, so that they are reported (and never read), not silently skipped.
    ids = sorted(entry.name for entry in os.scandir(base) if is_valid_id(entry.name))
    if ids and not any((base / sid / MANIFEST_NAME).exists() for sid in ids):
        raise SourceError(
            f"{source} holds no encrypted submissions (no <id>/testimony.age); is it a folder "
            "written by `open`? Give the export folder or data directory instead"
        )
    if not ids:
        raise SourceError(
            f"no submissions found in {source}: expected {source}/submissions/<id>/testimony.age "
            "(an export or data directory) or <id>/testimony.age folders"
        )
    return base, ids


def listed_files(source_dir: Path) -> dict[str, Path]:
    """A submission folder's files by relative path, refusing links and odd entries.

    Raises:
        Tampered: the folder is a link, not a folder, or holds something a
            submission never does.
    """
    if source_dir.is_symlink():
        raise Tampered(f"{source_dir} is a symbolic link; not followed")
    if not source_dir.is_dir():
        raise Tampered(f"{source_dir} is not a folder; not read")
    try:
        files = submission_files(source_dir)
    except LayoutError as exc:
        raise Tampered(str(exc)) from None
    return {path.relative_to(source_dir).as_posix(): path for path in files}


def leftovers(out_dir: Path) -> list[Path]:
    """What a killed run can leave in the output folder: work folders and temporary pages."""
    found = []
    for entry in os.scandir(out_dir):
        name = entry.name
        if name.startswith(PARTIAL_PREFIX) or (name.startswith(".") and name.endswith(".tmp")):
            found.append(Path(entry.path))
    return sorted(found)


def remove_tree(path: Path) -> None:
    """Remove one of the tool's own work folders (or a link or file in its place)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        import shutil  # here: an `open` that finds nothing to clean up never needs it

        shutil.rmtree(path)
