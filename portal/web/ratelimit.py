"""A global token bucket for submissions, shared by every worker process.

The limit is global, not per client: behind a Tor onion service every
client arrives from 127.0.0.1, and keeping per-client state would mean
keeping something that identifies witnesses. Its state lives in anonymous
shared memory created before gunicorn forks its workers, so two workers do
not double the limit; nothing of it is ever written to disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self, rate_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        # [tokens, last refill time]; CLOCK_MONOTONIC is the same in every process.
        self._state = multiprocessing.RawArray("d", [float(burst), clock()])
        # Threads of one worker exclude each other with a thread lock, and
        # worker processes with a POSIX record lock on an anonymous memory
        # file. The kernel drops a record lock when its process dies, so a
        # worker killed while updating the bucket (gunicorn kills hung
        # workers with SIGKILL) cannot leave every other worker waiting
        # forever, as a semaphore such as multiprocessing.Lock would.
        self._thread_lock = threading.Lock()
        self._process_lock = os.memfd_create("portal-rate-limit", os.MFD_CLOEXEC)

    def take(self) -> float:
        """Take one token; return 0 on success, else seconds until one is free."""
        with self._thread_lock:
            fcntl.lockf(self._process_lock, fcntl.LOCK_EX)
            try:
                return self._take()
            finally:
                fcntl.lockf(self._process_lock, fcntl.LOCK_UN)

    def _take(self) -> float:
        tokens, last = self._state[0], self._state[1]
        now = self._clock()
        tokens = min(self._burst, tokens + max(0.0, now - last) * self._rate)
        if tokens >= 1:
            self._state[0], self._state[1] = tokens - 1, now
            return 0.0
        self._state[0], self._state[1] = tokens, now
        return (1 - tokens) / self._rate

    def __del__(self) -> None:
        with contextlib.suppress(AttributeError, OSError):
            os.close(self._process_lock)
