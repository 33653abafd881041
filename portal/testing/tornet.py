"""A private Tor network on 127.0.0.1, and a SOCKS client for it: what tests and benchmarks share.

`TorNetwork` writes the torrc files, makes the keys, starts and stops the
tor processes and waits for them: 3 directory authorities (keys from
`tor-gencert`), 5 relays, one onion service run with the torrc the caller
gives (docs/DEPLOYMENT.md's, in the tests), and a client with a SOCKS port.
Nothing leaves loopback: `TestingTorNetwork 1` with only these authorities.
The layout follows chutney's "hs-v3" network with its fast voting
settings; relays publish without their reachability self-test
(`AssumeReachable 1`), and the onion service and the client start only once
the consensus lists every relay, so the ring of directories they compute
holds still under them. Each tor exits by itself if this process dies
(`__OwningControllerProcess`).

`SocksClient` is the live test client (`portal.testing.live.Client`) over
the client's SOCKS5 port, with the host name resolved by tor (socks5h).
Each distinct SOCKS user name and password is its own circuit
(tor's `IsolateSOCKSAuth`, on by default), as each first-party site is in
Tor Browser.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from portal.testing.live import Client

AUTHORITIES = ("a0", "a1", "a2")
RELAYS = ("r0", "r1", "r2", "r3", "r4")
SERVICE = "hs"
CLIENT = "client"
# A second client, for benchmarks that flood the service from their own tor.
FLOODER = "flooder"
NODES = (*AUTHORITIES, *RELAYS, SERVICE, CLIENT)
# Ports from `base_port`: ORPort +n, DirPort +10+n (n is the node's index), SocksPort +20
# (the flooder's +22), the onion service's MetricsPort +21. The caller may use +30 to +39
# for its own servers.
_DIR_OFFSET = 10
_SOCKS_OFFSET = 20
_METRICS_OFFSET = 21
_FLOODER_SOCKS_OFFSET = 22
PORTS_USED = 40


class TorError(Exception):
    """The private network did not come up; the message says which node and why."""


def _common(node: str, data: Path, owner: int) -> str:
    # chutney's common.i: a test network with fast voting, no sandbox, loud logs.
    return f"""TestingTorNetwork 1
