"""The private Tor network's helpers without tor: the torrc it derives, its SOCKS client.

tests/test_onion.py runs them against real tor; here each piece is held to
what it promises on its own, quickly.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from portal.testing.tornet import SocksError, TorError, service_torrc, socks_connect
from tests import test_onion


def test_the_service_torrc_is_the_documented_one_with_only_folder_and_port_changed() -> None:
    documented = test_onion.documented_torrc()
    derived = service_torrc(documented, Path("/run/tornet/hs/hidden_service"), 27531)
    changed = [
        (old, new)
        for old, new in zip(documented.splitlines(), derived.splitlines(), strict=True)
        if old != new
    ]
    assert changed == [
        (
            "HiddenServiceDir /var/lib/tor/testimony/",
            "HiddenServiceDir /run/tornet/hs/hidden_service",
        ),
        ("HiddenServicePort 80 127.0.0.1:8081", "HiddenServicePort 80 127.0.0.1:27531"),
    ]


def test_a_torrc_without_an_onion_service_is_refused() -> None:
    with pytest.raises(TorError, match="no HiddenServiceDir"):
        service_torrc("SocksPort 0\n", Path("/x"), 1)


def _fake_tor(reply: int) -> tuple[int, list[bytes]]:
    """A one-connection SOCKS5 server answering as tor does; returns its port and what it read."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            seen.append(conn.recv(3))
            conn.sendall(b"\x05\x02")
            seen.append(conn.recv(600))
            conn.sendall(b"\x01\x00")
            seen.append(conn.recv(600))
            conn.sendall(bytes([5, reply, 0, 1]) + bytes(6))
            if reply == 0:
                seen.append(conn.recv(100))
                conn.sendall(b"pong")

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], seen


def test_socks_connect_names_the_circuit_and_lets_tor_resolve_the_onion() -> None:
    port, seen = _fake_tor(0)
    with socks_connect(port, "abc.onion", 80, "circuit-1", timeout=10) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"pong"
    assert seen[0] == b"\x05\x01\x02"
    assert seen[1] == b"\x01\x09circuit-1\x09circuit-1"
    # Address type 3: the name itself, for tor to resolve (socks5h).
    assert seen[2] == b"\x05\x01\x00\x03\x09abc.onion\x00\x50"
    assert seen[3] == b"ping"


def test_tors_onion_errors_are_named() -> None:
    port, _ = _fake_tor(0xF0)
    with pytest.raises(SocksError, match="descriptor not found") as caught:
        socks_connect(port, "abc.onion", 80, "c", timeout=10)
    assert caught.value.code == 0xF0
