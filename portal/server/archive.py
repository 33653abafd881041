"""Choosing the archive behind the store's seam, and the local one (the default).

`open_archive(config)` is the only place that reads `PORTAL_STORE`: it
returns a `LocalArchive` (the data directory: what the portal always did)
or an `ObjectArchive` (an S3-compatible bucket, portal/server/objectstore.py,
which needs the `s3` extra). Everything above it talks to `Archive`.

With the local archive the spool *is* the archive: a committed submission
rests in `submissions/<id>/` until it is exported, and "publishing" at the
seal is the seal itself, which rewrites the day's files so no file time
tells their order. Form claims across nodes do not arise (there is one
node), so the in-memory ledger of portal/server/web/onetime.py decides.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from portal.core.fsio import READ_FLAGS
from portal.core.layout import LayoutError, day_floor, submission_files
from portal.server.config import Config
from portal.server.mailbox import ReplyBox, ReplyStore, ensure_salt
from portal.server.seal import WORK_DIR, SealError, recover_interrupted_seal, seal
from portal.server.store import (
    Archive,
    FormClaim,
    PublishReport,
    StoreError,
    SubmissionStore,
)


class LocalArchive:
    """Submissions rest in the data directory until exported (one node)."""

    kind = "local"

    def __init__(self, spool: SubmissionStore) -> None:
        self.spool = spool
        self.root: Path | None = spool.root

    def describe(self) -> str:
        return f"submissions rest in the data directory {self.spool.root} (PORTAL_STORE=local)"

    def verify(self) -> list[str]:
        return []

    def publish(self, *, rng: random.Random | None = None, reserve_bytes: int = 0) -> PublishReport:
        try:
            sealed = seal(self.spool, rng=rng, reserve_bytes=reserve_bytes)
        except SealError as exc:
            return PublishReport(stopped=str(exc))
        return PublishReport(published=sealed.rewritten, failed=dict(sealed.not_sealed))

    @contextlib.contextmanager
    def exclusive(self, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        if not self.spool.submissions_dir.is_dir():
            # A wrong path must not look like an empty server.
            raise StoreError(
                f"{self.spool.submissions_dir} does not exist; check PORTAL_DATA_DIR "
                "(it must be the server's data directory)"
            )
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.spool.maintenance(wait=False))
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                stack.enter_context(self.spool.maintenance())
            # A seal killed half-way left some submissions in its work folder.
            try:
                recover_interrupted_seal(self.spool)
            except OSError as exc:
                raise StoreError(
                    f"an interrupted seal left {self.spool.root / WORK_DIR} and it could not "
                    f"be tidied ({exc.strerror or exc}); run `testimony-portal seal` once"
                ) from exc
            yield

    def ids(self) -> list[str]:
        return self.spool.ids()

    def files(self, submission_id: str) -> list[str]:
        folder = self.spool.path(submission_id)
        try:
            return [p.relative_to(folder).as_posix() for p in submission_files(folder)]
        except LayoutError as exc:
            raise StoreError(str(exc)) from exc

    @contextlib.contextmanager
    def open_file(self, submission_id: str, relpath: str) -> Iterator[BinaryIO]:
        fd = os.open(self.spool.path(submission_id) / relpath, READ_FLAGS)
        with open(fd, "rb", buffering=0) as handle:
            yield handle

    def file_time(self, submission_id: str, relpath: str) -> float:
        path = self.spool.path(submission_id) / relpath
        return day_floor(path.lstat().st_mtime)

    def purge(self, submission_id: str) -> None:
        self.spool.purge(submission_id)

    def replies(self) -> ReplyBox:
        return ReplyStore(self.spool.root)

    def receipt_salt(self) -> bytes:
        return ensure_salt(self.spool.root)

    def claim_form(self, key: str) -> FormClaim:
        return FormClaim.CLAIMED

    def form_stored(self, key: str) -> None:
        return None

    def release_form(self, key: str) -> None:
        return None


def open_archive(config: Config, spool: SubmissionStore | None = None) -> Archive:
    """The archive `PORTAL_STORE` names, over this node's spool (the data directory).

    Raises:
        ConfigError: a setting is missing or the `s3` extra is not installed.
    """
    spool = spool or SubmissionStore(config.data_dir)
    if config.store == "local":
        return LocalArchive(spool)
    # Imported only here: the default install does not carry boto3.
    from portal.server import objectstore

    return objectstore.ObjectArchive.from_config(config, spool)
