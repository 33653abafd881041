"""portal.core.age interoperates with the age CLI (Go) and pyrage (Rust), two independent oracles.

Files we write must open with both, and files they write must open with us,
so that testimony stays readable with stock tools for decades.
"""

from __future__ import annotations

import functools
import io
import os
import pty
import random
import select
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyrage
import pytest

from portal.core.age import (
    Reader,
    ScryptIdentity,
    ScryptRecipient,
    Writer,
    X25519Identity,
    decrypt,
    encrypt,
    looks_encrypted_identity,
    parse_identities,
)
from tests.support import require_tool

needs_age = pytest.mark.needs("age")

MIB = 1024 * 1024
SIZES = [0, 1, 65535, 65536, 65537, 131072, 3 * MIB]
# Odd piece sizes, so that writes straddle chunk boundaries in every way.
PIECE_SIZES = [1, 7, 65537, 1000003, 13, 65536, 4095]
FAST_WORK_FACTOR = 10


@pytest.fixture(autouse=True)
def fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ScryptRecipient's default cost cheap; production cost is tested in test_age_keys."""
    monkeypatch.setattr(ScryptRecipient.__init__, "__defaults__", (FAST_WORK_FACTOR,))


@functools.cache
def identities() -> tuple[X25519Identity, ...]:
    return tuple(X25519Identity.generate() for _ in range(3))