PathsNeededToBuildCircuits 0.67
TestingDirAuthVoteExit *
TestingDirAuthVoteHSDir *
V3AuthNIntervalsValid 2
TestingDirAuthVoteGuard *
TestingMinExitFlagThreshold 0
DataDirectory {data}
RunAsDaemon 0
ConnLimit 60
Nickname test{node}
ShutdownWaitLength 0
Log notice file {data}/notice.log
ProtocolWarnings 1
SafeLogging 0
LogTimeGranularity 1
Sandbox 0
__OwningControllerProcess {owner}
"""


def tor_has_pow() -> bool:
    """Whether the installed tor has the proof-of-work module (`tor --list-modules`)."""
    listed = subprocess.run(["tor", "--list-modules"], capture_output=True, text=True)
    return "pow: yes" in listed.stdout


def service_torrc(documented: str, service_dir: Path, target_port: int) -> str:
    """An onion service's torrc lines as documented, with this network's folder and port.

    `documented` is the torrc text an operator is told to use; its
    `HiddenServiceDir` becomes `service_dir` and each `HiddenServicePort`'s
    target becomes 127.0.0.1:`target_port`. Nothing else changes.
    """
    lines = []
    for line in documented.splitlines():
        words = line.split()
        if words[:1] == ["HiddenServiceDir"]:
            line = f"HiddenServiceDir {service_dir}"
        elif words[:1] == ["HiddenServicePort"] and len(words) == 3:
            line = f"HiddenServicePort {words[1]} 127.0.0.1:{target_port}"
        lines.append(line)
    text = "\n".join(lines) + "\n"
    if f"HiddenServiceDir {service_dir}" not in text or "HiddenServicePort" not in text:
        raise TorError("the onion service's torrc has no HiddenServiceDir or HiddenServicePort")
    return text


@dataclass
class TorNetwork:
    """3 authorities, 5 relays, one onion service and one client, all on 127.0.0.1."""

    root: Path
    base_port: int
    # The onion service's torrc as an operator writes it, and the portal's
    # port it points at (see `service_torrc`). `info_log` adds an info-level
    # log for it: the proof-of-work defence logs there.
    documented_torrc: str
    target_port: int
    info_log: bool = True
    flooder: bool = False
    started_at: float = 0.0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def socks_port(self) -> int:
        return self.base_port + _SOCKS_OFFSET

    @property
    def flooder_socks_port(self) -> int:
        return self.base_port + _FLOODER_SOCKS_OFFSET

    @property
    def nodes(self) -> tuple[str, ...]:
        return (*NODES, FLOODER) if self.flooder else NODES

    @property
    def metrics_port(self) -> int:
        return self.base_port + _METRICS_OFFSET

    def data(self, node: str) -> Path:
        return self.root / node

    @property
    def service_dir(self) -> Path:
        return self.data(SERVICE) / "hidden_service"

    @property
    def service_log(self) -> Path:
        return self.data(SERVICE) / ("info.log" if self.info_log else "notice.log")

    @property
    def hostname(self) -> str:
        return (self.service_dir / "hostname").read_text("ascii").strip()

    def pid(self, node: str) -> int:
        return self.processes[node].pid

    # -- set-up -----------------------------------------------------------

    def _dirauthority_line(self, node: str, index: int) -> str:
        data = self.data(node)
        keys = data / "keys"
        keys.mkdir(mode=0o700, parents=True)
        or_port, dir_port = self.base_port + index, self.base_port + _DIR_OFFSET + index
        subprocess.run(
            [
                "tor-gencert",
                "--create-identity-key",
                "--passphrase-fd",
                "0",
                "-i",
                str(keys / "authority_identity_key"),
                "-s",
                str(keys / "authority_signing_key"),
                "-c",
                str(keys / "authority_certificate"),
                "-m",
                "12",
                "-a",
                f"127.0.0.1:{dir_port}",
            ],
            input=b"",
            capture_output=True,
            check=True,
        )
        certificate = (keys / "authority_certificate").read_text("ascii")
        match = re.search(r"^fingerprint (\S+)", certificate, re.M)
        if not match:
            raise TorError(f"tor-gencert wrote no fingerprint for {node}")
        subprocess.run(
            [
                "tor",
                "--list-fingerprint",
                "--orport",
                "1",
                "--datadirectory",
                str(data),
                "--defaults-torrc",
                os.devnull,
                "-f",
                os.devnull,
                "--ignore-missing-torrc",
            ],
            capture_output=True,
            check=True,
        )
        fingerprint = (data / "fingerprint").read_text("ascii").split()[1]
        return (
            f"DirAuthority test{node} orport={or_port} no-v2 v3ident={match[1]} "
            f"127.0.0.1:{dir_port} {fingerprint}"
        )

    def _torrcs(self, dirauthorities: str) -> dict[str, str]:
        owner = os.getpid()
        torrcs = {}
        for index, node in enumerate(self.nodes):
            data = self.data(node)
            data.mkdir(mode=0o700, parents=True, exist_ok=True)
            text = _common(node, data, owner) + dirauthorities
            if node in AUTHORITIES or node in RELAYS:
                text += f"""SocksPort 0
ORPort 127.0.0.1:{self.base_port + index}
Address 127.0.0.1
DirPort 127.0.0.1:{self.base_port + _DIR_OFFSET + index}
ExitRelay 0
ExitPolicy reject *:*
AssumeReachable 1
"""
            if node in AUTHORITIES:
                text += f"""AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
