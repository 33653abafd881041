"""A lock shared by the threads of every worker process, for state in shared memory."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import sys
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

    def __init__(self, name: str, *, fd: int | None = None) -> None:
        # `fd`: the same lock, in a process started with exec (the sealer),
        # which was handed the descriptor of its worker's lock.
        self._process_lock = os.memfd_create(name, os.MFD_CLOEXEC) if fd is None else fd

    @property
    def fd(self) -> int:
        """The descriptor of the record lock, for a process that must share it."""
        return self._process_lock

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            # Nearly always free: taken at once, without letting go of the
            # interpreter lock (`_try_record_lock`); else wait for it.
            if not _try_record_lock(self._process_lock, fcntl.F_WRLCK):
                fcntl.lockf(self._process_lock, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            if not _try_record_lock(self._process_lock, fcntl.F_UNLCK):
                fcntl.lockf(self._process_lock, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def __del__(self) -> None:
        with contextlib.suppress(AttributeError, OSError):
            os.close(self._process_lock)


class _Flock(ctypes.Structure):
    """Linux's `struct flock` (the same on every 64-bit Linux: off_t is 64 bits)."""

    _fields_ = [
        ("l_type", ctypes.c_short),
        ("l_whence", ctypes.c_short),
        ("l_start", ctypes.c_int64),
        ("l_len", ctypes.c_int64),
        ("l_pid", ctypes.c_int32),
    ]


def _libc_fcntl() -> object | None:
    # PyDLL: the call keeps the interpreter lock, which is the point.
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        return ctypes.PyDLL(None, use_errno=True).fcntl
    except (OSError, AttributeError):
        return None


_FCNTL = _libc_fcntl()
# The two requests, each built once: the kernel only reads them.
_REQUESTS = {kind: _Flock(kind, os.SEEK_SET, 0, 0, 0) for kind in (fcntl.F_WRLCK, fcntl.F_UNLCK)}
_REQUEST_POINTERS = {kind: ctypes.byref(request) for kind, request in _REQUESTS.items()}


def _try_record_lock(fd: int, kind: int) -> bool:
    """Set (F_WRLCK) or clear (F_UNLCK) the whole-file record lock without waiting.

    What `fcntl.lockf(fd, LOCK_EX | LOCK_NB)` does, through libc, but
    without letting go of the interpreter lock: each letting go hands it to
    another of the worker's threads and back, a futex call and a thread
    switch each (docs/BENCHMARKS.md, issue 25). False when the lock is
    held by another process, or when this fast path is not available: the
    caller then waits with `fcntl.lockf`, as before.
    """
    if _FCNTL is None:
        return False
    if _FCNTL(fd, fcntl.F_SETLK, _REQUEST_POINTERS[kind]) == 0:  # type: ignore[operator]
        return True
    code = ctypes.get_errno()
    if code in (errno.EAGAIN, errno.EACCES):
        return False
    raise OSError(code, os.strerror(code))
