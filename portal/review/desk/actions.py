"""Replying and forwarding from the desk, through the code of `reply` and `forward` themselves.

The desk adds no second way to do either: it runs the reviewer's command
line in-process (`portal.review.cli.main`, handed to it by `desk`) with the same arguments a
reviewer would type, its streams captured. So every check those commands
make (the opened files hashed again, consent decided and enforced, the
custody log verified and appended, the recipient's key parsed, whatever
later versions add) holds at the desk as it does on the command line, and
the desk reports the command's own one-line answer.

The reply's text reaches `reply --message-file` through a file that only
this user can read, in the desk's folder inside the opened folder (where
the plaintext already is), removed as soon as the command has run.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

from portal.core.exitstatus import ExitStatus
from portal.core.fsio import FILE_MODE, write_all


class CommandLine(Protocol):
    def __call__(
        self,
        argv: Sequence[str] | None = None,
        *,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExitStatus: ...


@dataclass(frozen=True)
class Outcome:
    status: ExitStatus
    # The command's result line (the file it wrote) and its messages.
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.status == ExitStatus.OK

    @property
    def message(self) -> str:
        """The command's error in one line, without the program name."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        text = lines[-1] if lines else f"exit status {int(self.status)}"
        return text.removeprefix("testimony-review: ").removeprefix("error: ")


@dataclass(frozen=True)
class Runner:
    """How the desk calls `testimony-review`: the folders, the log and the reviewer's name."""

    opened_dir: Path
    custody: Path
    reviewer: str
    outbox: Path
    bundles: Path
    work_dir: Path
    env: Mapping[str, str]
    # `portal.review.cli.main`, handed over by the `desk` command (this package is
    # below the command line and does not import it).
    command: CommandLine
    # Options the desk was started with that `reply` takes as they are (the signing
    # key and its passphrase file, once replies are signed).
    reply_options: tuple[str, ...] = ()

    def run(self, argv: Sequence[object]) -> Outcome:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = self.command(
            [str(a) for a in argv],
            stdin=io.StringIO(""),
            stdout=stdout,
            stderr=stderr,
            env=dict(self.env),
        )
        return Outcome(status, stdout.getvalue().strip(), stderr.getvalue())

    def _common(self) -> list[str]:
        return ["--custody", str(self.custody), "--reviewer", self.reviewer]

    def reply(self, submission: str, message: str) -> Outcome:
        self.work_dir.mkdir(mode=0o700, exist_ok=True)
        self.outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.work_dir / f"reply-{secrets.token_hex(8)}.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        try:
            with contextlib.closing(os.fdopen(fd, "wb")) as handle:
                write_all(handle, message.encode("utf-8"))
            return self.run(
                ["reply", "--from", self.opened_dir, "--message-file", path,
                 "--out", self.outbox, *self.reply_options, *self._common(), "--", submission]
            )  # fmt: skip
        finally:
            path.unlink(missing_ok=True)

    def forward(
        self,
        submission: str,
        recipient: str,
        bundle: Path,
        omit_fields: Sequence[str],
        override_reason: str | None,
        *,
        clean: bool = False,
    ) -> Outcome:
        self.bundles.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv: list[object] = [
            "forward", "--from", self.opened_dir, "--to", recipient, "--out", bundle,
            *self._common(),
        ]  # fmt: skip
        for name in omit_fields:
            argv += ["--omit-field", name]
        if override_reason is not None:
            argv += ["--override-consent", override_reason]
        if clean:
            argv.append("--clean-metadata")
        return self.run([str(a) for a in [*argv, "--", submission]])
