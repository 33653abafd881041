"""Bounded memory for every request body (issue 8, item 3).

Each case sends one 256 MiB body of a kind that once was, or could be, held
in memory whole, to a fresh server (the documented stack, nginx in front),
and measures the peak resident memory (VmHWM) of every process of the
server before and after: no process may grow by 64 MiB or more. The bodies
are four times that bound, so holding one would show.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from portal.core.age import X25519Identity
from portal.testing.live import LiveServer, post_form, start_server

BODY = 256 * 1024 * 1024
BOUND = 64 * 1024 * 1024
PIECE = 1024 * 1024


def _urlencoded() -> Iterator[bytes]:
    yield b"testimony="
    for _ in range(BODY // PIECE):
        yield b"a" * PIECE


def _multipart_one_field() -> Iterator[bytes]:
    yield b'--b\r\nContent-Disposition: form-data; name="testimony"\r\n\r\n'
    for _ in range(BODY // PIECE):
        yield b"a" * PIECE
    yield b"\r\n--b--\r\n"


def _multipart_many_fields() -> Iterator[bytes]:
    # Each field just under Werkzeug's per-field bound (with the default
    # testimony limit: 100,000 characters * 4 bytes + 1 MiB), together far over it.
    field = 1_400_000
    for number in range(BODY // field):
        yield f'--b\r\nContent-Disposition: form-data; name="f{number}"\r\n\r\n'.encode()
        yield b"a" * field + b"\r\n"
    yield b"--b--\r\n"


def _opaque() -> Iterator[bytes]:
    for _ in range(BODY // PIECE):
        yield os.urandom(64) * (PIECE // 64)


CASES = {
    "urlencoded": ("application/x-www-form-urlencoded", _urlencoded),
    "multipart one text field": ("multipart/form-data; boundary=b", _multipart_one_field),
    "multipart many text fields": ("multipart/form-data; boundary=b", _multipart_many_fields),
    "octet-stream": ("application/octet-stream", _opaque),
    "json": ("application/json", _urlencoded),
}


def _processes(server: LiveServer) -> list[int]:
    found, stack = [], [server.process.pid]
    while stack:
        pid = stack.pop()
        found.append(pid)
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return found


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def _send(
    server: LiveServer, content_type: str, make: Callable[[], Iterator[bytes]], chunked: bool
) -> int:
    """Post the body, stopping early if the server answers; the status it gave.

    The request carries the form's session, as a real attempt does: without
    it the portal refuses a submit POST before reading any of its body.
    """
    client = server.client()
    client.form_fields("ko")
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        length = sum(len(piece) for piece in make())
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
        sock.sendall(
            f"POST /ko/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Cookie: {client.cookie}\r\n{framing}\r\n\r\n".encode()
        )
        answer = bytearray()

        def receive() -> None:
            while chunk := sock.recv(65536):
                answer.extend(chunk)
                if b"\r\n\r\n" in answer:
                    return

        reader = threading.Thread(target=receive, daemon=True)
        reader.start()
        try:
            for piece in make():
                if answer:
                    break
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked and not answer:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed before the whole body was sent
        reader.join(timeout=120)
    assert answer, "no answer"
    return int(answer.split()[1])


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("case", list(CASES))
def test_one_huge_body_cannot_grow_the_server_by_64_mib(
    tmp_path: Path, identity: X25519Identity, identity_file: Path, case: str, chunked: bool
) -> None:
    server = start_server(
        tmp_path / "server",
        str(identity.recipient),
        identity_file,
        front=True,
        env={"PORTAL_MAX_UPLOAD_MB": "512"},
    )
    try:
        # Warm up every worker the way a witness would, then measure.
        for _ in range(4):
            assert server.client().get("/ko/submit").status == 200
        pids = _processes(server)
        before = {pid: _peak_rss(pid) for pid in pids}
        content_type, make = CASES[case]
        status = _send(server, content_type, make, chunked)
        growth = {pid: _peak_rss(pid) - before[pid] for pid in pids}
    finally:
        server.stop()
    assert 400 <= status < 500, status
    worst = max(growth.values())
    assert worst < BOUND, f"a process grew by {worst / 2**20:.0f} MiB ({growth})"


def test_urlencoded_text_over_the_form_budget_is_refused_before_it_is_held(client) -> None:
    """In-process: an urlencoded body is read in bounded pieces and refused past the budget."""
    app = client.application
    budget = app.config["MAX_FORM_MEMORY_SIZE"] + 1024 * 1024
    read = []

    class Counting:
        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def read(self, size: int = -1) -> bytes:
            size = len(self.data) - self.pos if size < 0 else size
            piece = self.data[self.pos : self.pos + size]
            self.pos += len(piece)
            read.append(len(piece))
            return piece

    body = b"testimony=" + b"a" * (budget * 4)
    client.get("/submit")  # the form's session: without it the body is never read
    response = client.post(
        "/submit",
        data=b"",
        content_type="application/x-www-form-urlencoded",
        environ_overrides={"wsgi.input": Counting(body), "CONTENT_LENGTH": str(len(body))},
    )
    assert response.status_code == 413
    assert sum(read) < budget + 2 * 1024 * 1024, "the body was read far past the budget"


def test_many_text_fields_share_one_budget(client) -> None:
    """Each field under Werkzeug's per-field bound; together over the request's budget: 413."""
    field = client.application.config["MAX_FORM_MEMORY_SIZE"] - 1024
    data = {f"f{n}": "a" * field for n in range(4)}
    client.get("/submit")  # the form's session: without it the body is never read
    response = client.post("/submit", data=data, content_type="multipart/form-data")
    assert response.status_code == 413


def test_files_do_not_count_against_the_text_budget(client) -> None:
    """Bytes streamed into encrypted attachments are not held; a large file still goes in."""
    import io

    big = os.urandom(8 * 1024 * 1024)
    response = post_form(
        client, {"testimony": "with a file", "attachments": (io.BytesIO(big), "big.bin")}
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
