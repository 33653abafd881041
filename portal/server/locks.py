"""A lock shared by the threads of every worker process, for state in shared memory."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading


class SharedLock:
    """A lock that threads of one worker and every forked worker share.

    Threads of one worker exclude each other with a thread lock, and worker
    processes with a POSIX record lock on an anonymous memory file created
    before the fork. The kernel drops a record lock when its process dies,
    so a worker killed while holding it (gunicorn kills hung workers with
    SIGKILL) cannot leave every other worker waiting forever, as a
    semaphore such as multiprocessing.Lock would.

    Record locks belong to a process, not a thread, and the kernel refuses
    with EDEADLK a wait that would close a cycle between processes: worker A
    holding one lock while another of its threads waits for a second, and
    worker B the other way round, looks like a deadlock although it is not.
    So the thread lock is one for all instances: in each worker, at most one
    thread holds or waits for any of these locks, and no cycle can form.
    Every critical section is short (a bucket update, a table look-up, one
    64 KiB write), so sharing it costs little. Never take one inside another.
    """

    _thread_lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self._process_lock = os.memfd_create(name, os.MFD_CLOEXEC)

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.lockf(self._process_lock, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.lockf(self._process_lock, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def __del__(self) -> None:
        with contextlib.suppress(AttributeError, OSError):
            os.close(self._process_lock)
