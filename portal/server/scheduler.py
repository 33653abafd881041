"""Housekeeping inside the running server: the staging sweep and the seal.

The seal runs daily at `PORTAL_SEAL_TIME` (UTC), or every hour with
`hourly`, and soon after a start if the server was off at that time since
the last seal. It is the archive's `publish()`: with the local disk, the
seal that rewrites file times; with a bucket, the batch that moves the
spool into it (so a node killed before publishing publishes soon after it
starts again). Every gunicorn worker
starts a `Housekeeper` thread after it forks, but only the worker holding an
flock on `.housekeeper.lock` in the data directory works; the others retry
each round, so when that worker dies (the kernel then drops its lock)
another one takes over within one round. The seal itself also holds the
maintenance lock, so it never runs beside a `testimony-portal seal`,
`export` or purge started by hand.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import threading
from typing import Any

from portal.core.fsio import open_lock_file
from portal.server.archive import open_archive
from portal.server.config import Config
from portal.server.seal import last_seal_start
from portal.server.store import Archive, SubmissionStore

LOCK_NAME = ".housekeeper.lock"
# After a failed seal (a full disk), try again this much later, not every round.
RETRY_AFTER = dt.timedelta(minutes=30)
# After a publish the object store refused or could not take (it is down),
# try again this much later: the spool keeps filling meanwhile.
PUBLISH_RETRY_AFTER = dt.timedelta(minutes=5)

log = logging.getLogger("portal.housekeeper")


def next_seal(
    after: dt.datetime, seal_time: tuple[int, int], *, hourly: bool = False
) -> dt.datetime:
    """The first seal time (UTC) strictly after `after`: daily, or at that minute every hour."""
    hour, minute = seal_time
    if hourly:
        slot = after.replace(minute=minute, second=0, microsecond=0)
        return slot if slot > after else slot + dt.timedelta(hours=1)
    slot = after.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return slot if slot > after else slot + dt.timedelta(days=1)


def first_due(
    now: dt.datetime, last: dt.datetime, seal_time: tuple[int, int], *, hourly: bool = False
) -> dt.datetime:
    """When a starting server should seal: now if it missed a seal time since `last`.

    `last` is when the last seal started or, if none ever ran, when the data
    directory was set up. A server that was off at the seal time (a machine
    shut down at night) thus seals soon after it starts again.
    """
    missed = next_seal(last, seal_time, hourly=hourly)
    return now if missed <= now else missed


def last_seal_or_set_up(store: SubmissionStore) -> dt.datetime:
    """When the last seal started; if none ever did, when the data directory was set up."""
    last = last_seal_start(store)
    if last is not None:
        return last
    # The lock file is created once at set-up and never written again.
    try:
        created = store.maintenance_lock.stat().st_mtime
    except FileNotFoundError:
        return dt.datetime.now(dt.UTC)
    return dt.datetime.fromtimestamp(created, dt.UTC)


class Housekeeper(threading.Thread):
    def __init__(self, archive: Archive, config: Config) -> None:
        super().__init__(name="housekeeper", daemon=True)
        self.archive = archive
        self.store = archive.spool
        self.interval = config.staging_sweep_seconds
        self.seal_time = config.seal_time
        self.hourly = config.seal_hourly
        self.reserve_bytes = config.min_free_mb * 1024 * 1024
        self.reply_days = config.reply_days
        self.due: dt.datetime | None = None
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
            fd = open_lock_file(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._lock_fd = fd  # held for the life of this worker
            if self.seal_time is not None:
                now = dt.datetime.now(dt.UTC)
                last = last_seal_or_set_up(self.store)
                self.due = first_due(now, last, self.seal_time, hourly=self.hourly)
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
                report = self.archive.publish(reserve_bytes=self.reserve_bytes)
        except BlockingIOError:
            return  # an export or a seal by hand is running: try next round
        if report.stopped is not None:
            log.error("seal failed: %s; trying again later", report.stopped)
            retry = RETRY_AFTER if self.archive.root is not None else PUBLISH_RETRY_AFTER
            self.due = now + retry
            return
        self.due = next_seal(dt.datetime.now(dt.UTC), self.seal_time, hourly=self.hourly)
        kept = self.archive.replies().reseal(self.reply_days)
        log.info("seal: %d reply(ies) kept", kept)
        log.info(
            "seal: %d submission(s) sealed or published, %d not (kept for the next seal)",
            report.published,
            len(report.failed),
        )


def start_housekeeping(config: Config) -> Any:
    """A gunicorn `post_worker_init` hook that starts this worker's `Housekeeper`."""

    def post_worker_init(worker: Any) -> None:
        Housekeeper(open_archive(config, SubmissionStore(config.data_dir)), config).start()

    return post_worker_init
