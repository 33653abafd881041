"""Hardening of the real gunicorn server: no software banner, no core dumps, no stray files."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from portal.testing.live import LiveServer, process_tree, sealer_pids

pytestmark = pytest.mark.slow


def raw_headers(server: LiveServer, request: bytes) -> str:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0].decode("latin-1")


def test_no_server_software_is_named(live_server) -> None:
    requests = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /static/style.css HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"HEAD / HTTP/1.0\r\n\r\n",
    ]
    for request in requests:
        head = raw_headers(live_server, request)
        assert head.startswith("HTTP/1."), head
        names = {line.split(":", 1)[0].lower() for line in head.split("\r\n")[1:]}
        assert "server" not in names and "x-powered-by" not in names, head
        assert "gunicorn" not in head.lower() and "werkzeug" not in head.lower(), head
        assert "python" not in head.lower(), head


def test_security_headers_survive_the_real_server(live_server) -> None:
    response = live_server.client().get("/submit")
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_no_process_of_the_server_can_dump_core(live_server) -> None:
    deadline = time.monotonic() + 30
    # The master, two workers, and each worker's sealer (which holds plaintext too).
    while len(pids := process_tree(live_server.process.pid)) < 5:
        assert time.monotonic() < deadline, f"workers and sealers did not start: {pids}"
        time.sleep(0.1)
    assert len(sealer_pids(live_server.process.pid)) == 2, pids
    for pid in pids:
        limits = Path(f"/proc/{pid}/limits").read_text()
        [line] = [row for row in limits.splitlines() if row.startswith("Max core file size")]
        assert line.split()[4:6] == ["0", "0"], line


def test_server_writes_only_its_data_directory(live_server) -> None:
    assert live_server.client().submit("a testimony").status == 200
    root = live_server.log_path.parent
    written = {
        p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_file() or p.is_socket()
    }
    # keys/ and the log are the test's own; no control socket, no temp files.
    assert written <= {"data", "keys", live_server.log_path.name}, written
    assert list(live_server.tmp_dir.iterdir()) == []
