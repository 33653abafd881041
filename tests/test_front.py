"""The documented stack (nginx in front of gunicorn), at the protocol level.

Everything here talks to a real `testimony-portal serve` on loopback over
raw sockets: the server's own answers to malformed requests carry the
portal's security headers and name no software, odd framings are refused
at once, the witness's plaintext never reaches a disk through the proxy,
and the proxy and the app server live and die together.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from portal.core.age import X25519Identity
from portal.server.front import nginx_log_record
from portal.server.web.security import STATIC_HEADERS
from portal.testing.live import LiveServer, MultipartBody, csrf_token
from tests import test_invariants_server as invariants

# Malformed or unsupported requests the server answers itself, with the
# status it must give. The 2^64 chunk size must fail at once, not after a
# five-minute read timeout.
PROTOCOL_ERRORS = {
    "bad request line": (b"GARBAGE\r\n\r\n", 400),
    "long URI": (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "huge header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    "gzip, chunked": (
        b"POST /ko/submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        501,
    ),
    "chunk of 2^64": (
        b"POST /submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n10000000000000000\r\nabc",
        400,
    ),
    "control bytes in a header": (b"GET /ko/ HTTP/1.1\r\nHost: x\r\nX-A: \x01\x02\r\n\r\n", 400),
    # nginx refuses these itself, before any location: they used to get its
    # own pages (no security headers, "nginx" in the body).
    "TRACE": (b"TRACE /ko/ HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "CONNECT": (b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "HTTP/2.0 request line": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    "internal error folder": (
        b"GET /.portal-error/en/get/400.html HTTP/1.1\r\nHost: x\r\n\r\n",
        404,
    ),
}


def exchange(server: LiveServer, request: bytes, timeout: float = 30) -> tuple[int, str, bytes]:
    """Send raw bytes; the status, the header block (lower case) and the body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        text = head.decode("latin-1").lower()
        length = next(
            (
                int(line.split(":")[1])
                for line in text.split("\r\n")
                if line.startswith("content-length:")
            ),
            None,
        )
        while length is not None and len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(text.split()[1]), text, body


def assert_safe_answer(head: str, body: bytes) -> None:
    for name, value in STATIC_HEADERS.items():
        assert f"{name.lower()}: {value.lower()}" in head, f"{name} missing:\n{head}"
    names = [line.split(":")[0] for line in head.split("\r\n")[1:]]
    assert "server" not in names and "x-powered-by" not in names, head
    for software in (b"nginx", b"gunicorn", b"werkzeug", b"python"):
        assert software not in body.lower(), f"{software!r} named in the page"


@pytest.mark.parametrize("case", list(PROTOCOL_ERRORS))
def test_front_answers_malformed_requests_safely(front_server: LiveServer, case: str) -> None:
    request, status = PROTOCOL_ERRORS[case]
    got, head, body = exchange(front_server, request)
    assert got == status, head
    assert_safe_answer(head, body)
    assert b"<html" in body


@pytest.mark.parametrize(
    "case", ["bad request line", "long URI", "huge header", "control bytes in a header"]
)
def test_bare_gunicorn_answers_malformed_requests_safely(
    live_server: LiveServer, case: str
) -> None:
    """gunicorn's own error pages (used when it runs alone) carry the same headers."""
    request, _ = PROTOCOL_ERRORS[case]
    got, head, body = exchange(live_server, request)
    assert 400 <= got < 500, head
    assert_safe_answer(head, body)
    assert b"a" * 100 not in body and b"\x01" not in body, "the page quotes the request"


def test_gunicorn_takes_the_rest_of_a_body_after_an_early_answer(
    front_server: LiveServer,
) -> None:
    """nginx gets to read an early answer (here a 400): gunicorn does not close on it at once.

    gunicorn answers a refused form on its headers alone while nginx still
    sends the body. Had gunicorn closed then, nginx's next write would fail,
    and if that came before nginx had read the answer, the witness would get
    a 503 instead (once in a few hundred under load). So gunicorn takes the
    rest of the body until nginx, answer in hand, closes; here a client on
    its socket plays nginx and sends 1 MiB more without reading, far past the
    128 KiB gunicorn 27 takes by itself.
    """
    config = next(front_server.tmp_dir.glob("testimony-portal-*/nginx.conf")).read_text()
    match = re.search(r"server unix:(\S+);", config)
    assert match is not None, "no upstream socket in nginx.conf"
    upstream = match.group(1)
    # The Connection header nginx passes on, as its configuration sets it.
    passed = re.search(r'proxy_set_header Connection "?([^";]*)"?;', config)
    connection = (
        f"Connection: {passed.group(1)}\r\n".encode() if passed and passed.group(1) else b""
    )
    piece = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(upstream)
        sock.sendall(
            b"POST /ko/submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/octet-stream\r\n" + connection + b"\r\n"
        )
        for _ in range(16):
            sock.sendall(piece)  # BrokenPipeError: gunicorn closed with the body unread
        sock.sendall(b"0\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_front_error_page_speaks_the_witness_language(front_server: LiveServer) -> None:
    status, head, body = exchange(front_server, PROTOCOL_ERRORS["gzip, chunked"][0])
    assert status == 501
    page = body.decode("utf-8")
    assert '<html lang="ko"' in page
    # The POST variant: the witness is told, in Korean, that nothing was saved.
    assert "증언이 저장되지 않았습니다." in page


def test_refused_framings_never_reach_the_app(front_server: LiveServer) -> None:
    for case in ("gzip, chunked", "chunk of 2^64"):
        exchange(front_server, PROTOCOL_ERRORS[case][0])
    assert not any((front_server.data_dir / "submissions").iterdir())
    # nginx refused them itself (its log line reaches ours within a second),
    # and gunicorn never saw a malformed request.
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline and "client sent invalid chunked body" not in front_server.log()
    ):
        time.sleep(0.1)
    assert "client sent invalid chunked body" in front_server.log()
    assert "rejected a malformed HTTP request" not in front_server.log()


