"""What every command shares: the invocation's streams and environment, the errors
the dispatcher turns into exit statuses, passphrase sources and custody-log messages."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from portal.review.custody import (
    CustodyError,
    CustodyLog,
    Session,
)

PROG = "testimony-review"


CUSTODY_ENV = "TESTIMONY_REVIEW_CUSTODY"


REVIEWER_ENV = "TESTIMONY_REVIEW_REVIEWER"


class UserError(Exception):
    """A problem the user can fix; printed as one line, no traceback."""


class UsageError(Exception):
    pass


class IntegrityError(Exception):
    pass


class Context:
    """The streams and environment one invocation runs with."""

    def __init__(
        self, stdin: TextIO, stdout: TextIO, stderr: TextIO, env: Mapping[str, str]
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.env = env

    def err(self, message: str) -> None:
        print(message, file=self.stderr, flush=True)

    def interactive(self) -> bool:
        return self.stdin.isatty()

    def ask_secret(self, prompt: str) -> bytes:
        if not self.interactive():
            raise UserError(
                "no terminal to ask for a passphrase on: give it with --passphrase-file FILE"
            )
        return getpass.getpass(prompt, stream=self.stderr).encode("utf-8")

    def custody(self, option: str | None) -> CustodyLog:
        if option:
            return CustodyLog(Path(option))
        if self.env.get(CUSTODY_ENV):
            return CustodyLog(Path(self.env[CUSTODY_ENV]))
        home = self.env.get("HOME") or str(Path.home())
        data_home = self.env.get("XDG_DATA_HOME") or str(Path(home) / ".local" / "share")
        return CustodyLog(Path(data_home) / PROG / "custody.jsonl")

    def reviewer(self, option: str | None) -> str:
        name = option or self.env.get(REVIEWER_ENV)
        if not name:
            try:
                name = getpass.getuser()
            except (KeyError, OSError):
                name = "unknown"
        return name


def read_passphrase_file(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read the passphrase file {path}: {exc.strerror}") from exc
    # One trailing newline is what editors and `echo` add; it is not part of it.
    for ending in (b"\r\n", b"\n"):
        if data.endswith(ending):
            data = data[: -len(ending)]
            break
    if not data:
        raise UserError(f"the passphrase file {path} is empty")
    return data


def unlock_source(ctx: Context, passphrase_file: str | None) -> Callable[[Path], bytes]:
    def source(path: Path) -> bytes:
        if passphrase_file:
            return read_passphrase_file(passphrase_file)
        return ctx.ask_secret(f"Passphrase for {path}: ")

    return source


def damaged_log(exc: CustodyError, nothing: str) -> IntegrityError:
    return IntegrityError(
        f"{exc}. {nothing} Keep the damaged log and its .head file as evidence; restore the "
        "log from your backup, or start a new one with --custody NEW-FILE (and a new --out "
        "folder for `open`)"
    )


def say_head(ctx: Context, session: Session) -> None:
    ctx.err(
        f"Custody log {session.log.path}: {session.count} entries, head {session.head}\n"
        "Write this head in your paper logbook (or send it to a colleague): "
        "`testimony-review custody verify --expect-head HEAD` proves later that nothing "
        "after it was cut off or changed."
    )
