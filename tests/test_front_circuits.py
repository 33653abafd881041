"""Limits per Tor circuit on the onion service's own port (PORTAL_ONION_PORT).

Over Tor every client is 127.0.0.1, so nothing keyed on addresses limits
anyone. tor's `HiddenServiceExportCircuitID haproxy` sends a PROXY header
naming the circuit before each stream; nginx's `proxy_protocol` listener
reads it and `limit_conn` / `limit_req` count per circuit. Here the header
is written by hand, as tor writes it, against the real nginx and gunicorn;
tests/test_onion.py does the same through a real private Tor network.
"""

from __future__ import annotations

import http.client
import io
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from portal.core.age import X25519Identity
from portal.core.exitstatus import ExitStatus
from portal.server.cli import main
from portal.server.front import (
    CIRCUIT_BURST,
    CIRCUIT_CONNECTIONS,
    FrontSettings,
    nginx_config,
)
from portal.testing.live import Client, LiveServer, MultipartBody, free_port, hidden_fields
from tests import test_onion
from tests.support import translate


def tor_proxy_header(circuit: int) -> bytes:
    """The PROXY header tor sends for a circuit (tor's manual, HiddenServiceExportCircuitID)."""
    return (
        f"PROXY TCP6 fc00:dead:beef:4dad::{circuit >> 16:x}:{circuit & 0xFFFF:x} ::1 65535 42\r\n"
    ).encode()


class _CircuitConnection(http.client.HTTPConnection):
    circuit = 0

    def connect(self) -> None:
        super().connect()
        self.sock.sendall(tor_proxy_header(self.circuit))


class CircuitClient(Client):
    """The live client, as if its requests came through tor on one circuit."""

    def __init__(self, base_url: str, circuit: int) -> None:
        super().__init__(base_url, timeout=30)
        self.circuit = circuit

    def _connection(self) -> http.client.HTTPConnection:
        conn = _CircuitConnection(self.host, self.port, timeout=self.timeout)
        conn.circuit = self.circuit
        return conn


def _settings(onion_port: int | None) -> FrontSettings:
    return FrontSettings("127.0.0.1", 8080, 10, 60, 1 << 30, 16384, onion_port=onion_port)


def test_without_an_onion_port_the_config_has_no_proxy_listener_and_no_circuit_limits() -> None:
    text = nginx_config(_settings(None), Path("/run/x"), Path("/run/x/app.sock"))
    assert "proxy_protocol" not in text
    assert "limit_conn" not in text and "limit_req" not in text


def test_with_an_onion_port_only_that_listener_reads_the_proxy_header() -> None:
    text = nginx_config(_settings(8081), Path("/run/x"), Path("/run/x/app.sock"))
    listens = [line.strip() for line in text.splitlines() if line.strip().startswith("listen ")]
    assert listens == [
        "listen 127.0.0.1:8080 default_server backlog=4096;",
        "listen 127.0.0.1:8081 proxy_protocol backlog=4096;",
    ]
    assert "limit_req_zone $proxy_protocol_addr " in text
    assert "limit_conn_zone $proxy_protocol_addr " in text


@pytest.fixture
def onion_front(make_server: Callable[..., LiveServer]) -> tuple[LiveServer, int]:
    onion_port = free_port()
    server = make_server(front=True, env={"PORTAL_ONION_PORT": str(onion_port)})
    return server, onion_port


@pytest.mark.slow
def test_one_circuit_is_limited_and_another_is_not(onion_front: tuple[LiveServer, int]) -> None:
    server, onion_port = onion_front
    base = f"http://127.0.0.1:{onion_port}"
    flooder = CircuitClient(base, circuit=0x1A2B3C4D)
    statuses = [flooder.get("/ko/").status for _ in range(CIRCUIT_BURST + 20)]
    assert statuses[: CIRCUIT_BURST + 1] == [200] * (CIRCUIT_BURST + 1)
    assert statuses.count(429) >= 15, statuses
    refused = flooder.get("/ko/")
    assert refused.status == 429
    assert translate("ko", "Too busy right now") in refused.body
    assert "nginx" not in refused.body.lower()

    # Another circuit (a witness) gets the form and submits, at once.
    witness = CircuitClient(base, circuit=7)
    response = witness.submit(
        "다른 회로의 증언입니다.", [("사진.txt", b"evidence", "text/plain")], "ko"
    )
    assert response.status == 200, response.body[:300]
    assert len(list((server.data_dir / "submissions").iterdir())) == 1

    # The plain port is not limited at all: nginx does not count an empty key.
    plain = server.client()
    assert {plain.get("/ko/").status for _ in range(CIRCUIT_BURST + 20)} == {200}
    # Nothing logged names a circuit.
    assert "fc00" not in server.log() and "dead:beef" not in server.log()


