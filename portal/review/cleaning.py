"""Metadata-cleaned copies of attachments, made by mat2, for forwards under `anonymous` consent.

A witness who allowed forwarding only without identifying details may have
sent a photo with its GPS position or camera serial inside. `forward
--clean-metadata` puts, beside each untouched original, a copy that Debian's
mat2 has cleaned, under `<id>/cleaned/<file>`. The originals stay as
evidence (their hashes prove them); the partner chooses which to use. Both
hashes are in the bundle's SHA256SUMS and in the custody entry.

mat2 parses hostile files: it runs in a separate process on a copy in a
private work folder, with limits on memory and CPU time and a wall-clock
timeout, and never sees the opened folder. A file mat2 does not support or
fails on gets no cleaned copy, and the forward says so.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from portal.core.fsio import sha256_file
from portal.review.record import require_record

MAT2 = "mat2"
TIME_LIMIT_S = 120
CPU_LIMIT_S = 100
MEMORY_LIMIT = 2 * 1024 * 1024 * 1024
CLEANED_DIR = "cleaned"


class CleaningUnavailable(Exception):
    """mat2 is not installed; nothing was sent."""


@dataclass(frozen=True)
class CleanedCopy:
    submission: str
    file: str
    original_sha256: str
    # Set when mat2 made a copy; otherwise `problem` says why not.
    path: Path | None
    sha256: str | None
    size: int
    problem: str | None

    @property
    def name(self) -> str:
        """Where the copy goes in the bundle."""
        return f"{self.submission}/{CLEANED_DIR}/{self.file}"

    def as_record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "submission": self.submission,
            "file": self.file,
            "original_sha256": self.original_sha256,
        }
        if self.sha256 is not None:
            record.update(cleaned=f"{CLEANED_DIR}/{self.file}", cleaned_sha256=self.sha256)
        else:
            record["not_cleaned"] = self.problem
        return record


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@contextmanager
def cleaned_copies(from_dir: Path, submission_ids: Sequence[str]) -> Iterator[list[CleanedCopy]]:
    """A cleaned copy of every attachment of these opened submissions, in a private work folder.

    The folder and the copies are removed when the block ends (after the
    bundle is written).

    Raises:
        CleaningUnavailable: mat2 is not installed.
    """
    program = shutil.which(MAT2)
    if program is None:
        raise CleaningUnavailable(
            "mat2 is not installed (Debian: apt install mat2); nothing was sent"
        )
    with tempfile.TemporaryDirectory(prefix="testimony-clean-") as work:
        copies = []
        for number, submission in enumerate(sorted(set(submission_ids))):
            record = require_record(from_dir / submission)
            for index, entry in enumerate(record.attachments):
                folder = Path(work) / f"{number}-{index}"
                folder.mkdir(mode=0o700)
                copies.append(
                    _clean(program, from_dir / submission / entry.file, folder, submission,
                           entry.file, entry.sha256)
                )  # fmt: skip
        yield copies


def _clean(
    program: str, source: Path, folder: Path, submission: str, file: str, original: str
) -> CleanedCopy:
    suffix = source.suffix
    work = folder / f"file{suffix}"
    shutil.copyfile(source, work, follow_symlinks=False)
    if sha256_file(work) != original:
        return CleanedCopy(submission, file, original, None, None, 0, "changed since opening")
    try:
        done = subprocess.run(
            [program, "--", str(work)],
            capture_output=True,
            timeout=TIME_LIMIT_S,
            preexec_fn=_limits,  # noqa: PLW1509 (the child execs at once)
            check=False,
            stdin=subprocess.DEVNULL,
            cwd=folder,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(folder)},
        )
    except subprocess.TimeoutExpired:
        return CleanedCopy(submission, file, original, None, None, 0, "mat2 took too long")
    cleaned = folder / f"file.cleaned{suffix}"
    if done.returncode != 0 or cleaned.is_symlink() or not cleaned.is_file():
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        why = reason[-1][:200] if reason else f"mat2 failed (status {done.returncode})"
        return CleanedCopy(submission, file, original, None, None, 0, why.replace(str(work), file))
    digest = hashlib.sha256(cleaned.read_bytes()).hexdigest()
    return CleanedCopy(submission, file, original, cleaned, digest, cleaned.stat().st_size, None)
