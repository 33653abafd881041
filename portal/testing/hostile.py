"""Hostile connections for tests and benchmarks: silent and dribbling, in headers and bodies.

One thread drives every socket (as a cheap attacker would): each opens with
part of a request, then either goes quiet or sends one more byte every
`interval` seconds. When the server drops one, it is opened again, so the
pressure stays on for as long as the swarm runs.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from dataclasses import dataclass

from portal.server.front import raise_open_file_limit

KINDS = ("header-silent", "header-dribble", "body-silent", "body-dribble")
_HEADER_START = b"GET /ko/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
_BODY_START = (
    b"POST /ko/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: multipart/form-data; boundary=hostile\r\n"
    b"Content-Length: 10000000\r\n\r\n"
    b'--hostile\r\nContent-Disposition: form-data; name="testimony"\r\n\r\n'
)


@dataclass
class _Conn:
    kind: str
    sock: socket.socket
    next_send: float


class HostileSwarm:
    """`count` hostile connections to host:port, spread evenly over `kinds`."""

    def __init__(
        self,
        host: str,
        port: int,
        count: int,
        kinds: tuple[str, ...] = KINDS,
        interval: float = 2.0,
    ) -> None:
        self.host = host
        self.port = port
        self.count = count
        self.kinds = kinds
        self.interval = interval
        self.dropped = 0  # connections the server closed
        self.failed_connects = 0
        self._selector = selectors.DefaultSelector()
        self._conns: dict[int, _Conn] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-swarm", daemon=True)

    def __enter__(self) -> HostileSwarm:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def open(self) -> int:
        with self._lock:
            return len(self._conns)

    def start(self) -> None:
        raise_open_file_limit(self.count * 2 + 512)
        for number in range(self.count):
            self._open(self.kinds[number % len(self.kinds)])
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        with self._lock:
            for conn in self._conns.values():
                with contextlib.suppress(OSError):
                    self._selector.unregister(conn.sock)
                conn.sock.close()
            self._conns.clear()
        self._selector.close()

    def _open(self, kind: str) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=5)
            sock.sendall(_BODY_START if kind.startswith("body") else _HEADER_START)
            sock.setblocking(False)
        except OSError:
            self.failed_connects += 1
            return
        with self._lock:
            self._conns[sock.fileno()] = _Conn(kind, sock, time.monotonic() + self.interval)
            self._selector.register(sock, selectors.EVENT_READ)

    def _drop(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.pop(conn.sock.fileno(), None)
            with contextlib.suppress(OSError, KeyError, ValueError):
                self._selector.unregister(conn.sock)
        conn.sock.close()
        self.dropped += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            # Anything readable is the server answering (a 4xx) or closing:
            # either way it dropped us; open another in its place.
            for key, _ in self._selector.select(timeout=0.2):
                with self._lock:
                    conn = self._conns.get(key.fd)
                if conn is None:
                    continue
                with contextlib.suppress(OSError):
                    conn.sock.recv(65536)
                self._drop(conn)
                if not self._stop.is_set():
                    self._open(conn.kind)
            now = time.monotonic()
            with self._lock:
                due = [c for c in self._conns.values() if c.next_send <= now]
            for conn in due:
                conn.next_send = now + self.interval
                if conn.kind.endswith("dribble"):
                    try:
                        conn.sock.send(b"a")
                    except OSError:
                        self._drop(conn)
                        if not self._stop.is_set():
                            self._open(conn.kind)
