"""The attacks of issue 19 and a witness who keeps submitting through them.

Each attacker runs in its own threads until `stop()`; each counts what it
sent and what the server did with it. `Witness` loads `/ko/` and submits the
form every `interval` seconds, timing every request: under each attack,
every submission must be stored and every answer come within two seconds.
Shared by tests/test_attacks.py and `bench/load.py --attack`.
"""

from __future__ import annotations

import contextlib
import os
import random
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlencode

from portal.core.receipt import new_receipt
from portal.testing.live import RECEIVED_MARKERS, Client, MultipartBody, csrf_token, form_fields


@dataclass
class Round:
    """One round of the witness: the landing page, the form, the submission."""

    statuses: list[int]
    seconds: list[float]
    stored: bool
    error: str = ""

    @property
    def slowest(self) -> float:
        return max(self.seconds)


class Witness:
    """Loads /ko/ and submits the form every `interval` seconds, in a thread of its own."""

    def __init__(self, url: str, interval: float = 2.0, timeout: float = 60.0) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.rounds: list[Round] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="witness", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[Round]:
        self._stop.set()
        self._thread.join(timeout=self.timeout * 3 + 10)
        return self.rounds

    def _run(self) -> None:
        number = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.rounds.append(self._round(number))
            number += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _round(self, number: int) -> Round:
        client = Client(self.url, timeout=self.timeout)
        statuses = [0, 0, 0]
        seconds = [0.0, 0.0, 0.0]
        try:
            for step, path in enumerate(("/ko/", "/ko/submit")):
                started = time.monotonic()
                page = client.get(path)
                seconds[step] = time.monotonic() - started
                statuses[step] = page.status
            fields = {**form_fields(page.body), "testimony": f"증언 {number} under attack"}
            body = MultipartBody(fields, [])
            started = time.monotonic()
            answer = client.request(
                "POST",
                "/ko/submit",
                body=iter(body),
                headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
            )
            seconds[2] = time.monotonic() - started
            statuses[2] = answer.status
            stored = answer.status == 200 and all(m in answer.body for m in RECEIVED_MARKERS)
            return Round(statuses, seconds, stored)
        except (OSError, AssertionError) as exc:
            return Round(statuses, seconds, False, type(exc).__name__)


def summary(rounds: list[Round]) -> str:
    """One line per round: statuses and seconds, for an assertion's message."""
    return "; ".join(
        f"{r.statuses} in {'/'.join(f'{s:.2f}' for s in r.seconds)} s"
        + (" stored" if r.stored else f" NOT stored {r.error}")
        for r in rounds
    )


class _Attacker:
    """Threads that run `_attack` until stopped; `statuses` counts the server's answers."""

    threads = 1

    def __init__(self) -> None:
        self.statuses: Counter[int | str] = Counter()
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        for number in range(self.threads):
            thread = threading.Thread(target=self._attack, args=(number,), daemon=True)
            self._workers.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=60)

    def __enter__(self) -> _Attacker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _count(self, status: int | str) -> None:
        with self._lock:
            self.sent += 1
            self.statuses[status] += 1

    def _attack(self, number: int) -> None:
        raise NotImplementedError


def _typo(receipt: str) -> str:
    digits = receipt.replace(" ", "")
    return digits[:3] + str((int(digits[3]) + 1) % 10) + digits[4:]


class FollowupFlood(_Attacker):
    """N1/N2: `connections` clients sending follow-up logins as fast as they are answered.

    Each has the form's session; half the receipts carry a typo (no
    derivation), half are well-formed random receipts (a full derivation).
    """

    def __init__(self, url: str, connections: int = 32) -> None:
        super().__init__()
        self.url = url
        self.threads = connections

    def _attack(self, number: int) -> None:
        client = Client(self.url, timeout=30)
        token = ""
        while not self._stop.is_set():
            try:
                if not token:
                    token = csrf_token(client.get("/ko/followup").body)
                receipt = new_receipt().display()
                if self.sent % 2:
                    receipt = _typo(receipt)
                body = urlencode({"csrf_token": token, "receipt": receipt}).encode()
                answer = client.request(
                    "POST",
                    "/ko/followup",
                    body=body,
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "Content-Length": str(len(body)),
                    },
                )
                self._count(answer.status)
            except (OSError, AssertionError) as exc:
                self._count(type(exc).__name__)
                self._stop.wait(0.1)


def _post_head(path: str, length: int, cookie: str | None = None) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=attack\r\n"
        f"Content-Length: {length}\r\n"
    )
    if cookie:
        head += f"Cookie: {cookie}\r\n"
    return (head + "\r\n").encode()


_FILE_PART = (
    b'--attack\r\nContent-Disposition: form-data; name="attachments"; filename="a.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n"
)


