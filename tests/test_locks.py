"""The lock behind the rate bucket, the form ledger and the disk floor."""

from __future__ import annotations

import fcntl
import os
import threading
import time

from portal.server.locks import SharedLock


def hammer(lock: SharedLock, rounds: int, errors: list[BaseException]) -> None:
    for _ in range(rounds):
        try:
            with lock:
                time.sleep(0.0002)
        except OSError as exc:
            errors.append(exc)


def test_two_locks_used_by_threads_of_two_workers_never_report_a_deadlock() -> None:
    # POSIX record locks belong to a process, not a thread. Worker A holding
    # the bucket's lock while another of its threads waits for the ledger's,
    # and worker B the other way round, looks like a deadlock to the kernel,
    # which then fails one lockf() with EDEADLK (a 500 for a witness) although
    # the threads would never block each other.
    first, second = SharedLock("test-first"), SharedLock("test-second")
    pid = os.fork()
    if pid == 0:
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=hammer, args=(lock, 1500, errors)) for lock in (second, first)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        os._exit(1 if errors else 0)
    errors = []
    threads = [
        threading.Thread(target=hammer, args=(lock, 1500, errors)) for lock in (first, second)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _, status = os.waitpid(pid, 0)
    assert errors == [], errors[:1]
    assert os.waitstatus_to_exitcode(status) == 0, "the other worker saw a false deadlock"


def test_the_lock_excludes_threads_and_workers() -> None:
    lock = SharedLock("test-exclusion")
    inside = os.memfd_create("test-inside")
    os.ftruncate(inside, 1)

    def enter_and_check(rounds: int) -> bool:
        ok = True
        for _ in range(rounds):
            with lock:
                if os.pread(inside, 1, 0) != b"\0":
                    ok = False
                os.pwrite(inside, b"\1", 0)
                time.sleep(0.0001)
                os.pwrite(inside, b"\0", 0)
        return ok

    pid = os.fork()
    if pid == 0:
        os._exit(0 if enter_and_check(500) else 1)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(enter_and_check(500)))
    thread.start()
    results.append(enter_and_check(500))
    thread.join()
    _, status = os.waitpid(pid, 0)
    assert results == [True, True]
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_fast_path_takes_the_same_record_lock_that_lockf_sees() -> None:
    # Taken through libc without letting go of the interpreter lock; another
    # process, using Python's own fcntl.lockf, must find it held, then free.
    from portal.server import locks

    assert locks._FCNTL is not None, "this Linux machine should have the fast path"
    lock = SharedLock("test-fast-path")
    fd = lock._process_lock
    with lock:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                code = 1  # it should have been held
            except OSError:
                pass
            os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert locks._try_record_lock(fd, fcntl.F_WRLCK)  # our own: taken again
    pid = os.fork()
    if pid == 0:
        ok = locks._try_record_lock(fd, fcntl.F_WRLCK)
        os._exit(0 if ok else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "released for others"


def test_the_fast_path_reports_a_lock_another_process_holds() -> None:
    from portal.server import locks

    lock = SharedLock("test-held-elsewhere")
    fd = lock._process_lock
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        os.write(ready_w, b"x")
        os.read(done_r, 1)
        os._exit(0)
    os.read(ready_r, 1)
    try:
        assert not locks._try_record_lock(fd, fcntl.F_WRLCK)
    finally:
        os.write(done_w, b"x")
        os.waitpid(pid, 0)
    assert locks._try_record_lock(fd, fcntl.F_WRLCK)  # free once that process is gone
    for end in (ready_r, ready_w, done_r, done_w):
        os.close(end)
