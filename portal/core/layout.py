"""The layout every copy of the ciphertext store shares, on both machines.

The server's store, the export on the transfer medium and the reviewer's
source folder all hold the same `submissions/<id>/` layout (docs/FORMAT.md).
This leaf module is the one place that names its folders and files, draws
and checks submission ids, states the grammar of an attachment's path, and
rounds a time to its UTC day, the only precision at which the portal keeps
times. It imports only the standard library, so the server side and the
reviewer both import it without importing each other.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from pathlib import Path


class LayoutError(Exception):
    """A submission folder does not follow the layout (a link, a stranger, no manifest)."""


# The layout of the data directory (docs/FORMAT.md); export writes the same
# `submissions/<id>/` layout on the transfer medium.
STAGING_DIR = "staging"
SUBMISSIONS_DIR = "submissions"
MANIFEST_NAME = "testimony.age"
FILES_DIR = "files"

# 18 random bytes: 144 bits, more than the 128 the design asks for, and a
# multiple of three so the URL-safe base64 form has no padding.
_ID_BYTES = 18
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
_ATTACHMENT_RE = re.compile(r"^[1-9][0-9]{0,5}\.age$")


def is_attachment_path(relpath: str) -> bool:
    """True for an attachment's path inside a submission folder: `files/<n>.age`.

    The one grammar for it: the store names attachments so, lists only such
    files, and the manifest parser (portal/core/manifest.py) accepts only these paths.
    """
    folder, _, name = relpath.partition("/")
    return folder == FILES_DIR and bool(_ATTACHMENT_RE.fullmatch(name))


def new_id() -> str:
    """Return a fresh random, URL-safe identifier with 144 bits of entropy.

    An id never starts with `-`: on a command line it would read as an
    option (about one id in 64 would, otherwise). Drawing again costs under
    0.03 bits of the 144.
    """
    while True:
        value = secrets.token_urlsafe(_ID_BYTES)
        if not value.startswith("-"):
            return value


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.fullmatch(value))


# Times on disk and in manifests are kept to the day (UTC), never finer: the
# functions below are the one place that rounds a time down to its day.
SECONDS_PER_DAY = 86_400


def day_timestamp(now: dt.datetime | None = None) -> float:
    """Midnight UTC starting the day of `now` (default: today); a naive `now` is UTC."""
    now = now or dt.datetime.now(dt.UTC)
    midnight = dt.datetime(now.year, now.month, now.day, tzinfo=dt.UTC)
    return midnight.timestamp()


def day_floor(timestamp: float) -> float:
    """Midnight UTC starting the day that holds `timestamp` (seconds since the epoch)."""
    return day_timestamp(dt.datetime.fromtimestamp(timestamp, dt.UTC))


def day_date(timestamp: float) -> str:
    """The UTC day holding `timestamp`, as YYYY-MM-DD."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date().isoformat()


def received_date(now: dt.datetime | None = None) -> str:
    """The UTC day of `now` (default: today) as YYYY-MM-DD: a manifest's `received`."""
    return day_date(day_timestamp(now))


def submission_files(directory: Path) -> list[Path]:
    """The ciphertext files of a submission directory, refusing links and strangers.

    Used on the server and on the reviewer's copy alike: only `testimony.age`
    and `files/<n>.age` are ever read, so nothing planted beside them is.

    Raises:
        LayoutError: the directory holds a symlink or is missing its manifest.
    """
    manifest = directory / MANIFEST_NAME
    if manifest.is_symlink():
        raise LayoutError(f"{directory.name}: {MANIFEST_NAME} is a symbolic link; not followed")
    if not manifest.is_file():
        raise LayoutError(f"{directory.name}: {MANIFEST_NAME} is missing or not a file")
    found = [manifest]
    files_dir = directory / FILES_DIR
    if files_dir.is_symlink():
        raise LayoutError(f"{directory.name}: {FILES_DIR} is a symbolic link")
    if files_dir.is_dir():
        for entry in sorted(os.scandir(files_dir), key=lambda e: e.name):
            if entry.is_symlink():
                raise LayoutError(f"{directory.name}: files/{entry.name} is a symbolic link")
            if not _ATTACHMENT_RE.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                raise LayoutError(f"{directory.name}: unexpected entry files/{entry.name}")
            found.append(Path(entry.path))
    return found