@functools.cache
def plaintext(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def pieces(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    pos, i = 0, 0
    while pos < len(data):
        yield data[pos : pos + sizes[i % len(sizes)]]
        pos += sizes[i % len(sizes)]
        i += 1


@functools.cache
def our_ciphertext(size: int, recipients: int, armor: bool = False) -> bytes:
    out = io.BytesIO()
    with Writer(out, [i.recipient for i in identities()[:recipients]], armor=armor) as writer:
        for piece in pieces(plaintext(size), PIECE_SIZES):
            writer.write(piece)
    return out.getvalue()


def identity_file(tmp_path: Path, identity: X25519Identity) -> Path:
    """An identity file in the format age-keygen writes."""
    path = tmp_path / "identity.txt"
    path.write_text(
        f"# created: by portal.core.age tests\n# public key: {identity.recipient}\n{identity}\n"
    )
    path.chmod(0o600)
    return path


def age_cli(*args: str, stdin: bytes = b"") -> bytes:
    result = subprocess.run(
        [require_tool("age"), *args], input=stdin, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def run_in_pty(argv: Sequence[str], answers: Sequence[bytes], timeout: float = 60) -> bytes:
    """Run a program on a pseudo-terminal, answering each passphrase prompt in turn.

    The age CLI reads passphrases only from a terminal, never from stdin.
    """
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child process
        try:
            os.execv(argv[0], list(argv))  # noqa: S606 - a fixed binary, no shell
        finally:
            os._exit(127)
    output = b""
    prompt_start = 0
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"{argv[0]} timed out; output so far: {output!r}")
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal.
                break
            if not data:
                break
            output += data
            prompt = output[prompt_start:]
            if pending and b"passphrase" in prompt.lower() and prompt.endswith(b": "):
                os.write(fd, pending.pop(0) + b"\n")
                prompt_start = len(output)
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    return output


# --- our files, their readers ---------------------------------------------------------


@pytest.mark.parametrize("recipients", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_our_files_decrypt_with_pyrage(size: int, recipients: int) -> None:
    identity = identities()[recipients - 1]
    oracle = pyrage.x25519.Identity.from_str(str(identity))
    assert pyrage.decrypt(our_ciphertext(size, recipients), [oracle]) == plaintext(size)


@needs_age
@pytest.mark.parametrize("recipients", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_our_files_decrypt_with_the_age_cli(size: int, recipients: int, tmp_path: Path) -> None:
    keys = identity_file(tmp_path, identities()[recipients - 1])
    output = age_cli("-d", "-i", str(keys), stdin=our_ciphertext(size, recipients))
    assert output == plaintext(size)


@pytest.mark.parametrize("size", [0, 65537])
def test_our_armored_files_decrypt_with_pyrage_and_the_age_cli(size: int, tmp_path: Path) -> None:
    armored = our_ciphertext(size, 3, armor=True)
    oracle = pyrage.x25519.Identity.from_str(str(identities()[0]))
    assert pyrage.decrypt(armored, [oracle]) == plaintext(size)
    keys = identity_file(tmp_path, identities()[0])
    assert age_cli("-d", "-i", str(keys), stdin=armored) == plaintext(size)


def test_our_passphrase_files_decrypt_with_pyrage() -> None:
    ciphertext = encrypt(b"passphrase-protected testimony", [ScryptRecipient(b"hunter2")])
    assert b"-> scrypt " in ciphertext
    assert pyrage.passphrase.decrypt(ciphertext, "hunter2") == b"passphrase-protected testimony"


@needs_age
def test_our_passphrase_files_decrypt_with_the_age_cli(tmp_path: Path) -> None:
    source = tmp_path / "in.age"
    source.write_bytes(encrypt(b"passphrase-protected testimony", [ScryptRecipient(b"hunter2")]))
    run_in_pty([require_tool("age"), "-d", "-o", str(tmp_path / "out"), str(source)], [b"hunter2"])
    assert (tmp_path / "out").read_bytes() == b"passphrase-protected testimony"


# --- their files, our reader --------------------------------------------------------------


@needs_age
@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 3 * MIB])
def test_age_cli_files_decrypt_with_our_reader(size: int, armor: bool) -> None:
    recipients = [arg for i in identities() for arg in ("-r", str(i.recipient))]
    ciphertext = age_cli("-e", *(["-a"] if armor else []), *recipients, stdin=plaintext(size))
    assert Reader(io.BytesIO(ciphertext), [identities()[2]]).read() == plaintext(size)


@needs_age
def test_age_cli_reads_our_recipients_file_format(tmp_path: Path) -> None:
    recipients = tmp_path / "recipients.txt"
    lines = [f"# reviewer {n}\n{i.recipient}\n\n" for n, i in enumerate(identities())]
    recipients.write_text("# organisation keys\n" + "".join(lines))
    ciphertext = age_cli("-e", "-R", str(recipients), stdin=b"to every reviewer")
    for identity in identities():
        assert decrypt(ciphertext, [identity]) == b"to every reviewer"


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", [0, 65536, 65537, 3 * MIB])
def test_pyrage_files_decrypt_with_our_reader(size: int, armor: bool) -> None:
    recipients = [pyrage.x25519.Recipient.from_str(str(i.recipient)) for i in identities()]
    ciphertext = pyrage.encrypt(plaintext(size), recipients, armored=armor)
    assert decrypt(ciphertext, [identities()[1]]) == plaintext(size)


@pytest.mark.slow
def test_pyrage_passphrase_files_decrypt_with_our_reader() -> None:
    # rage picks its own work factor (about a second of work), above the test default.
    ciphertext = pyrage.passphrase.encrypt(b"from rage", "hunter2")
    assert decrypt(ciphertext, [ScryptIdentity(b"hunter2")]) == b"from rage"


@needs_age
@pytest.mark.slow
def test_passphrase_protected_identity_file_from_the_age_cli_unlocks(tmp_path: Path) -> None:
    identity = identities()[0]
    plain = identity_file(tmp_path, identity)
    locked = tmp_path / "identity.txt.age"
    # Enter the passphrase, then confirm it; age uses its production work factor.
    run_in_pty(
        [require_tool("age"), "-p", "-a", "-o", str(locked), str(plain)],
        [b"trustee words", b"trustee words"],
    )
    data = locked.read_bytes()
    assert looks_encrypted_identity(data)
    text = decrypt(data, [ScryptIdentity(b"trustee words")]).decode()
    (unlocked,) = parse_identities(text)
    assert str(unlocked) == str(identity)
