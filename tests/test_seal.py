"""The daily seal: after it, no file-system time or inode order tells when a submission arrived.

Times are read with `os.stat` (mtime, ctime, atime) and with statx(2) for
the birth time, called through ctypes (Python 3.11 has no `os.statx`); the
helper is cross-checked against coreutils `stat --format=%W`.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from portal.core.age import X25519Identity
from portal.core.layout import day_timestamp
from portal.server.cli import main as cli_main
from portal.server.config import Config
from portal.server.export import export_submissions
from portal.server.scheduler import first_due, next_seal
from portal.server.seal import (
    STATE_FILE,
    WORK_DIR,
    SealError,
    last_seal_start,
    recover_if_idle,
    seal,
)
from portal.server.store import SubmissionStore
from portal.testing.live import open_submission, start_server
from tests.review_support import make_store, submit
from tests.support import REPO, birth_time_ns, unsupported_here


@pytest.fixture
def identity() -> X25519Identity:
    return X25519Identity.generate()


def _fs_has_birth_times(folder: Path) -> bool:
    probe = folder / ".probe"
    probe.write_bytes(b"")
    try:
        return birth_time_ns(probe) is not None
    finally:
        probe.unlink()


def everything_under(root: Path) -> Iterator[Path]:
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            yield Path(dirpath) / name


def arrive(store: SubmissionStore, identity: X25519Identity, count: int) -> list[str]:
    """Store `count` submissions one after another, far enough apart to tell apart."""
    ids = []
    for number in range(count):
        files = [(f"{number}.bin", os.urandom(1000 + number))] if number % 2 else []
        ids.append(submit(store, [identity], f"testimony {number}", files))
        time.sleep(0.02)  # ext4 keeps times at jiffy (~4 ms) resolution
    return ids


class Ordered(random.Random):
    """A 'random' order fixed for a test: as given, or reversed."""

    def __init__(self, reverse: bool) -> None:
        super().__init__(0)
        self.reverse = reverse

    def shuffle(self, x: list[Any]) -> None:  # type: ignore[override]  # sorts lists only
        x.sort(reverse=self.reverse)


def manifest_inodes(store: SubmissionStore, ids: list[str]) -> list[int]:
    return [(store.path(i) / "testimony.age").stat().st_ino for i in ids]


def ranking(values: list[int]) -> list[int]:
    return sorted(range(len(values)), key=values.__getitem__)


def test_birth_time_helper_agrees_with_coreutils(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    ours = birth_time_ns(path)
    theirs = subprocess.run(
        ["stat", "--format=%W", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    if ours is None:
        assert theirs == "0", "statx says no birth time but coreutils shows one"
    else:
        assert int(theirs) == ours // 1_000_000_000


def test_before_the_seal_times_and_inodes_follow_arrival(
    tmp_path: Path, identity: X25519Identity
) -> None:
    """The exposure the seal removes, as FORMAT.md states it (a guard for the next test)."""
    store = make_store(tmp_path / "data")
    ids = arrive(store, identity, 5)
    ctimes = [(store.path(i) / "testimony.age").stat().st_ctime_ns for i in ids]
    assert ctimes == sorted(ctimes) and len(set(ctimes)) == len(ctimes)
    if _fs_has_birth_times(tmp_path):
        births = [birth_time_ns(store.path(i)) for i in ids]
        assert births == sorted(births)  # type: ignore[type-var]
    # mtimes were already coarsened at commit: they are all midnight.
    assert {(store.path(i) / "testimony.age").stat().st_mtime for i in ids} == {day_timestamp()}


def test_after_the_seal_no_time_under_the_data_directory_falls_in_the_arrival_period(
    tmp_path: Path, identity: X25519Identity
) -> None:
    # File times come from the kernel's coarse clock, up to a tick behind
    # time.time_ns(): compare with that slack, and leave wider gaps.
    slack = 20_000_000
    set_up_before = time.time_ns() - slack
    store = make_store(tmp_path / "data")
    time.sleep(0.1)
    first_arrival = time.time_ns() - slack
    arrive(store, identity, 6)
    # A failed attempt also touches staging/.
    store.begin().discard()
    time.sleep(0.1)
    seal_start = time.time_ns() - slack
    with store.maintenance():
        report = seal(store)
    seal_end = time.time_ns()
    assert report.rewritten == 6 and report.ok

    has_birth = _fs_has_birth_times(tmp_path)
    midnight_ns = int(day_timestamp()) * 1_000_000_000
    checked = 0
    for path in everything_under(store.root):
        info = path.lstat()
        times = {"ctime": info.st_ctime_ns, "mtime": info.st_mtime_ns, "atime": info.st_atime_ns}
        if has_birth:
            times["birth"] = birth_time_ns(path)  # type: ignore[assignment]
        for kind, value in times.items():
            # Every time is the seal's, midnight, or from before the first
            # submission (the lock files made when the folder was set up).
            in_seal = seal_start <= value <= seal_end
            assert in_seal or value == midnight_ns or value < first_arrival, (
                f"{path.relative_to(store.root)}: {kind} falls in the arrival period"
            )
            assert value >= set_up_before or value == midnight_ns
        checked += 1
    assert checked >= 6 * 2 + 3
    # Files and folders of submissions say only the day.
    for submission_id in store.ids():
        for path in [store.path(submission_id), *store.files(submission_id)]:
            assert path.stat().st_mtime_ns == midnight_ns
    assert store.submissions_dir.stat().st_mtime_ns == midnight_ns
    if not has_birth:
        unsupported_here(f"{tmp_path} keeps no birth times (statx): only ctime/mtime/atime checked")


def test_inode_order_follows_the_seals_random_order_not_arrival(
    tmp_path: Path, identity: X25519Identity
) -> None:
    """The same arrivals sealed in two different orders end with different inode orders."""
    rankings = []
    for name, rng in (("a", Ordered(reverse=False)), ("b", Ordered(reverse=True))):
        store = make_store(tmp_path / name)
        ids = arrive(store, identity, 8)
        # (Before the seal the order usually follows arrival, but on a busy
        # file system freed inode numbers are reused, so that is not asserted.)
        with store.maintenance():
            seal(store, rng=rng)
        rankings.append(ranking(manifest_inodes(store, ids)))
    assert rankings[0] != rankings[1]


def test_seal_keeps_ids_and_contents(tmp_path: Path, identity: X25519Identity) -> None:
    store = make_store(tmp_path / "data")
    ids = arrive(store, identity, 4)
    before = {i: open_submission(store.path(i), [identity]) for i in ids}
    with store.maintenance():
        seal(store)
    assert store.ids() == sorted(ids)
    for submission_id in ids:
        assert open_submission(store.path(submission_id), [identity]) == before[submission_id]
    assert not (store.root / WORK_DIR).exists()
    assert (store.root / STATE_FILE).exists()


def test_next_seal_rewrites_only_what_came_since_and_all_on_request(
    tmp_path: Path, identity: X25519Identity
) -> None:
    store = make_store(tmp_path / "data")
    old = arrive(store, identity, 3)
    with store.maintenance():
        seal(store)
    # Pretend the last seal was yesterday's and the old submissions are older.
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    (store.root / STATE_FILE).write_text(yesterday.strftime("%Y-%m-%dT%H:%M:%SZ\n"))
    two_days_ago = day_timestamp() - 2 * 86400
    for submission_id in old:
        for path in store.files(submission_id):
            os.utime(path, (two_days_ago, two_days_ago))
    new = arrive(store, identity, 2)
    old_inodes = manifest_inodes(store, old)
    with store.maintenance():
        report = seal(store)
    assert (report.rewritten, report.already_sealed) == (2, 3)
    assert manifest_inodes(store, old) == old_inodes  # moved, not copied
    assert store.ids() == sorted(old + new)
    with store.maintenance():
        report = seal(store, everything=True)
    assert (report.rewritten, report.already_sealed) == (5, 0)
    for submission_id in old:  # the day survives a rewrite
        assert (store.path(submission_id) / "testimony.age").stat().st_mtime == two_days_ago


def test_submission_committed_during_the_seal_is_kept(
    tmp_path: Path, identity: X25519Identity
) -> None:
    store = make_store(tmp_path / "data")
    arrive(store, identity, 3)
    late: list[str] = []

    def commit_meanwhile(step: str) -> None:
        if step == "copy complete" and not late:
            late.append(submit(store, [identity], "arrived during the seal"))

    with store.maintenance():
        report = seal(store, checkpoint=commit_meanwhile)
    assert report.arrived_during_seal == 1
    assert late[0] in store.ids() and len(store.ids()) == 4
    manifest, _files = open_submission(store.path(late[0]), [identity])
    assert manifest["fields"]["testimony"] == "arrived during the seal"


def test_staging_is_recreated_when_idle_and_kept_for_a_live_upload(
    tmp_path: Path, identity: X25519Identity
) -> None:
    store = make_store(tmp_path / "data")
    arrive(store, identity, 1)
    inode = store.staging_dir.stat().st_ino
    with store.maintenance():
        assert seal(store).staging_recreated
    assert store.staging_dir.stat().st_ino != inode

    live = store.begin()
    _rel, part = live.create_attachment()
    part.write(b"ciphertext so far")
    start = time.time_ns()
    with store.maintenance():
        assert not seal(store).staging_recreated
    assert store.staging_dir.stat().st_ctime_ns >= start
    assert store.staging_dir.stat().st_mtime == day_timestamp()
    part.finish()
    manifest = live.create_manifest()
    manifest.write(b"stand-in")
    manifest.finish()
    assert store.commit(live) in store.ids()


def test_unreadable_submission_is_left_in_place_and_reported(
    tmp_path: Path, identity: X25519Identity
) -> None:
    store = make_store(tmp_path / "data")
    good, bad = arrive(store, identity, 2)
    (store.path(bad) / "files").mkdir(exist_ok=True)
    (store.path(bad) / "files" / "planted.sh").write_bytes(b"#!/bin/sh\n")
    with store.maintenance():
        report = seal(store)
    assert list(report.not_sealed) == [bad] and report.rewritten == 1
    assert store.ids() == sorted([good, bad])
    assert (store.path(bad) / "files" / "planted.sh").exists()


def test_full_disk_during_the_seal_loses_nothing(
    tmp_path: Path, identity: X25519Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(tmp_path / "data")
    ids = arrive(store, identity, 4)
    real_copy_range = os.copy_file_range
    calls = 0

    def fills_up(source: int, target: int, count: int) -> int:
        nonlocal calls
        calls += 1
        if calls >= 3:  # the third file copied finds the disk full
            raise OSError(28, "No space left on device")
        return real_copy_range(source, target, count)

    monkeypatch.setattr(os, "copy_file_range", fills_up)
    with store.maintenance(), pytest.raises(SealError, match="disk is full"):
        seal(store)
    monkeypatch.undo()
    assert store.ids() == sorted(ids)
    assert not (store.root / WORK_DIR).exists()
    for submission_id in ids:
        open_submission(store.path(submission_id), [identity])


def test_export_waits_for_a_running_seal_and_then_exports_everything(
    tmp_path: Path, identity: X25519Identity
) -> None:
    store = make_store(tmp_path / "data")
    ids = arrive(store, identity, 3)
    paused, resume = threading.Event(), threading.Event()
    messages: list[str] = []

    def pause(step: str) -> None:
        if step == "original moved to the trash" and not paused.is_set():
            paused.set()  # one submission is now only in the work folder
            assert resume.wait(60)

    def run_seal() -> None:
        with store.maintenance():
            seal(store, checkpoint=pause)

    sealer = threading.Thread(target=run_seal)
    sealer.start()
    assert paused.wait(60)
    result = []
    exporter = threading.Thread(
        target=lambda: result.append(
            export_submissions(
                store, tmp_path / "usb", same_disk=True, purge=True, progress=messages.append
            )
        )
    )
    exporter.start()
    while not messages:
        time.sleep(0.01)
    assert messages[0].startswith("waiting for a running seal")
    resume.set()
    sealer.join(60)
    exporter.join(60)
    [report] = result
    assert report.ok and sorted(report.purged) == sorted(ids)
    assert store.ids() == []
    exported = SubmissionStore(tmp_path / "usb")
    for submission_id in ids:
        open_submission(exported.path(submission_id), [identity])


def test_purge_after_a_seal_removes_the_sealed_copy(
    tmp_path: Path, identity: X25519Identity
) -> None:
    store = make_store(tmp_path / "data")
    ids = arrive(store, identity, 2)
    with store.maintenance():
        seal(store)
    report = export_submissions(store, tmp_path / "usb", same_disk=True, purge=True)
    assert sorted(report.purged) == sorted(ids) and store.ids() == []


def test_seal_command_reports_and_refuses_a_wrong_folder(
    tmp_path: Path, identity: X25519Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    store = make_store(tmp_path / "data")
    arrive(store, identity, 2)
    env = {"PORTAL_DATA_DIR": str(store.root), "PORTAL_MIN_FREE_MB": "0"}
    assert cli_main(["seal"], env=env) == 0
    assert "2 submission(s) rewritten" in capsys.readouterr().out
    assert cli_main(["seal"], env={"PORTAL_DATA_DIR": str(tmp_path / "nowhere")}) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PORTAL_DATA_DIR" in err[0]


# --- SIGKILL at every step, in a real process ---------------------------------

_KILL_AT_STEP = """
import os, signal, sys
from pathlib import Path
from portal.server.seal import seal
from portal.server.store import SubmissionStore

