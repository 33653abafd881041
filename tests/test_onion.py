"""The portal as it is deployed: an onion service on a private Tor network, for real.

One private Tor network on 127.0.0.1 per test session
(`portal.testing.tornet`: 3 authorities, 5 relays, the onion service run
with docs/DEPLOYMENT.md's own torrc, a client), and one
`testimony-portal serve` (nginx and gunicorn) behind it, on the onion port
the torrc points at. A witness here is the live test client through the
client tor's SOCKS port (socks5h: tor resolves the .onion), on its own
circuit. Starting takes 30-60 s, so all of it is `slow`; with CI set, a
missing tor fails.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from portal.server.front import CIRCUIT_BURST, CIRCUIT_CONNECTIONS
from portal.testing.live import RECEIVED_MARKERS, LiveServer, MultipartBody, start_server
from portal.testing.tornet import TorNetwork, first_page, socks_connect, tor_has_pow
from tests.support import REPO, require_front, require_tool, translate, unavailable

pytestmark = pytest.mark.slow

# The tests' private Tor network and portal: ports 27500-27539 (tornet.PORTS_USED).
TOR_BASE_PORT = 27500
PORTAL_PORT = TOR_BASE_PORT + 30
ONION_PORT = TOR_BASE_PORT + 31
DEPLOYMENT = REPO / "docs" / "DEPLOYMENT.md"
TESTIMONY = (
    "2019년 봄, 저는 수용소에서 강제 노동을 목격했습니다. 저도 명령을 전달했습니다. (양파 시험)"
)


def documented_torrc() -> str:
    """The torrc block of docs/DEPLOYMENT.md, section 2, exactly as an operator copies it."""
    text = DEPLOYMENT.read_text("utf-8")
    start = text.index("`/etc/tor/torrc`:\n\n```\n") + len("`/etc/tor/torrc`:\n\n```\n")
    return text[start : text.index("```", start)]


def documented_onion_port() -> int:
    """The onion port the documented torrc points at (PORTAL_ONION_PORT in the docs)."""
    match = re.search(r"^HiddenServicePort 80 127\.0\.0\.1:(\d+)$", documented_torrc(), re.M)
    assert match, "docs/DEPLOYMENT.md's torrc has no HiddenServicePort 80 127.0.0.1:PORT"
    return int(match[1])


@dataclass
class Onion:
    net: TorNetwork
    server: LiveServer
    root: Path
    identity_file: Path


@pytest.fixture(scope="session")
def onion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Onion]:
    """The private Tor network and the portal behind its onion service, once per session."""
    for program in ("tor", "tor-gencert", "ss"):
        require_tool(program)
    require_front()
    if not tor_has_pow():
        unavailable("the installed tor has no proof-of-work module; install tor 0.4.8 or later")
    root = tmp_path_factory.mktemp("onion")
    reviewer = root / "reviewer"
    reviewer.mkdir(mode=0o700)
    identity_file = reviewer / "identity.txt"
    keygen = subprocess.run(
        [
            sys.executable,
            "-m",
            "portal.review.cli",
            "keygen",
            "--no-passphrase",
            "--out",
            str(identity_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    recipient = keygen.stdout.strip().splitlines()[-1]
    net = TorNetwork(root / "tor", TOR_BASE_PORT, documented_torrc(), ONION_PORT)
    server: LiveServer | None = None
    try:
        net.start()
        server = start_server(
            root / "portal",
            recipient,
            identity_file,
            front=True,
            port=PORTAL_PORT,
            env={
                "PORTAL_ONION_PORT": str(ONION_PORT),
                # 127.0.0.1 only for start_server's own readiness probe.
                "PORTAL_ALLOWED_HOSTS": f"{net.hostname},127.0.0.1",
            },
        )
        bootstrap = net.wait_bootstrapped()
        tries, seconds = first_page(net.client("warm-up"), "/ko/")
        (root / "timings.json").write_text(
            json.dumps({"bootstrap_s": bootstrap, "first_page_s": bootstrap + seconds})
        )
        yield Onion(net, server, root, identity_file)
    finally:
        if server is not None:
            server.stop()
        net.stop()


class PortWatcher:
    """Samples `ss` every 20 ms: who is connected to the portal's ports, by process."""

    def __init__(self, ports: tuple[int, ...]) -> None:
        self.ports = ports
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ports = " or ".join(f"dport = :{p} or sport = :{p}" for p in self.ports)
        while not self._stop.is_set():
            out = subprocess.run(
                ["ss", "-tnpH", "state", "established", f"( {ports} )"],
                capture_output=True,
                text=True,
            ).stdout
            self.lines += out.splitlines()
            self._stop.wait(0.02)

    def __enter__(self) -> PortWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def to_port(self, port: int) -> list[tuple[str, str]]:
        """(peer address, process) of each socket seen connected *to* `port`."""
        seen = []
        for line in self.lines:
            fields = line.split()
            local, peer = fields[2], fields[3]
            if peer.endswith(f":{port}"):
                users = re.findall(r'\("([^"]+)",pid=(\d+)', line)
                seen.append((local.rsplit(":", 1)[0], ",".join(f"{n}:{p}" for n, p in users)))
        return seen