def _hold_upload(port: int, circuit: int, cookie: str, fields: dict[str, str]) -> socket.socket:
    """A POST of the form whose body stops half way: it holds one request in progress."""
    body = MultipartBody({**fields, "testimony": "x"}, [])
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /ko/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
        f"Content-Type: {body.content_type}\r\nContent-Length: {body.length + 100_000}\r\n\r\n"
    )
    sock.sendall(tor_proxy_header(circuit) + head.encode() + b"".join(body)[:200])
    return sock


@pytest.mark.slow
def test_one_circuit_holds_at_most_its_share_of_uploads(
    onion_front: tuple[LiveServer, int],
) -> None:
    server, onion_port = onion_front
    base = f"http://127.0.0.1:{onion_port}"
    circuit = 0xBEEF
    opener = CircuitClient(base, circuit)
    page = opener.get("/ko/submit")
    assert page.status == 200 and opener.cookie
    fields = hidden_fields(page.body)
    held = [
        _hold_upload(onion_port, circuit, opener.cookie, fields)
        for _ in range(CIRCUIT_CONNECTIONS - 1)
    ]
    try:
        # nginx counts a request once its headers are read: with one place
        # left, a request on this circuit is served...
        assert CircuitClient(base, circuit).get("/ko/").status == 200
        held.append(_hold_upload(onion_port, circuit, opener.cookie, fields))
        # ...and once every place holds an upload in progress, the next is
        # refused at once (a few tries, well within the request-rate burst).
        statuses: list[int] = []
        for _ in range(10):
            statuses.append(CircuitClient(base, circuit).get("/ko/").status)
            if statuses[-1] == 429:
                break
            time.sleep(0.2)
        assert statuses[-1] == 429 and len(statuses) < CIRCUIT_BURST, statuses
        # A witness on another circuit still gets the form.
        assert CircuitClient(base, 99).get("/ko/submit").status == 200
    finally:
        for sock in held:
            sock.close()


@pytest.mark.slow
def test_a_connection_without_tors_header_gets_no_page(
    onion_front: tuple[LiveServer, int],
) -> None:
    _, onion_port = onion_front
    with socket.create_connection(("127.0.0.1", onion_port), timeout=30) as sock:
        sock.sendall(b"GET /ko/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = sock.recv(65536)
    assert answer == b""


def _serve(tmp_path: Path, argv: list[str], onion_port: str) -> tuple[int, str]:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "recipients.txt").write_text(f"{X25519Identity.generate().recipient}\n")
    env = {
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
        "PORTAL_RECIPIENTS": str(keys / "recipients.txt"),
        "PORTAL_ONION_PORT": onion_port,
    }
    err = io.StringIO()
    status = main(["serve", *argv], env=env, stdout=io.StringIO(), stderr=err)
    return status, err.getvalue()


@pytest.mark.parametrize(
    ("argv", "onion_port", "words"),
    [
        (["--no-front"], "8081", "needs nginx in front"),
        (["--port", "8081"], "8081", "is also --port"),
        ([], "80801", "is not a TCP port"),
        ([], "eighty", "is not a TCP port"),
    ],
)
def test_serve_refuses_an_onion_port_it_cannot_serve_in_one_line(
    tmp_path: Path, argv: list[str], onion_port: str, words: str
) -> None:
    status, err = _serve(tmp_path, argv, onion_port)
    assert status in (ExitStatus.USAGE, ExitStatus.ERROR), err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_the_documented_torrc_points_at_the_documented_onion_port() -> None:
    assert test_onion.documented_onion_port() == 8081
    assert "HiddenServiceExportCircuitID haproxy" in test_onion.documented_torrc()
    docs = test_onion.DEPLOYMENT.read_text("utf-8")
    assert "PORTAL_ONION_PORT=8081" in docs
    assert "HiddenServicePoWDefensesEnabled 1" in test_onion.documented_torrc()
