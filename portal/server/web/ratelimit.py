"""A global token bucket for submissions, shared by every worker process.

The limit is global, not per client: behind a Tor onion service every
client arrives from 127.0.0.1, and keeping per-client state would mean
keeping something that identifies witnesses. Its state lives in anonymous
shared memory created before gunicorn forks its workers, so two workers do
not double the limit; nothing of it is ever written to disk.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable

from portal.server.locks import SharedLock


class TokenBucket:
    def __init__(
        self, rate_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        # [tokens, last refill time]; CLOCK_MONOTONIC is the same in every process.
        self._state = multiprocessing.RawArray("d", [float(burst), clock()])
        self._lock = SharedLock("portal-rate-limit")

    def take(self) -> float:
        """Take one token; return 0 on success, else seconds until one is free."""
        with self._lock:
            return self._take()

    def give_back(self) -> None:
        """Return a token taken for a request that stored nothing.

        Only stored submissions spend the budget: a form error, a refused
        upload or a repeated form costs the witnesses nothing.
        """
        with self._lock:
            tokens, last = self._state[0], self._state[1]
            now = self._clock()
            tokens = min(self._burst, tokens + max(0.0, now - last) * self._rate + 1)
            self._state[0], self._state[1] = tokens, now

    def _take(self) -> float:
        tokens: float = self._state[0]
        last: float = self._state[1]
        now = self._clock()
        tokens = min(self._burst, tokens + max(0.0, now - last) * self._rate)
        if tokens >= 1:
            self._state[0], self._state[1] = tokens - 1, now
            return 0.0
        self._state[0], self._state[1] = tokens, now
        return (1 - tokens) / self._rate