def test_a_korean_submission_through_the_onion_is_stored_as_ciphertext_only(
    onion: Onion, tmp_path: Path
) -> None:
    net, server = onion.net, onion.server
    photo = secrets.token_bytes(300_000)
    witness = net.client("witness-korean")
    with PortWatcher((PORTAL_PORT, ONION_PORT)) as watcher:
        response = witness.submit(TESTIMONY, [("사진.jpg", photo, "image/jpeg")], "ko")
    assert response.status == 200, response.body[:400]
    assert any(marker in response.body for marker in RECEIVED_MARKERS)
    assert translate("ko", "Your testimony was received") in response.body

    # Only the onion service's tor connected to the portal, from loopback, and
    # only to the onion port: nothing reached the plain port.
    into_onion_port = watcher.to_port(ONION_PORT)
    assert into_onion_port, "the watcher saw no connection at all"
    # (A socket sampled while it is being closed may show no process.)
    assert {process for _, process in into_onion_port if process} == {f"tor:{net.pid('hs')}"}
    assert {address for address, _ in into_onion_port} == {"127.0.0.1"}
    assert watcher.to_port(PORTAL_PORT) == []

    # Stored: age ciphertext only; neither the text nor the photo in the clear.
    stored = [p for p in (server.data_dir / "submissions").rglob("*") if p.is_file()]
    assert stored
    for path in stored:
        data = path.read_bytes()
        assert data.startswith(b"age-encryption.org/v1\n"), path
        assert TESTIMONY.encode() not in data and photo[:64] not in data
    for path in server.data_dir.rglob("*"):
        if path.is_file():
            assert TESTIMONY.encode() not in path.read_bytes(), path

    # The reviewer's tool opens it: the same text, the same photo.
    out = tmp_path / "opened"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "portal.review.cli",
            "open",
            str(server.data_dir),
            "--identity",
            str(onion.identity_file),
            "--out",
            str(out),
            "--custody",
            str(tmp_path / "custody.jsonl"),
            "--quiet",
        ],
        check=True,
        capture_output=True,
    )
    opened = [
        folder
        for folder in out.iterdir()
        if folder.is_dir() and TESTIMONY in (folder / "testimony.json").read_text("utf-8")
    ]
    assert len(opened) == 1
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in opened[0].rglob("*.jpg")}
    assert hashlib.sha256(photo).hexdigest() in digests
    # The app and its log never saw a circuit's identity.
    assert "fc00" not in server.log()


def test_the_proof_of_work_defence_is_on_and_a_new_circuit_gets_through(onion: Onion) -> None:
    net = onion.net
    assert list(net.log_lines("Service PoW defenses are enabled"))
    before = len(list(net.log_lines("Enqueued rendezvous request with effort")))
    assert net.client(f"pow-{secrets.token_hex(4)}").get("/ko/").status == 200
    after = list(net.log_lines("Enqueued rendezvous request with effort"))
    # The new circuit's rendezvous went through the PoW queue.
    assert len(after) > before


def test_one_circuit_flooding_requests_is_limited_while_another_submits(onion: Onion) -> None:
    net = onion.net
    flood_circuit = f"flood-{secrets.token_hex(4)}"
    first_page(net.client(flood_circuit), "/ko/")  # the circuit is built

    def burst(_: int) -> list[int]:
        client = net.client(flood_circuit)
        return [client.get("/ko/").status for _ in range(25)]

    # 6 at a time: under the torrc's HiddenServiceMaxStreams (20), which
    # would close the whole circuit. Meanwhile a witness on another circuit
    # gets the form and submits.
    with ThreadPoolExecutor(6) as pool:
        batches = pool.map(burst, range(6))
        witness = net.client(f"witness-{secrets.token_hex(4)}")
        text = "회로 제한 중에도 증언을 보냅니다."
        response = witness.submit(text, [("메모.txt", b"note", "text/plain")], "ko")
        statuses = [s for batch in batches for s in batch]
    assert response.status == 200, response.body[:300]
    assert statuses.count(200) >= CIRCUIT_BURST, statuses
    assert statuses.count(429) >= 10, statuses
    assert set(statuses) == {200, 429}, statuses


def test_one_circuit_holding_many_uploads_is_limited_while_another_gets_the_form(
    onion: Onion,
) -> None:
    net = onion.net
    circuit = f"holder-{secrets.token_hex(4)}"
    opener = net.client(circuit)
    page = opener.get("/ko/submit")
    assert page.status == 200 and opener.cookie
    from portal.testing.live import hidden_fields

    body = MultipartBody({**hidden_fields(page.body), "testimony": "x"}, [])
    head = (
        f"POST /ko/submit HTTP/1.1\r\nHost: {net.hostname}\r\nCookie: {opener.cookie}\r\n"
        f"Content-Type: {body.content_type}\r\nContent-Length: {body.length + 100_000}\r\n\r\n"
    ).encode()
    held: list[socket.socket] = []
    try:
        for _ in range(CIRCUIT_CONNECTIONS):
            sock = socks_connect(net.socks_port, net.hostname, 80, circuit, timeout=120)
            sock.sendall(head + b"".join(body)[:200])
            held.append(sock)
        statuses: list[int] = []
        for _ in range(10):
            statuses.append(net.client(circuit).get("/ko/").status)
            if statuses[-1] == 429:
                break
            time.sleep(0.5)
        assert statuses[-1] == 429, statuses
        assert net.client(f"other-{secrets.token_hex(4)}").get("/ko/submit").status == 200
    finally:
        for sock in held:
            sock.close()