ContactInfo auth{node}@test.test
TestingV3AuthInitialVotingInterval 20
TestingV3AuthInitialVoteDelay 4
TestingV3AuthInitialDistDelay 4
V3AuthVotingInterval 20
V3AuthVoteDelay 4
V3AuthDistDelay 4
"""
            if node == SERVICE:
                text += "SocksPort 0\n"
                text += service_torrc(self.documented_torrc, self.service_dir, self.target_port)
                if self.info_log:
                    text += f"Log info file {data}/info.log\n"
                text += (
                    f"MetricsPort 127.0.0.1:{self.metrics_port}\n"
                    "MetricsPortPolicy accept 127.0.0.1\n"
                )
            if node == CLIENT:
                text += f"SocksPort 127.0.0.1:{self.socks_port}\n"
            if node == FLOODER:
                text += f"SocksPort 127.0.0.1:{self.flooder_socks_port}\n"
            torrcs[node] = text
        return torrcs

    def start(self, timeout: float = 240) -> None:
        """Make keys, write and check every torrc, start all tor processes.

        Returns once the onion service and the client have started (not yet
        bootstrapped: see `wait_bootstrapped`).
        """
        for program in ("tor", "tor-gencert"):
            if shutil.which(program) is None:
                raise TorError(f"{program} is not installed (apt-get install tor)")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        lines = "".join(
            self._dirauthority_line(node, index) + "\n" for index, node in enumerate(AUTHORITIES)
        )
        torrcs = self._torrcs(lines)
        for node, text in torrcs.items():
            (self.data(node) / "torrc").write_text(text, "utf-8")
            check = subprocess.run(
                [
                    "tor",
                    "--verify-config",
                    "--defaults-torrc",
                    os.devnull,
                    "-f",
                    str(self.data(node) / "torrc"),
                ],
                capture_output=True,
                text=True,
            )
            if check.returncode != 0:
                raise TorError(f"the torrc of {node} is invalid: {check.stdout.strip()[-400:]}")
        self.started_at = time.monotonic()
        for node in (*AUTHORITIES, *RELAYS):
            self._launch(node)
        self._wait_for(self._consensus_lists_every_relay, timeout, "a consensus with every relay")
        for node in self.nodes[len(AUTHORITIES + RELAYS) :]:
            self._launch(node)
        self._wait_for(lambda: (self.service_dir / "hostname").exists(), 30, "the onion address")

    def _launch(self, node: str) -> None:
        out = (self.data(node) / "stdout.log").open("wb")
        self.processes[node] = subprocess.Popen(
            ["tor", "--defaults-torrc", os.devnull, "-f", str(self.data(node) / "torrc")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()

    def _consensus_lists_every_relay(self) -> bool:
        path = self.data(AUTHORITIES[0]) / "cached-consensus"
        try:
            text = path.read_text("ascii", "replace")
        except FileNotFoundError:
            return False
        return sum(1 for line in text.splitlines() if line.startswith("r ")) >= len(
            AUTHORITIES + RELAYS
        )

    def _wait_for(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node, process in self.processes.items():
                if process.poll() is not None:
                    log = (self.data(node) / "stdout.log").read_text("utf-8", "replace")
                    raise TorError(f"tor {node} exited ({process.returncode}): {log[-400:]}")
            if ready():
                return
            time.sleep(0.25)
        raise TorError(f"no {what} after {timeout:.0f} s (logs in {self.root})")

    def bootstrapped(self, node: str) -> bool:
        log = self.data(node) / "notice.log"
        return log.exists() and "Bootstrapped 100%" in log.read_text("utf-8", "replace")

    def wait_bootstrapped(self, timeout: float = 300) -> float:
        """Wait until the client and the onion service are bootstrapped; seconds since start."""
        self._wait_for(
            lambda: self.bootstrapped(CLIENT) and self.bootstrapped(SERVICE),
            timeout,
            "bootstrap of the client and the onion service",
        )
        return time.monotonic() - self.started_at

    def restart_client(self, node: str = CLIENT) -> None:
        """Restart a client tor: it forgets the onion descriptors it cached (in memory)."""
        process = self.processes[node]
        process.terminate()
        process.wait(timeout=30)
        self._launch(node)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> TorNetwork:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- use -----------------------------------------------------------------

    def client(self, circuit: str = "witness", timeout: float = 120) -> SocksClient:
        """A live test client for the onion service, on its own circuit named `circuit`."""
        return SocksClient(f"http://{self.hostname}", self.socks_port, circuit, timeout)

    def log_lines(self, pattern: str) -> Iterator[str]:
        """The onion service's log lines that match `pattern` (a regular expression)."""
        regex = re.compile(pattern)
        text = self.service_log.read_text("utf-8", "replace")
        return (line for line in text.splitlines() if regex.search(line))


