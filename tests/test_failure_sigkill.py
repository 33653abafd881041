"""SIGKILL during uploads: nothing confirmed is lost, nothing half-written stays.

After the restart: no partial submission exists, staging is swept, every
committed submission opens completely, and every testimony whose witness saw
the "received" page is among them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal.server.store import SubmissionStore
from portal.testing.live import (
    RECEIVED_MARKERS,
    Client,
    MultipartBody,
    open_submission,
    process_tree,
    start_server,
)
from tests.support import birth_time_ns

pytestmark = pytest.mark.slow
CLIENTS = 12


def slow_body(body: MultipartBody, pause: float) -> Iterator[bytes]:
    """The body in small pieces with pauses, as over a slow Tor circuit."""
    for piece in body:
        for i in range(0, len(piece), 32 * 1024):
            yield piece[i : i + 32 * 1024]
            time.sleep(pause)


class Witness(threading.Thread):
    """Submits testimony after testimony until the server goes away."""

    def __init__(self, url: str, number: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.number, self.stop = url, number, stop
        self.confirmed: list[str] = []
        self.attempted = 0

    def run(self) -> None:
        count = 0
        while not self.stop.is_set():
            count += 1
            marker = f"witness-{self.number}-{count}-{secrets.token_hex(4)}"
            files: list[tuple[str, bytes | Path, str]] = []
            if count % 2:
                files = [(f"{marker}.bin", os.urandom(50_000 + 30_000 * self.number), "video/mp4")]
            try:
                client = Client(self.url, timeout=30)
                fields = {**client.form_fields(), "testimony": marker}
                body = MultipartBody(fields, files)
            except (OSError, http.client.HTTPException):
                return  # the server is gone
            self.attempted += 1
            if self.post(client, body):
                self.confirmed.append(marker)

    def post(self, client: Client, body: MultipartBody) -> bool:
        """True if the server answered 200, even if the page itself was cut off.

        A 200 to a POST is only ever sent after the commit, and a browser may
        show a partial page: counting these makes the test stricter.
        """
        conn = http.client.HTTPConnection(client.host, client.port, timeout=30)
        try:
            conn.request(
                "POST",
                "/submit",
                body=slow_body(body, pause=0.002 * (self.number % 4)),
                headers={
                    "Content-Type": body.content_type,
                    "Cookie": client.cookie or "",
                    "Transfer-Encoding": "chunked",
                },
                encode_chunked=True,
            )
            response = conn.getresponse()
        except (OSError, http.client.HTTPException):
            return False
        try:
            page = response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            return response.status == 200
        finally:
            conn.close()
        return response.status == 200 and all(m in page for m in RECEIVED_MARKERS)


def test_sigkill_during_concurrent_uploads_loses_nothing_confirmed(
    tmp_path, identity, identity_file
) -> None:
    root = tmp_path / "server"
    server = start_server(root, str(identity.recipient), identity_file)
    stop = threading.Event()
    witnesses = [Witness(server.url, n, stop) for n in range(CLIENTS)]
    try:
        for witness in witnesses:
            witness.start()
        # Let uploads run until some are confirmed and several are in flight.
        deadline = time.monotonic() + 30
        staging = server.data_dir / "staging"
        while time.monotonic() < deadline:
            done = sum(len(w.confirmed) for w in witnesses)
            if done >= 20 and len(list(staging.iterdir())) >= 2:
                break
            time.sleep(0.01)
        in_flight = len(list(staging.iterdir()))
        for pid in process_tree(server.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        stop.set()
        for witness in witnesses:
            witness.join(timeout=60)
    finally:
        stop.set()
        server.stop()
    confirmed = [marker for w in witnesses for marker in w.confirmed]
    assert len(confirmed) >= 20, "too few submissions completed before the kill"
    assert in_flight >= 1, "no upload was in flight when the server was killed"

    restarted = start_server(
        root, str(identity.recipient), identity_file, data_dir=server.data_dir, log_name="after.log"
    )
    try:
        store = SubmissionStore(restarted.data_dir)
        assert list(store.staging_dir.iterdir()) == [], "staging was not swept at start-up"
        stored = {}
        for submission_id in store.ids():
            manifest, files = open_submission(store.path(submission_id), [identity])
            marker = manifest["fields"]["testimony"]
            stored[marker] = manifest
            for entry in manifest["attachments"]:
                assert entry["name"] == f"{marker}.bin"
        missing = set(confirmed) - set(stored)
        assert not missing, f"{len(missing)} confirmed submissions were lost: {sorted(missing)[:5]}"
        # Nothing but complete submissions is in the data directory.
        entries = {p.name for p in store.submissions_dir.iterdir()}
        assert entries == set(store.ids())
        # And the restarted server takes new testimony.
        assert restarted.client().submit("after the restart").status == 200
    finally:
        restarted.stop()


def _owner_of(folder: Path, pids: list[int]) -> int | None:
    """The process holding an open descriptor on `folder` (its staging lock)."""
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == str(folder):
                        return pid
        except FileNotFoundError:
            continue
    return None


def test_worker_killed_mid_upload_leaves_no_staging_without_a_restart(
    tmp_path, identity, identity_file
) -> None:
    server = start_server(
        tmp_path / "server",
        str(identity.recipient),
        identity_file,
        env={"PORTAL_STAGING_SWEEP_SECONDS": "1"},
    )
    hold = threading.Event()
    try:
        client = server.client()
        body = MultipartBody(
            {"csrf_token": client.csrf_token(), "testimony": "cut off"},
            [("video.mp4", os.urandom(4_000_000), "video/mp4")],
        )

        def first_half_then_wait() -> Iterator[bytes]:
            sent = 0
            for piece in body:
                for i in range(0, len(piece), 64 * 1024):
                    yield piece[i : i + 64 * 1024]
                    sent += 64 * 1024
                    # Past the server's 1 MiB read-ahead, so the file part
                    # has certainly reached staging.
                    if sent > 2_500_000:
                        hold.wait(120)
                        return

        def upload() -> None:
            conn = http.client.HTTPConnection(client.host, client.port, timeout=120)
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn.request(
                    "POST",
                    "/submit",
                    body=first_half_then_wait(),
                    headers={
                        "Content-Type": body.content_type,
                        "Cookie": client.cookie or "",
                        "Transfer-Encoding": "chunked",
                    },
                    encode_chunked=True,
                )
                conn.getresponse().read()
            conn.close()

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        staging = server.data_dir / "staging"
        deadline = time.monotonic() + 60
        while not list(staging.iterdir()):
            assert time.monotonic() < deadline, "the upload never reached staging"
            time.sleep(0.05)
        [folder] = list(staging.iterdir())
        master = server.process.pid
        workers = [pid for pid in process_tree(master) if pid != master]
        # The sweep must leave a live upload alone.
        time.sleep(3)
        assert folder.is_dir(), "the sweep removed the folder of a live upload"
        owner = _owner_of(folder, workers)
        assert owner is not None, "no worker holds the staging folder"
        os.kill(owner, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while folder.exists():
            assert time.monotonic() < deadline, "the dead worker's staging folder was not swept"
            time.sleep(0.1)
        assert server.process.poll() is None and server.process.pid == master
        assert server.client().submit("after the worker died").status == 200
        assert list(staging.iterdir()) == []
        assert len(SubmissionStore(server.data_dir).ids()) == 1
    finally:
        hold.set()
        server.stop()


def test_server_runs_the_daily_seal_itself(tmp_path, identity, identity_file) -> None:
    """The seal time is set to the next minute; the server seals without being asked."""
    at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    if at.second > 50:  # leave time to submit before the seal starts
        at += dt.timedelta(minutes=1)
    server = start_server(
        tmp_path / "server",
        str(identity.recipient),
        identity_file,
        env={"PORTAL_SEAL_TIME": at.strftime("%H:%M"), "PORTAL_STAGING_SWEEP_SECONDS": "1"},
    )
    try:
        markers = [f"before the seal {n}" for n in range(3)]
        for marker in markers:
            assert server.client().submit(marker).status == 200
        store = SubmissionStore(server.data_dir)
        before = {i: (store.path(i) / "testimony.age").stat().st_ino for i in store.ids()}
        first_arrival_ctime = min((store.path(i) / "testimony.age").stat().st_ctime for i in before)
        state = server.data_dir / ".sealed"
        deadline = time.monotonic() + 240
        # The state file is written before the seal logs its line: wait for both.
        done = "seal: 3 submission(s) sealed or published"
        while not (state.exists() and done in server.log()):
            assert time.monotonic() < deadline, f"no seal ran:\n{server.log()}"
            time.sleep(0.5)
        assert sorted(before) == store.ids()
        slot = at.replace(second=0, microsecond=0).timestamp()
        for submission_id in before:
            manifest, _files = open_submission(store.path(submission_id), [identity])
            assert manifest["fields"]["testimony"] in markers
            for path in (store.path(submission_id), *store.files(submission_id)):
                info = path.stat()
                assert info.st_ctime >= slot > first_arrival_ctime, path
                born = birth_time_ns(path)  # None where the file system keeps none
                assert born is None or born >= slot * 1_000_000_000, path
        assert store.submissions_dir.stat().st_ctime >= slot
        assert server.client().submit("after the seal").status == 200
    finally:
        server.stop()
