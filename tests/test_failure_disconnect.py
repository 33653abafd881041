"""A client that goes away mid-upload leaves nothing behind, and the server carries on."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from portal.server.store import SubmissionStore
from portal.server.web.body_guard import GuardedInputMiddleware
from portal.testing.live import LiveServer, MultipartBody, csrf_token

pytestmark = pytest.mark.slow


def wait_for(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def staged(data_dir: Path) -> list[Path]:
    return list((data_dir / "staging").iterdir())


def start_upload(server: LiveServer, *, chunked: bool) -> socket.socket:
    """Send the headers and half of a 4 MiB file, then stop, leaving the socket open."""
    client = server.client()
    token = client.csrf_token()
    body = MultipartBody(
        {"csrf_token": token, "consent": "yes", "testimony": "cut off"},
        [("video.mp4", os.urandom(4 << 20), "video/mp4")],
    )
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {body.length}"
    head = (
        f"POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {client.cookie}\r\n"
        f"Content-Type: {body.content_type}\r\n{framing}\r\n\r\n"
    ).encode()
    payload = b"".join(body)[: 2 << 20]
    if chunked:
        payload = b"".join(
            b"%x\r\n%s\r\n" % (len(payload[i : i + 65536]), payload[i : i + 65536])
            for i in range(0, len(payload), 65536)
        )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(head + payload)
    return sock


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_client_gone_mid_upload_leaves_nothing(live_server, chunked, how) -> None:
    sock = start_upload(live_server, chunked=chunked)
    # The upload really was being stored (as ciphertext) when the client left.
    assert wait_for(lambda: staged(live_server.data_dir)), "the upload never reached staging"
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    assert wait_for(lambda: not staged(live_server.data_dir)), "staging was not cleaned"
    assert SubmissionStore(live_server.data_dir).ids() == []
    # The server is healthy and takes the next testimony.
    response = live_server.client().submit("after the cut", [("a.txt", b"whole", "text/plain")])
    assert response.status == 200
    assert len(SubmissionStore(live_server.data_dir).ids()) == 1


def test_stalled_upload_is_dropped_and_leaves_nothing(config, make_app) -> None:
    """A client that stops sending (but keeps the connection) cannot hold a worker for ever.

    In-process, with the body read from a real socket as gunicorn does, and
    the stall timeout shortened from five minutes to half a second.
    """
    app = make_app()
    guard = app.wsgi_app
    while not isinstance(guard, GuardedInputMiddleware):
        guard = guard.wsgi_app
    guard.stall_timeout = 0.5
    client = app.test_client()
    page = client.get("/submit").get_data(as_text=True)
    multipart = MultipartBody(
        {"csrf_token": csrf_token(page), "consent": "yes", "testimony": "stalled"},
        [("video.mp4", os.urandom(1 << 20), "video/mp4")],
    )
    body = b"".join(multipart)
    server_end, client_end = socket.socketpair()
    client_end.settimeout(10)
    outcome: list[object] = []

    def post() -> None:
        try:
            response = client.post(
                "/submit",
                data=b"",
                content_type=multipart.content_type,
                environ_overrides={
                    "wsgi.input": server_end.makefile("rb"),
                    "CONTENT_LENGTH": str(len(body)),
                    "gunicorn.socket": server_end,
                },
            )
            outcome.append(response.status_code)
        except Exception as exc:  # reported by the assertion below
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=post, daemon=True)
    worker.start()
    try:
        client_end.sendall(body[: len(body) // 2])  # then silence, connection kept open
        worker.join(timeout=20)
        assert outcome == [400], f"the stalled upload was not dropped: {outcome}"
        assert time.monotonic() - started < 10
        assert list((config.data_dir / "staging").iterdir()) == []
        assert SubmissionStore(config.data_dir).ids() == []
    finally:
        client_end.close()
        server_end.close()
