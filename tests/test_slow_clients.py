"""Slow and silent connections cannot lock witnesses out (issue 8, item 1).

Against the documented stack (nginx in front of gunicorn): a header block
has a deadline that dribbling does not extend; a body that stops moving, or
moves a byte now and then, is dropped and leaves nothing behind; a slow but
steady upload still succeeds; and with a thousand hostile connections open
at once a witness still loads the form and submits in a few seconds.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal.core.age import X25519Identity
from portal.server.front import raise_open_file_limit
from portal.server.store import SubmissionStore
from portal.testing.hostile import KINDS, HostileSwarm
from portal.testing.live import LiveServer, MultipartBody, start_server

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 2
# Ten seconds per 64 KiB is about 6.5 KiB/s: a 20 KB/s upload passes with a
# threefold margin (in production the window is 60 s: an eighteenfold one).
BODY_TIMEOUT = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("slow")
    identity = X25519Identity.generate()
    identity_file = root / "identity.txt"
    identity_file.write_text(f"{identity}\n")
    server = start_server(
        root / "server",
        str(identity.recipient),
        identity_file,
        front=True,
        serve_args=["--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)],
    )
    try:
        yield server
    finally:
        server.stop()


def _closed_after(sock: socket.socket, send_every: float | None, limit: float) -> float | None:
    """Seconds until the server answered or closed, dribbling a byte every `send_every`."""
    started = time.monotonic()
    sock.settimeout(send_every or 1.0)
    while time.monotonic() - started < limit:
        try:
            if sock.recv(65536) is not None:
                return time.monotonic() - started
        except TimeoutError:
            pass
        except OSError:
            return time.monotonic() - started
        if send_every is not None:
            try:
                sock.send(b"a")
            except OSError:
                return time.monotonic() - started
    return None


@pytest.mark.parametrize("dribble", [False, True], ids=["silent", "dribbling"])
def test_a_header_block_must_arrive_within_the_deadline(server: LiveServer, dribble: bool) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /ko/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
        # A byte every 0.3 s would keep a per-read timeout alive for ever.
        waited = _closed_after(sock, 0.3 if dribble else None, limit=HEADER_TIMEOUT * 10)
    assert waited is not None, "the server kept an unfinished header block open"
    assert waited >= HEADER_TIMEOUT * 0.5


def _stalled_post(server: LiveServer) -> socket.socket:
    client = server.client()
    body = MultipartBody(
        {**client.form_fields("ko"), "testimony": "slow"},
        [("v.bin", os.urandom(1 << 20), "application/octet-stream")],
    )
    head = (
        f"POST /ko/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {client.cookie}\r\n"
        f"Content-Type: {body.content_type}\r\nContent-Length: {body.length}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(head + b"".join(body)[:100_000])
    return sock


@pytest.mark.parametrize("dribble", [False, True], ids=["silent", "dribbling"])
def test_a_body_that_stops_moving_is_dropped_and_leaves_nothing(
    server: LiveServer, dribble: bool
) -> None:
    before = set(SubmissionStore(server.data_dir).ids())
    with _stalled_post(server) as sock:
        waited = _closed_after(sock, 1.0 if dribble else None, limit=BODY_TIMEOUT * 6)
    assert waited is not None, "a body that made no progress was kept open"
    assert waited >= BODY_TIMEOUT * 0.5
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any((server.data_dir / "staging").iterdir()):
        time.sleep(0.2)
    assert not any((server.data_dir / "staging").iterdir()), "staging was not cleaned"
    assert set(SubmissionStore(server.data_dir).ids()) == before


def test_a_slow_but_steady_upload_succeeds(server: LiveServer) -> None:
    """20 KB/s, the speed of a poor Tor circuit, for longer than several windows."""
    client = server.client()
    attachment = os.urandom(20_000 * BODY_TIMEOUT * 3)
    body = MultipartBody(
        {**client.form_fields("ko"), "testimony": "천천히"},
        [("slow.bin", attachment, "application/octet-stream")],
    )

    def at_20_kb_per_second() -> Iterator[bytes]:
        data = b"".join(body)
        for start in range(0, len(data), 2000):
            yield data[start : start + 2000]
            time.sleep(0.1)

    response = client.request(
        "POST",
        "/ko/submit",
        body=at_20_kb_per_second(),
        headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
    )
    assert response.status == 200, response.body
    assert 'class="notice ok"' in response.body


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def _app_threads(server: LiveServer) -> int:
    """Threads in every process of the server (the gunicorn workers hold one per body)."""
    total = 0
    stack = [server.process.pid]
    while stack:
        pid = stack.pop()
        try:
            total += _threads(pid)
            for task in Path(f"/proc/{pid}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return total


def test_a_witness_gets_through_a_thousand_hostile_connections(
    tmp_path: Path, identity: X25519Identity, identity_file: Path
) -> None:
    raise_open_file_limit(8192)
    server = start_server(
        tmp_path / "server",
        str(identity.recipient),
        identity_file,
        front=True,
        serve_args=["--header-timeout", "10", "--body-timeout", "30"],
    )
    try:
        idle_threads = _app_threads(server)
        with HostileSwarm("127.0.0.1", server.port, 1000, KINDS, interval=2.0) as swarm:
            # Let every connection get as far as it can: the body-phase ones
            # reach gunicorn and each hold a worker thread.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _app_threads(server) < idle_threads + 400:
                time.sleep(0.5)
            held = _app_threads(server) - idle_threads
            assert swarm.open >= 950, f"only {swarm.open} hostile connections open"
            assert held >= 400, f"the body-phase attackers hold only {held} threads"

            client = server.client()
            client.timeout = 60
            started = time.monotonic()
            token = client.csrf_token("ko")
            loaded = time.monotonic() - started
            started = time.monotonic()
            response = client.submit("공격 중에도", lang="ko", token=token)
            submitted = time.monotonic() - started
            still_open = swarm.open
        assert response.status == 200, response.body
        assert 'class="notice ok"' in response.body
        # "A few seconds": generous for a loaded two-core machine; a lockout
        # shows as a wait of the whole body timeout (30 s) or for ever.
        assert loaded < 10, f"the form took {loaded:.1f} s to load"
        assert submitted < 10, f"the submission took {submitted:.1f} s"
        assert still_open >= 950
        assert len(SubmissionStore(server.data_dir).ids()) == 1
    finally:
        server.stop()
