"""Housekeeping inside the running server: the staging sweep and the daily seal.

Every gunicorn worker starts a `Housekeeper` thread after it forks, but only
the worker holding an flock on `.housekeeper.lock` in the data directory
works; the others retry each round, so when that worker dies (the kernel
then drops its lock) another one takes over within one round. The seal
itself also holds the maintenance lock, so it never runs beside a
`testimony-portal seal`, `export` or purge started by hand.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import threading
from typing import Any

from portal.config import Config
from portal.seal import SealError, seal
from portal.store import FILE_MODE, SubmissionStore

LOCK_NAME = ".housekeeper.lock"
# After a failed seal (a full disk), try again this much later, not every round.
RETRY_AFTER = dt.timedelta(minutes=30)

log = logging.getLogger("portal.housekeeper")


def next_seal(after: dt.datetime, seal_time: tuple[int, int]) -> dt.datetime:
    """The first daily seal time (UTC) strictly after `after`."""
    hour, minute = seal_time
    slot = after.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return slot if slot > after else slot + dt.timedelta(days=1)


class Housekeeper(threading.Thread):
    def __init__(self, store: SubmissionStore, config: Config) -> None:
        super().__init__(name="housekeeper", daemon=True)
        self.store = store
        self.interval = config.staging_sweep_seconds
        self.seal_time = config.seal_time
        now = dt.datetime.now(dt.UTC)
        self.due = next_seal(now, self.seal_time) if self.seal_time else None
        self.stopping = threading.Event()
        self._lock_fd: int | None = None

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                if self._hold_lock():
                    self.round()
            except Exception:  # noqa: BLE001 - one bad round must not end housekeeping
                log.exception("housekeeping round failed")

    def _hold_lock(self) -> bool:
        if self._lock_fd is None:
            path = self.store.root / LOCK_NAME
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._lock_fd = fd  # held for the life of this worker
        return True

    def round(self) -> None:
        removed = self.store.sweep_abandoned_staging()
        if removed:
            log.info("removed %d staging folder(s) left by a worker that died", removed)
        now = dt.datetime.now(dt.UTC)
        if self.due is None or now < self.due or self.seal_time is None:
            return
        try:
            with self.store.maintenance(wait=False):
                report = seal(self.store)
        except BlockingIOError:
            return  # an export or a seal by hand is running: try next round
        except SealError as exc:
            log.error("daily seal failed: %s; trying again later", exc)
            self.due = now + RETRY_AFTER
            return
        self.due = next_seal(dt.datetime.now(dt.UTC), self.seal_time)
        log.info(
            "daily seal: %d submission(s) rewritten, %d already sealed, %d not sealed",
            report.rewritten,
            report.already_sealed,
            len(report.not_sealed),
        )


def start_housekeeping(config: Config) -> Any:
    """A gunicorn `post_worker_init` hook that starts this worker's `Housekeeper`."""

    def post_worker_init(worker: Any) -> None:
        Housekeeper(SubmissionStore(config.data_dir), config).start()

    return post_worker_init
