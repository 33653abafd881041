"""The lock behind the rate bucket, the form ledger and the disk floor."""

from __future__ import annotations

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