target = int(sys.argv[2])
count = 0

def checkpoint(step):
    global count
    count += 1
    if count == target:
        os.kill(os.getpid(), signal.SIGKILL)

store = SubmissionStore(Path(sys.argv[1]))
with store.maintenance():
    seal(store, checkpoint=checkpoint)
print(count)
"""


def _run_seal_process(data: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _KILL_AT_STEP, str(data), str(kill_at)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_complete(
    store: SubmissionStore, identity: X25519Identity, expected: Mapping[str, object]
) -> None:
    assert store.ids() == sorted(expected)
    assert sorted(os.listdir(store.submissions_dir)) == sorted(expected), "stray entries"
    for submission_id, contents in expected.items():
        assert open_submission(store.path(submission_id), [identity]) == contents
    assert not (store.root / WORK_DIR).exists()


@pytest.mark.slow
def test_sigkill_at_every_step_of_the_seal_loses_nothing(
    tmp_path: Path, identity: X25519Identity
) -> None:
    template = make_store(tmp_path / "template")
    ids = arrive(template, identity, 3)
    expected = {i: open_submission(template.path(i), [identity]) for i in ids}
    dry = tmp_path / "dry"
    shutil.copytree(template.root, dry)
    finished = _run_seal_process(dry, kill_at=0)
    assert finished.returncode == 0, finished.stderr
    steps = int(finished.stdout)
    assert steps >= 3 * 4  # copies, completions, trash, deletion, swap, ...
    for kill_at in range(1, steps + 1):
        data = tmp_path / f"kill-{kill_at}"
        shutil.copytree(template.root, data)
        killed = _run_seal_process(data, kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
        store = SubmissionStore(data)
        # Recovery happens at the next start, or at the next seal.
        if kill_at % 2:
            store.initialise()  # the server's start-up: the store, then the seal's recovery
            recover_if_idle(store)
        else:
            with store.maintenance():
                seal(store)
        _assert_complete(store, identity, expected)
        shutil.rmtree(data)


@pytest.mark.slow
def test_sigkill_at_random_moments_of_a_large_seal_loses_nothing(
    tmp_path: Path, identity: X25519Identity
) -> None:
    store = make_store(tmp_path / "data")
    for number in range(12):
        submit(store, [identity], f"t{number}", [("v.bin", os.urandom(2_000_000))])
    expected = {i: open_submission(store.path(i), [identity]) for i in store.ids()}
    rng = random.Random(8)

    def start_seal() -> tuple[subprocess.Popen[bytes], float]:
        process = subprocess.Popen(
            [sys.executable, "-m", "portal.server.cli", "seal", "--all"],
            cwd=REPO,
            env={**os.environ, "PORTAL_DATA_DIR": str(store.root), "PORTAL_MIN_FREE_MB": "0"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not (store.root / WORK_DIR).exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the seal never started"
            time.sleep(0.001)
        return process, time.monotonic()

    # How long a whole seal takes here, from its visible start: the kills are
    # drawn inside that span, so they land during the seal on a fast disk
    # and on a slow one alike.
    process, started = start_seal()
    assert process.wait(120) == 0
    span = time.monotonic() - started
    _assert_complete(store, identity, expected)
    interrupted = 0
    for _attempt in range(12):
        process, _started = start_seal()
        time.sleep(rng.uniform(0, 0.8 * span))
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        interrupted += (store.root / WORK_DIR).exists()
        store.initialise()  # the server's start-up: the store, then the seal's recovery
        recover_if_idle(store)
        _assert_complete(store, identity, expected)
        if interrupted >= 4:
            break
    assert interrupted >= 1, f"no kill landed during a seal (a whole seal took {span:.3f} s)"


@pytest.mark.parametrize(
    ("raw", "parsed"), [("04:00", (4, 0)), ("23:59", (23, 59)), ("7:05", (7, 5)), ("off", None)]
)
def test_seal_time_setting(raw: str, parsed: tuple[int, int] | None) -> None:
    assert Config.from_env({"PORTAL_SEAL_TIME": raw}).seal_time == parsed


@pytest.mark.parametrize("raw", ["4", "24:00", "04:60", "noon", "04:00:00"])
def test_a_bad_seal_time_is_one_clear_line(raw: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check"], env={"PORTAL_SEAL_TIME": raw}) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "PORTAL_SEAL_TIME" in line and "HH:MM" in line


def test_next_seal_is_the_next_daily_slot() -> None:
    at = dt.datetime(2026, 11, 29, 3, 59, 59, tzinfo=dt.UTC)
    assert next_seal(at, (4, 0)) == dt.datetime(2026, 11, 29, 4, 0, tzinfo=dt.UTC)
    at = dt.datetime(2026, 11, 29, 4, 0, tzinfo=dt.UTC)
    assert next_seal(at, (4, 0)) == dt.datetime(2026, 11, 30, 4, 0, tzinfo=dt.UTC)


def test_a_server_that_missed_the_seal_time_seals_soon_after_start() -> None:
    now = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)
    # Sealed yesterday at 04:00, off at 04:00 today: due at once.
    assert first_due(now, now - dt.timedelta(hours=30), (4, 0)) == now
    # Sealed today at 04:00: next is tomorrow.
    tomorrow = dt.datetime(2026, 11, 30, 4, 0, tzinfo=dt.UTC)
    assert first_due(now, now - dt.timedelta(hours=6), (4, 0)) == tomorrow
    # Set up at 09:00 today, never sealed: the first seal is tomorrow's.
    assert first_due(now, now - dt.timedelta(hours=1), (4, 0)) == tomorrow


@pytest.mark.slow  # a real server
def test_real_server_catches_up_a_missed_seal(
    tmp_path: Path, identity: X25519Identity, identity_file: Path
) -> None:
    data = tmp_path / "server" / "data"
    store = make_store(data)
    ids = arrive(store, identity, 3)
    two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    (data / STATE_FILE).write_text(two_days_ago.strftime("%Y-%m-%dT%H:%M:%SZ\n"))
    started = time.time()
    server = start_server(
        tmp_path / "server",
        str(identity.recipient),
        identity_file,
        data_dir=data,
        env={"PORTAL_STAGING_SWEEP_SECONDS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while last_seal_start(store) == two_days_ago.replace(microsecond=0):
            assert time.monotonic() < deadline, f"no catch-up seal:\n{server.log()}"
            time.sleep(0.2)
        for submission_id in ids:
            assert (store.path(submission_id) / "testimony.age").stat().st_ctime >= started
            open_submission(store.path(submission_id), [identity])
    finally:
        server.stop()


def test_an_interrupted_seal_puts_everything_back_at_once(
    tmp_path: Path, identity: X25519Identity
) -> None:
    store = make_store(tmp_path / "data")
    ids = arrive(store, identity, 3)
    expected = {i: open_submission(store.path(i), [identity]) for i in ids}

    def interrupt(step: str) -> None:
        if step == "original moved to the trash":
            raise KeyboardInterrupt

    with store.maintenance(), pytest.raises(KeyboardInterrupt):
        seal(store, checkpoint=interrupt)
    _assert_complete(store, identity, expected)


def test_seal_leaves_the_witnesses_disk_reserve_alone(
    tmp_path: Path, identity: X25519Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(tmp_path / "data")
    ids = arrive(store, identity, 2)
    yesterday = day_timestamp() - 86400
    for submission_id in ids:  # they arrived yesterday
        for path in store.files(submission_id):
            os.utime(path, (yesterday, yesterday))
    before = {i: manifest_inodes(store, [i]) for i in ids}
    # Exactly the reserve is free. (Measured free space made this flaky: on a
    # shared disk another process freeing a few KiB let a copy through.)
    free = 100 * 1024 * 1024
    monkeypatch.setattr(store, "free_bytes", lambda: free)
    with store.maintenance():
        report = seal(store, reserve_bytes=free)
    assert sorted(report.not_sealed) == sorted(ids) and report.rewritten == 0
    assert "PORTAL_MIN_FREE_MB" in report.not_sealed[ids[0]]
    assert {i: manifest_inodes(store, [i]) for i in ids} == before  # untouched
    # Older than today's seal, yet the next seal still rewrites them.
    with store.maintenance():
        assert seal(store, reserve_bytes=0).rewritten == 2


def test_without_rename_exchange_the_two_rename_fallback_is_safe(
    tmp_path: Path, identity: X25519Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """File systems without RENAME_EXCHANGE: a crash between the two renames loses nothing."""
    import errno as errno_module

    import portal.server.seal as seal_module

    def no_exchange(first: Path, second: Path) -> None:
        raise OSError(errno_module.EINVAL, "not supported", str(first))

    monkeypatch.setattr(seal_module, "exchange", no_exchange)
    store = make_store(tmp_path / "data")
    ids = arrive(store, identity, 3)
    expected = {i: open_submission(store.path(i), [identity]) for i in ids}
    with store.maintenance():
        report = seal(store)
    assert report.rewritten == 3 and not report.staging_recreated
    _assert_complete(store, identity, expected)

    # Killed right after `submissions/` moved aside: no `submissions/` at all.
    real_rename = os.rename

    def die_after_moving_aside(source: object, target: object) -> None:
        real_rename(source, target)  # type: ignore[arg-type]
        if Path(str(target)).name == "old":
            raise SystemExit("killed")

    monkeypatch.setattr(os, "rename", die_after_moving_aside)
    monkeypatch.setattr(seal_module, "recover_interrupted_seal", lambda _store: False)
    with store.maintenance(), pytest.raises(SystemExit):
        seal(store, everything=True)
    monkeypatch.undo()
    assert not store.submissions_dir.exists()
    store.initialise()  # the server's start-up: the store, then the seal's recovery
    recover_if_idle(store)
    _assert_complete(store, identity, expected)
