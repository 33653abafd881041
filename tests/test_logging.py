"""Nothing identifying in any log or file, at any log level, gunicorn's own log included."""

from __future__ import annotations

import http.client
import logging
import re
import socket
import sys
import time
from pathlib import Path

import pytest

from portal.server.appserver import SafeFormatter, redact, safe_traceback
from portal.server.store import SubmissionStore
from portal.testing.live import Client, LiveServer, MultipartBody, open_submission

MARKER = "Qz7mark"  # every marker below contains it, so one scan finds them all
MARKER_UA = f"Mozilla/5.0 {MARKER}Agent/1.0"
MARKER_XFF = "203.0.113.77"  # TEST-NET-3: documentation only
MARKER_REFERER = f"http://{MARKER}referer.example/page"
# The client connects from its own loopback address, so that the client's
# real IP address is a marker too.
CLIENT_IP = "127.77.0.9"
TIMESTAMP = re.compile(r"\d{2}:\d{2}:\d{2}")


def record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 1, msg, args, exc_info)


def raise_with(message: str) -> BaseException:
    try:
        try:
            int(message)
        except ValueError as inner:
            raise RuntimeError(f"while parsing {message}") from inner
    except RuntimeError as exc:
        return exc
    raise AssertionError("unreachable")


def test_formatter_drops_exception_messages_but_keeps_the_location() -> None:
    exc = raise_with(f"secret testimony {MARKER}")
    gunicorn_line = record("Error handling request %s %s", "POST", "/submit?a=b", exc=exc)
    text = SafeFormatter().format(gunicorn_line)
    assert MARKER not in text and "secret" not in text and "a=b" not in text
    assert "builtins.ValueError" in text and "builtins.RuntimeError" in text
    assert "raise_with" in text and "test_logging.py" in text
    assert not TIMESTAMP.search(text)


def test_formatter_removes_addresses_request_lines_and_raw_bytes() -> None:
    formatter = SafeFormatter()
    cases = [
        record(f"Invalid request from ip=198.51.100.4: Invalid HTTP Header: '{MARKER}'"),
        record("Ignored premature client disconnection. %s", f"No more data after: b'{MARKER}'"),
        record("Closing connection. %s", f"[Errno 104] {MARKER}"),
        record("peer %s and %s said %r", "198.51.100.4", "2001:db8::7", MARKER.encode()),
        record("GET /submit?q=%s", MARKER),
    ]
    for case in cases:
        text = formatter.format(case)
        assert MARKER not in text, text
        assert "198.51.100.4" not in text and "2001:db8::7" not in text, text
    assert redact("Booting worker with pid: 4242") == "Booting worker with pid: 4242"


def test_safe_traceback_follows_the_chain_of_causes() -> None:
    text = safe_traceback(raise_with("42x"))
    assert text.index("builtins.ValueError") < text.index("builtins.RuntimeError")
    assert "42x" not in text


class ClientFrom(Client):
    """A client that connects from a chosen loopback address."""

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            self.host, self.port, timeout=self.timeout, source_address=(CLIENT_IP, 0)
        )


def raw(server: LiveServer, data: bytes, *, read: bool = True) -> bytes:
    with socket.create_connection(
        ("127.0.0.1", server.port), timeout=10, source_address=(CLIENT_IP, 0)
    ) as sock:
        sock.sendall(data)
        return sock.recv(256) if read else b""


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def debug_server(make_server):
    return make_server(
        env={
            "PORTAL_LOG_LEVEL": "debug",
            "PORTAL_ONION_LOCATION": "http://x.onion",
            "PORTAL_ALLOWED_HOSTS": "127.0.0.1",
        },
    )


