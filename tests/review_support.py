"""Helpers for the reviewer-tool tests: real submissions, in-process CLI runs, byte flips."""

from __future__ import annotations

import hashlib
import io
import os
import pty
import select
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from portal.core.age import PrivateKey, Recipient, X25519Identity, encrypt
from portal.core.manifest import Attachment, build_manifest
from portal.core.replykey import ReplyKey
from portal.review.cli import ExitStatus, main
from portal.server.intake import store_submission
from portal.server.store import SubmissionStore

# Scrypt work factor for identity files made in tests: fast, but still the
# real scrypt code path. One test proves the production default separately.
TEST_WORK_FACTOR = 10


@dataclass
class Run:
    status: ExitStatus
    out: str
    err: str


def review(argv: Sequence[object], stdin: str = "", env: dict[str, str] | None = None) -> Run:
    """Run `testimony-review ARGV` in-process with captured streams (each argument as its str)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    status = main(
        [str(a) for a in argv],
        stdin=io.StringIO(stdin),
        stdout=stdout,
        stderr=stderr,
        env=env or {},
    )
    return Run(status, stdout.getvalue(), stderr.getvalue())


def write_identity(path: Path, identity: X25519Identity | None = None) -> X25519Identity:
    identity = identity or X25519Identity.generate()
    path.write_text(f"# test identity\n# public key: {identity.recipient}\n{identity}\n")
    path.chmod(0o600)
    return identity


def make_store(root: Path) -> SubmissionStore:
    store = SubmissionStore(root)
    store.initialise()
    return store


def submit(
    store: SubmissionStore,
    recipients: Sequence[PrivateKey],
    text: str,
    files: Sequence[tuple[str, bytes]] = (),
    language: str = "en",
    fields: dict[str, str] | None = None,
    *,
    reply_to: str | None = None,
    reply_key: ReplyKey | None = None,
) -> str:
    """Store one submission the way the server does (encrypted on arrival)."""
    return store_submission(
        store,
        [identity.recipient for identity in recipients],
        {"testimony": text, **(fields or {})},
        [(name, "application/octet-stream", content) for name, content in files],
        language,
        reply_to=reply_to,
        reply_key=reply_key,
    )


ManifestMaker = Callable[[str, list[Attachment]], bytes]


def honest_manifest(fields: dict[str, str] | None = None, language: str = "en") -> ManifestMaker:
    """A maker of the manifest the server itself would write."""
    return lambda sid, attachments: build_manifest(
        sid, fields or {"testimony": "crafted"}, language, attachments
    )


def craft(
    store: SubmissionStore,
    recipient: Recipient,
    manifest: ManifestMaker | bytes,
    files: Sequence[tuple[str, bytes]] = (),
    *,
    file_recipient: Recipient | None = None,
) -> str:
    """A submission made as an attacker would: the project's writer and the public key only.

    `manifest` is the manifest plaintext, or a function of the submission id
    and the honest attachment entries that returns it, so a test can write
    any bytes the server never would.
    """
    staging = store.begin()
    attachments = []
    for name, content in files:
        relpath, staged = staging.create_attachment()
        staged.write(encrypt(content, [file_recipient or recipient]))
        staged.finish()
        digest = hashlib.sha256(content).hexdigest()
        attachments.append(
            Attachment(relpath, name, "application/octet-stream", len(content), digest)
        )
    plaintext = (
        manifest if isinstance(manifest, bytes) else manifest(staging.submission_id, attachments)
    )
    staged = staging.create_manifest()
    staged.write(encrypt(plaintext, [recipient]))
    staged.finish()
    return store.commit(staging)


def flip_byte(path: Path, offset: int) -> None:
    """Flip every bit of one byte; a negative offset counts from the end."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def open_args(src: Path, identity_file: Path, out: Path, custody: Path) -> list[str | Path]:
    return [
        "open", src, "--identity", identity_file, "--out", out,
        "--custody", custody, "--reviewer", "Test Reviewer",
    ]  # fmt: skip


def open_into(tmp_path: Path, src: Path, identity_file: Path, out: str = "out") -> Run:
    """`testimony-review open` of `src` into tmp_path/out, logging to tmp_path/custody.jsonl."""
    return review(open_args(src, identity_file, tmp_path / out, tmp_path / "custody.jsonl"))


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under root, by relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def age_with_passphrase(args: Sequence[str], passphrase: str, timeout: float = 60) -> int:
    """Run the stock `age` CLI on a pseudo-terminal and type the passphrase when it asks.

    age reads passphrases from the terminal only, never from stdin, so this
    is the one way to drive it unattended.
    """
    pid, fd = pty.fork()
    if pid == 0:  # the child: become age
        try:
            os.execvp("age", ["age", *args])  # noqa: S606 (no shell, fixed program)
        finally:
            os._exit(127)
    output = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 1024)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
                if not typed and b"passphrase" in output.lower():
                    os.write(fd, passphrase.encode() + b"\n")
                    typed = True
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    finally:
        os.close(fd)
