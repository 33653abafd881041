"""The free-disk floor, held while uploads are being written.

The portal refuses new submissions when free space is below
`PORTAL_MIN_FREE_MB`, so that the system (logs, the database of a
co-located service, the next start-up) always has room. Checking only when
a request or a file part starts lets one long upload, or several at once,
take the disk far below that floor. `FreeSpaceFloor` checks before every
write to the store, under a lock shared by every thread of every worker
process, so the check and the write are one step: free space never falls
below the floor by the stored bytes themselves (file-system metadata can
take a block or so more). The write that would cross it fails like a full
disk, its file is emptied at once, and the submission it belongs to is
refused and removed; uploads running beside it that still fit go on.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from pathlib import Path
from typing import BinaryIO

from portal.core.fsio import open_unbuffered
from portal.server.locks import SharedLock


class FreeSpaceFloor:
    """Refuses any store write that would leave less than `floor_bytes` free on `root`'s disk."""

    def __init__(self, root: Path, floor_bytes: int, *, lock_fd: int | None = None) -> None:
        self.root = Path(root)
        self.floor_bytes = floor_bytes
        # Created before gunicorn forks, so every worker shares it; a sealer
        # (`portal.server.sealer`) is handed its descriptor (`lock_fd`).
        self._lock = SharedLock("portal-free-space", fd=lock_fd)

    @property
    def lock_fd(self) -> int:
        return self._lock.fd

    def opener(self, fd: int) -> BinaryIO:
        """The store's opener: a raw descriptor becomes a floor-checked, unbuffered file."""
        raw = open_unbuffered(fd)  # closed by the store's StagedFile
        return FloorCheckedFile(raw, self)  # type: ignore[return-value]

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def write(self, raw: BinaryIO, data: bytes | bytearray | memoryview) -> int:
        with self._lock:
            if self.free_bytes() - len(data) < self.floor_bytes:
                # This file's submission is refused, so its bytes are given
                # back at once, not when the request ends: concurrent uploads
                # that still fit then go on, and only the one that crossed
                # the floor fails.
                with contextlib.suppress(OSError):
                    os.ftruncate(raw.fileno(), 0)
                # ENOSPC: the store treats it as a full disk, and the witness
                # is told that nothing was saved.
                raise OSError(errno.ENOSPC, "the free-space floor would be crossed")
            written: int = raw.write(data) or 0
            return written


class FloorCheckedFile(io.RawIOBase):
    """An unbuffered file whose every write goes through `FreeSpaceFloor.write`."""

    def __init__(self, raw: BinaryIO, floor: FreeSpaceFloor) -> None:
        super().__init__()
        self._raw = raw
        self._floor = floor

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        return self._floor.write(self._raw, data)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        finally:
            self._raw.close()