@pytest.mark.slow
def test_debug_log_and_data_hold_no_address_agent_referrer_or_query(debug_server, identity) -> None:
    server = debug_server
    identifying = {
        "User-Agent": MARKER_UA,
        "X-Forwarded-For": MARKER_XFF,
        "X-Real-IP": MARKER_XFF,
        "Forwarded": f"for={MARKER_XFF}",
        "Referer": MARKER_REFERER,
    }
    client = ClientFrom(server.url)
    for url in (f"/?{MARKER}=query", f"/ko/submit?q={MARKER}", f"/{MARKER}-missing"):
        assert client.request("GET", url, headers=identifying).status in (200, 404)

    # A complete submission, with the identifying headers on every request.
    body = MultipartBody(
        {**client.form_fields(), "testimony": f"I saw it. {MARKER}text"},
        [(f"{MARKER}name.txt", f"file {MARKER}content".encode(), "text/plain")],
    )
    headers = {**identifying, "Content-Type": body.content_type, "Content-Length": str(body.length)}
    response = client.request("POST", f"/submit?{MARKER}=1", body=iter(body), headers=headers)
    assert response.status == 200 and 'class="notice ok"' in response.body

    # Failures of every kind, each carrying markers: a CSRF failure, a
    # malformed request line, a bad header, a broken chunked body, and an
    # upload abandoned half-way.
    csrf = client.request("POST", f"/submit?{MARKER}", body=b"testimony=x", headers=identifying)
    assert csrf.status == 400
    agent = f"User-Agent: {MARKER_UA}\r\nX-Forwarded-For: {MARKER_XFF}\r\n".encode()
    assert b" 400 " in raw(server, f"GET /?{MARKER} HTTP/1.1 junk\r\n\r\n".encode())
    assert b" 400 " in raw(server, b"GET / HTTP/1.1\r\nHost: x\r\n" + agent + b"Bad\x01: v\r\n\r\n")
    chunked = (
        f"POST /submit?{MARKER} HTTP/1.1\r\nHost: x\r\nCookie: {client.cookie}\r\n".encode()
        + agent
        + b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"zz{MARKER}\r\n--b\r\n".encode()
    )
    assert b" 400 " in raw(server, chunked)
    half = (
        f"POST /submit?{MARKER} HTTP/1.1\r\nHost: x\r\nCookie: {client.cookie}\r\n".encode()
        + agent
        + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
        + f'--b\r\nContent-Disposition: form-data; name="testimony"\r\n\r\n{MARKER}'.encode()
    )
    raw(server, half, read=False)
    time.sleep(1)
    assert client.get("/").status == 200
    server.stop()

    log = server.log()
    assert "Booting worker" in log  # the scan reads the real log
    for needle in (MARKER, MARKER_XFF, CLIENT_IP, "ip=", "User-Agent", "referer"):
        assert needle.lower() not in log.lower(), f"{needle!r} found in the server log:\n{log}"
    assert not TIMESTAMP.search(log), "the log carries precise time stamps"

    root = server.log_path.parent
    for path in files_under(root):
        if path == server.identity_file or path.parent.name == "keys":
            continue
        data = path.read_bytes()
        for needle in (MARKER, MARKER_XFF, CLIENT_IP):
            assert needle.encode() not in data, f"{needle!r} found in {path}"

    # The stored submission holds the testimony, and nothing about the request.
    store = SubmissionStore(server.data_dir)
    [submission_id] = store.ids()
    manifest, files = open_submission(store.path(submission_id), [identity])
    assert manifest["fields"] == {"testimony": f"I saw it. {MARKER}text", "consent": "yes"}
    text = repr(manifest)
    for needle in (MARKER_UA, MARKER_XFF, CLIENT_IP, MARKER_REFERER, f"{MARKER}=1"):
        assert needle not in text
    assert list(files.values()) == [f"file {MARKER}content".encode()]
    assert list(store.staging_dir.iterdir()) == []


def test_logging_setup_routes_every_logger_through_the_safe_formatter(monkeypatch) -> None:
    from portal.server.appserver import configure_logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    import threading

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    level = root.level
    try:
        configure_logging("debug")
        assert all(isinstance(h.formatter, SafeFormatter) for h in root.handlers)
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(level)