class SessionlessBodies(_Attacker):
    """N3/N3b: new connections at `per_second`, each a POST to a follow-up route with no session.

    Each declares a large body, sends the start of a file part and then
    nothing, and waits for the server; whatever the server does (answer,
    close) it is counted, with how long the connection was held.
    """

    def __init__(
        self,
        host: str,
        port: int,
        per_second: float = 50.0,
        paths: tuple[str, ...] = ("/ko/followup", "/ko/followup/delete"),
        give_up: float = 120.0,
    ) -> None:
        super().__init__()
        self.address = (host, port)
        self.per_second = per_second
        self.paths = paths
        self.give_up = give_up
        self.held: list[float] = []

    def _attack(self, number: int) -> None:
        selector = selectors.DefaultSelector()
        opened: dict[int, tuple[socket.socket, float]] = {}
        next_at = time.monotonic()
        count = 0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                while next_at <= now:
                    next_at += 1 / self.per_second
                    path = self.paths[count % len(self.paths)]
                    count += 1
                    try:
                        sock = socket.create_connection(self.address, timeout=5)
                        sock.sendall(_post_head(path, 10_000_000) + _FILE_PART + b"\xff" * 1000)
                        sock.setblocking(False)
                    except OSError as exc:
                        self._count(type(exc).__name__)
                        continue
                    opened[sock.fileno()] = (sock, now)
                    selector.register(sock, selectors.EVENT_READ)
                for key, _ in selector.select(timeout=max(0.0, next_at - time.monotonic())):
                    sock, started = opened.pop(key.fd)
                    selector.unregister(sock)
                    status: int | str = "closed"
                    with contextlib.suppress(OSError):
                        data = sock.recv(4096)
                        if data.startswith(b"HTTP/1.1 "):
                            status = int(data[9:12])
                    sock.close()
                    self.held.append(time.monotonic() - started)
                    self._count(status)
                for fd, (sock, started) in list(opened.items()):
                    if time.monotonic() - started > self.give_up:
                        opened.pop(fd)
                        selector.unregister(sock)
                        sock.close()
                        self.held.append(self.give_up)
                        self._count("never answered")
        finally:
            for sock, _ in opened.values():
                sock.close()
            selector.close()


class Trickle(_Attacker):
    """A follow-up login body of `length` bytes sent at `bytes_per_second` with the form's session.

    `connections` of them at once, each opened again when the server drops
    it; `held` is how long each lasted.
    """

    def __init__(
        self, url: str, host: str, port: int, connections: int = 20,
        bytes_per_second: float = 1536.0, path: str = "/ko/followup", length: int = 60_000,
    ) -> None:  # fmt: skip
        super().__init__()
        self.url = url
        self.address = (host, port)
        self.threads = connections
        self.rate = bytes_per_second
        self.path = path
        self.length = length
        self.held: list[float] = []

    def _attack(self, number: int) -> None:
        client = Client(self.url, timeout=30)
        with contextlib.suppress(OSError, AssertionError):
            client.get("/ko/followup")
        piece = max(1, int(self.rate / 10))
        while not self._stop.is_set():
            started = time.monotonic()
            status: int | str = "closed"
            try:
                with socket.create_connection(self.address, timeout=5) as sock:
                    sock.sendall(_post_head(self.path, self.length, client.cookie))
                    sock.settimeout(0.1)
                    while not self._stop.is_set():
                        sock.sendall(b"a" * piece)
                        try:
                            data = sock.recv(4096)
                        except TimeoutError:
                            continue
                        if data.startswith(b"HTTP/1.1 "):
                            status = int(data[9:12])
                        break
            except OSError:
                pass
            if self._stop.is_set():
                return
            self.held.append(time.monotonic() - started)
            self._count(status)


GARBAGE = (
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \x01\r\n\r\n",
    b"POST /ko/submit HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
    b"POST /ko/submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /ko/followup HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    b"Content-Length: 50\r\n\r\n--b\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /nothing.php HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: " + b"a" * 70 + b".com\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
)


class Garbage(_Attacker):
    """N6: `connections` clients sending malformed requests, cut short or reset, without pause."""

    def __init__(self, host: str, port: int, connections: int = 8) -> None:
        super().__init__()
        self.address = (host, port)
        self.threads = connections

    def _attack(self, number: int) -> None:
        rng = random.Random(number)
        while not self._stop.is_set():
            request = rng.choice((*GARBAGE, os.urandom(200)))
            try:
                with socket.create_connection(self.address, timeout=5) as sock:
                    sock.sendall(request)
                    if rng.random() < 0.5:  # reset: a linger of 0 s
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    else:
                        sock.settimeout(2)
                        sock.recv(100)
                self._count("sent")
            except OSError:
                self._count("refused")
