"""What every command shares: the invocation, and the errors `main` turns into exit statuses.

`Context` holds the streams and environment of one run and is the only way
a command prints; the custody-log session, passphrase sources and the
messages about the log's head live here too, so each command says them the
same way.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from portal.core.exitstatus import ExitStatus
from portal.review.custody import CustodyDamaged, CustodyError, CustodyLog, Session

if TYPE_CHECKING:
    from portal.review import consent

PROG = "testimony-review"
CUSTODY_ENV = "TESTIMONY_REVIEW_CUSTODY"
REVIEWER_ENV = "TESTIMONY_REVIEW_REVIEWER"
SIGNING_KEY_ENV = "TESTIMONY_REVIEW_SIGNING_KEY"
QUESTIONNAIRES_ENV = "TESTIMONY_REVIEW_QUESTIONNAIRES"


class UserError(Exception):
    """A problem the user can fix; printed as one line, no traceback."""


class IntegrityError(Exception):
    pass


class Context:
    """The streams and environment one invocation runs with."""

    def __init__(
        self,
        stdin: TextIO,
        stdout: TextIO,
        stderr: TextIO,
        env: Mapping[str, str],
        command: Callable[..., ExitStatus] | None = None,
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.env = env
        # The command line's own `main`, for the desk, which runs `reply` and
        # `forward` as a reviewer would type them (and must not import this package).
        self.command = command

    def err(self, message: str) -> None:
        print(message, file=self.stderr, flush=True)

    def out(self, line: object) -> None:
        """One line of the command's result (a key, a path, a verdict) on standard output."""
        print(line, file=self.stdout, flush=True)

    def done(self, result: object, note: str) -> ExitStatus:
        """Print the result line, then what to do with it; the command succeeded."""
        self.out(result)
        self.err(note)
        return ExitStatus.OK

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


@contextlib.contextmanager
def custody_session(
    ctx: Context, log: CustodyLog, nothing: str, *, head_on_error: bool = False
) -> Iterator[Session]:
    """The custody log, locked and verified for this run; its new head is said at the end.

    `nothing` says what a damaged log means for the run ("Nothing was sent.").
    With `head_on_error`, the head is said also when the run fails, because
    entries written before the failure stay in the log.
    """
    try:
        with log.session() as session:
            try:
                yield session
            except BaseException:
                if head_on_error and session.count:
                    say_head(ctx, session)
                raise
            if session.count:
                say_head(ctx, session)
    except CustodyDamaged as exc:
        raise damaged_log(exc, nothing) from None


def say_head(ctx: Context, session: Session) -> None:
    ctx.err(
        f"Custody log {session.log.path}: {session.count} entries, head {session.head}\n"
        "Write this head in your paper logbook (or send it to a colleague): "
        "`testimony-review custody verify --expect-head HEAD` proves later that nothing "
        "after it was cut off or changed."
    )


def known_questionnaires(ctx: Context, args: argparse.Namespace) -> consent.KnownQuestionnaires:
    """The default questionnaire, and those given by --questionnaire or the environment."""
    from portal.review import consent  # only the commands that read consent need it

    paths = [Path(p) for p in args.questionnaire]
    paths += [Path(p) for p in ctx.env.get(QUESTIONNAIRES_ENV, "").split(os.pathsep) if p]
    try:
        return consent.KnownQuestionnaires.load(paths)
    except consent.QuestionnaireFileError as exc:
        raise UserError(f"{exc}; give the organisation's questionnaire files") from None