# -- SOCKS5 (RFC 1928, 1929), the host name resolved by tor --------------------------


class SocksError(OSError):
    """tor's SOCKS port refused the connection; `code` is the SOCKS5 reply code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"SOCKS5 reply {code:#04x} ({_SOCKS_REPLIES.get(code, 'unknown')})")
        self.code = code


# The standard codes, and tor's extended ones for onion services (tor's socks-extensions.txt).
_SOCKS_REPLIES = {
    1: "general failure", 2: "not allowed", 3: "network unreachable", 4: "host unreachable",
    5: "connection refused", 6: "TTL expired", 7: "command not supported",
    8: "address type not supported", 0xF0: "onion service descriptor not found",
    0xF1: "onion service descriptor invalid", 0xF2: "introduction failed",
    0xF3: "rendezvous failed", 0xF4: "missing client authorization",
    0xF5: "wrong client authorization", 0xF6: "invalid onion address",
    0xF7: "introduction timed out",
}  # fmt: skip


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the SOCKS proxy closed the connection")
        data += chunk
    return data


def socks_connect(
    socks_port: int, host: str, port: int, circuit: str, timeout: float
) -> socket.socket:
    """A TCP stream to host:port through tor's SOCKS port, on the circuit named `circuit`."""
    sock = socket.create_connection(("127.0.0.1", socks_port), timeout=timeout)
    try:
        sock.sendall(b"\x05\x01\x02")  # version 5, one method: user name and password
        if _recv_exactly(sock, 2) != b"\x05\x02":
            raise ConnectionError("the SOCKS proxy refused user name and password")
        user = password = circuit.encode()
        sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
        if _recv_exactly(sock, 2)[1] != 0:
            raise ConnectionError("the SOCKS proxy refused the circuit's user name")
        name = host.encode("ascii")
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
        _version, reply, _reserved, kind = _recv_exactly(sock, 4)
        if reply != 0:
            raise SocksError(reply)
        bound = {1: 4, 4: 16}.get(kind)
        _recv_exactly(sock, (bound if bound else _recv_exactly(sock, 1)[0]) + 2)
    except BaseException:
        sock.close()
        raise
    return sock


class _SocksConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: float, socks_port: int, circuit: str):
        super().__init__(host, port, timeout=timeout)
        self.socks_port = socks_port
        self.circuit = circuit
        self.socks_timeout = timeout

    def connect(self) -> None:
        self.sock = socks_connect(
            self.socks_port, self.host, self.port, self.circuit, self.socks_timeout
        )


class SocksClient(Client):
    """The live test client through tor's SOCKS port, on one circuit."""

    def __init__(self, base_url: str, socks_port: int, circuit: str, timeout: float = 120):
        super().__init__(base_url, timeout=timeout)
        self.socks_port = socks_port
        self.circuit = circuit

    def _connection(self) -> http.client.HTTPConnection:
        return _SocksConnection(self.host, self.port, self.timeout, self.socks_port, self.circuit)


def first_page(
    client: Client, path: str = "/", attempts: int = 180, pause: float = 1.0
) -> tuple[int, float]:
    """GET `path` until it answers 200 (a new onion service takes a while to publish).

    Returns the number of attempts and the seconds it took; raises TorError
    after `attempts`.
    """
    started = time.monotonic()
    last: object = None
    for attempt in range(1, attempts + 1):
        try:
            response = client.get(path)
            if response.status == 200:
                return attempt, time.monotonic() - started
            last = response.status
        except OSError as exc:
            last = exc
        time.sleep(pause)
    raise TorError(f"no page through the onion service after {attempts} tries (last: {last})")