def test_no_server_header_on_app_pages_through_the_front(front_server: LiveServer) -> None:
    response = front_server.client().get("/ko/submit")
    assert response.status == 200
    assert "server" not in response.headers
    for name, value in STATIC_HEADERS.items():
        assert response.headers[name.lower()] == value


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found.append(int(child))
            found.extend(_descendants(int(child)))
    return found


def _nginx_pids(server: LiveServer) -> list[int]:
    pids = []
    for pid in _descendants(server.process.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "nginx":
                pids.append(pid)
        except FileNotFoundError:
            continue
    return pids


def _open_files(pids: list[int]) -> list[str]:
    targets = []
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    targets.append(os.readlink(fd))
                except OSError:
                    continue
        except FileNotFoundError:
            continue
    return targets


@pytest.mark.slow
def test_no_request_body_is_ever_buffered_to_a_file_by_the_proxy(
    front_server: LiveServer,
) -> None:
    """A slow 5 MB upload through nginx: no nginx process ever has a regular file open.

    nginx unlinks its temporary files at once, so looking for them on disk
    afterwards proves nothing; their open descriptors, watched during the
    upload, and nginx's own warning do.
    """
    nginx = _nginx_pids(front_server)
    assert len(nginx) >= 2, "nginx master and worker not found"
    client = front_server.client()
    body = MultipartBody(
        {**client.form_fields(), "testimony": "through the proxy"},
        [("big.bin", os.urandom(5 * 1024 * 1024), "application/octet-stream")],
    )
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.extend(t for t in _open_files(nginx) if t.startswith("/") and "/dev/" not in t)
            time.sleep(0.01)

    def slow_parts() -> object:
        for piece in body:
            for start in range(0, len(piece), 256 * 1024):
                yield piece[start : start + 256 * 1024]
                time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        response = client.request(
            "POST",
            "/submit",
            body=slow_parts(),  # type: ignore[arg-type]
            headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
        )
    finally:
        done.set()
        watcher.join()
    assert response.status == 200, response.body
    files = {t for t in seen if not t.startswith(("socket:", "pipe:", "anon_inode:"))}
    assert not files, f"nginx opened files during the upload: {files}"
    assert "buffered to a temporary file" not in front_server.log()


@pytest.mark.slow
def test_plaintext_never_reaches_disk_through_the_front_proxy(
    front_server: LiveServer, tmp_path: Path
) -> None:
    """The markers test of the design invariants, through nginx (its folders are in TMPDIR)."""
    invariants.test_plaintext_never_reaches_disk_and_every_oracle_opens_it(front_server, tmp_path)


def test_nginx_log_lines_lose_time_address_and_request() -> None:
    line = (
        "2026/11/29 17:40:01 [error] 812#812: *5 connect() failed (111: Connection refused) "
        'while connecting to upstream, client: 127.0.0.1, server: _, request: "POST /ko/submit '
        'HTTP/1.1", upstream: "http://unix:/tmp/x/app.sock:/ko/submit", host: "abc.onion"'
    )
    level, message = nginx_log_record(line)
    assert level == logging.ERROR
    assert message == "connect() failed (111: Connection refused) while connecting to upstream"
    level, message = nginx_log_record("nginx: [emerg] bind() to 127.0.0.1:1 failed (13: denied)")
    assert level == logging.CRITICAL and message.startswith("bind()")


@pytest.mark.slow
def test_serve_stops_with_a_clear_line_when_the_port_is_taken(
    tmp_path: Path, identity: X25519Identity
) -> None:
    keys = tmp_path / "recipients.txt"
    keys.write_text(f"{identity.recipient}\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TMPDIR": str(tmp_path),
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
        "PORTAL_RECIPIENTS": str(keys),
        "PORTAL_MIN_FREE_MB": "0",
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "portal.server.cli", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("testimony-portal: the front proxy (nginx) could not start on")
    assert "Traceback" not in done.stderr
    # Nothing of the failed start is left in TMPDIR.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("testimony-portal-")]


def test_proxy_and_app_server_stop_together(front_server: LiveServer) -> None:
    """If nginx dies the whole server stops (non-zero), leaving no process behind."""
    children = _descendants(front_server.process.pid)
    [master] = [p for p in _nginx_pids(front_server) if p in children and _is_master(p)]
    os.kill(master, signal.SIGKILL)
    assert front_server.process.wait(timeout=90) == 1
    assert "front proxy (nginx) stopped" in front_server.log()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"process {pid} left behind"


def test_terminating_serve_stops_every_process(front_server: LiveServer) -> None:
    children = _descendants(front_server.process.pid)
    assert children
    front_server.stop()
    assert front_server.process.returncode == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in children):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}").exists() and not _is_zombie(p) for p in children)


def _is_master(pid: int) -> bool:
    return "master" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_submission_through_the_front_is_stored(front_server: LiveServer) -> None:
    client = front_server.client()
    page = client.get("/ko/submit")
    assert csrf_token(page.body)
    response = client.submit("증언 " + secrets.token_hex(4), lang="ko", chunked=True)
    assert response.status == 200 and 'class="notice ok"' in response.body
    assert len(list((front_server.data_dir / "submissions").iterdir())) == 1
