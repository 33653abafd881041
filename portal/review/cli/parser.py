"""The command line's grammar: every subcommand and option, each shared option declared once.

An option several commands take (`--custody`, `--reviewer`, `--identity`,
`--passphrase-file`, `--from`, `--out`, `--expect-head`, submission ids) is
added by one function here, so its name, metavar and help text cannot drift
between commands. A test walks every subcommand and fails on an option
without help.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import TypeAlias

from portal.core import cliutil
from portal.core.exitstatus import ExitStatus
from portal.core.layout import is_valid_id
from portal.review.cli.context import (
    CUSTODY_ENV,
    PROG,
    QUESTIONNAIRES_ENV,
    REVIEWER_ENV,
    SIGNING_KEY_ENV,
    Context,
)


class Parser(cliutil.Parser):
    """The shared parser (it never exits the process), with advice for ids starting with `-`."""

    def hint(self, message: str) -> str:
        hint = super().hint(message)
        words = message.replace(",", " ").split()
        if any(w.startswith("-") and is_valid_id(w) for w in words):
            # About one id in 64 made before new ids stopped starting with "-".
            hint = "a submission id that starts with `-` goes after `--`, or as --id=ID; " + hint
        return hint


# A string: argparse does not make its subparsers action generic at run time.
_SubCommands: TypeAlias = "argparse._SubParsersAction[Parser]"
# What a subcommand runs: it returns the exit status and prints through the context.
Handler = Callable[[Context, argparse.Namespace], ExitStatus]

# `table --format`: the formats portal.review.table writes (a test checks they agree; the
# parser does not import the table's modules, which `open` does not need).
TABLE_FORMATS = ("csv", "jsonl")


class Command:
    """The function `where` ("cmd_open.cmd_open") of this package, imported when it runs.

    Each command imports only the modules it needs: `open` of one large
    submission is a new process, and importing every command's modules cost
    it more than a tenth of a second.
    """

    def __init__(self, where: str) -> None:
        self.module, self.name = where.split(".")

    def resolve(self) -> Handler:
        module = importlib.import_module(f"portal.review.cli.{self.module}")
        handler: Handler = getattr(module, self.name)
        return handler

    def __call__(self, ctx: Context, args: argparse.Namespace) -> ExitStatus:
        return self.resolve()(ctx, args)


# ---------------------------------------------------------------- shared options


def add_custody(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--custody",
        metavar="FILE",
        help=f"custody log (default: ${CUSTODY_ENV} "
        "or ~/.local/share/testimony-review/custody.jsonl)",
    )


def add_reviewer(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reviewer",
        metavar="NAME",
        help=f"your name for the custody log (default: ${REVIEWER_ENV} or your login name)",
    )


def add_identity(parser: argparse.ArgumentParser, *, repeatable: bool) -> None:
    if repeatable:
        parser.add_argument(
            "--identity",
            "-i",
            action="append",
            required=True,
            metavar="FILE",
            help="identity file; repeat for old and new keys",
        )
    else:
        parser.add_argument(
            "--identity", required=True, metavar="FILE", help="the identity file (one key)"
        )


def add_passphrase_file(parser: argparse.ArgumentParser) -> None:
    """The passphrase that unlocks existing identity files."""
    parser.add_argument(
        "--passphrase-file",
        metavar="F",
        help="read the passphrase of encrypted identity files from the first line of F",
    )


def add_new_identity(parser: argparse.ArgumentParser) -> None:
    """The identity file a command creates, and how it is protected."""
    add_out(parser, "FILE", "identity file to create")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--passphrase-file", metavar="F", help="read the new passphrase from the first line of F"
    )
    group.add_argument(
        "--no-passphrase",
        action="store_true",
        help="store the identity unencrypted (throwaway test keys only)",
    )


def add_required(parser: argparse.ArgumentParser, flag: str, metavar: str, what: str) -> None:
    """An option the command cannot run without."""
    parser.add_argument(flag, required=True, metavar=metavar, help=what)


def add_out(parser: argparse.ArgumentParser, metavar: str, what: str) -> None:
    add_required(parser, "--out", metavar, what)


def add_from(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="source", required=True, metavar="DIR", help="the folder written by `open`"
    )


def add_ids(parser: argparse.ArgumentParser, what: str, *, single: bool = False) -> None:
    """Submission ids as arguments (one with `single`), and where one starting with `-` goes."""
    if single:
        parser.add_argument("id", metavar="ID", help=what)
        parser.epilog = "An ID that starts with `-` goes after `--`."
        return
    parser.add_argument("ids", nargs="*", metavar="ID", help=what)
    parser.add_argument(
        "--id", action="append", default=[], metavar="ID", help="a submission id (repeatable)"
    )
    parser.epilog = parser.epilog or "An ID that starts with `-` goes after `--` or as --id=-ID."


def add_questionnaires(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--questionnaire",
        action="append",
        default=[],
        metavar="FILE",
        help="a questionnaire file (or folder of *.toml) the organisation uses, besides the "
        f"shipped default; repeatable (also ${QUESTIONNAIRES_ENV}). Consent sealed with any "
        "other counts as `ask`",
    )


def add_expect_head(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expect-head",
        metavar="HASH",
        help="a head hash written down earlier; it must still be in the log",
    )


# ---------------------------------------------------------------- commands


# Each subcommand and the line its parent's --help shows for it.
SUMMARIES = {
    "keygen": "create a new reviewer identity (key pair)",
    "key": "paper backup of an identity: backup, restore",
    "key backup": "split an identity into trustee share sheets",
    "key restore": "rebuild an identity from share sheets",
    "open": "decrypt and verify submissions into a folder",
    "forward": "send opened submissions to a partner, encrypted",
    "table": "write the answers of all opened submissions as CSV or JSON Lines, one row each",
    "reply": "write a reply to a witness, encrypted to them, into an outbox for the server",
    "verify": "hash an opened folder again against its manifests and the custody log",
    "custody": "the chain-of-custody log",
    "custody verify": "check the log's hash chain",
    "desk": "the reviewers' desk: search, case work, replies and forwards in the browser, "
    "on this machine only",
}


def _command(sub: _SubCommands, name: str, handler: str, *, epilog: str | None = None) -> Parser:
    """The subcommand `name` (its full path, as in SUMMARIES), which runs `handler` (`Command`)."""
    command = sub.add_parser(name.split()[-1], help=SUMMARIES[name], epilog=epilog)
    command.set_defaults(handler=Command(handler))
    return command


def _group(sub: _SubCommands, name: str, metavar: str) -> _SubCommands:
    """A subcommand that only holds subcommands (`key`, `custody`)."""
    group = sub.add_parser(name, help=SUMMARIES[name])
    return group.add_subparsers(
        dest=f"{name}_command", metavar=metavar, required=True, parser_class=Parser
    )


def _add_key_commands(sub: _SubCommands) -> None:
    keygen = _command(sub, "keygen", "cmd_keys.cmd_keygen")
    add_new_identity(keygen)
    keygen.add_argument(
        "--classic",
        action="store_true",
        help="make a classic X25519 key (age1...) instead of a post-quantum one (age1pq1...), "
        "for partners whose age tools are older than 1.3",
    )
    keygen.add_argument(
        "--signing",
        action="store_true",
        help="make the organisation's reply signing key (Ed25519) instead of a decryption "
        "key; its public half goes in the server's PORTAL_REPLY_SIGNERS file",
    )

    key_sub = _group(sub, "key", "{backup,restore}")
    backup = _command(key_sub, "key backup", "cmd_keys.cmd_key_backup")
    add_identity(backup, repeatable=False)
    add_out(backup, "DIR", "folder for the sheets")
    backup.add_argument(
        "--shares", type=int, default=5, metavar="N", help="how many sheets to make (default 5)"
    )
    backup.add_argument(
        "--threshold",
        type=int,
        default=3,
        metavar="K",
        help="how many sheets restore the key (default 3)",
    )
    add_passphrase_file(backup)
    restore = _command(key_sub, "key restore", "cmd_keys.cmd_key_restore")
    add_new_identity(restore)
    sheets = "share sheet files (or type the words when asked)"
    restore.add_argument("sheets", nargs="*", metavar="SHEET", help=sheets)


def _add_open(sub: _SubCommands) -> None:
    opener = _command(sub, "open", "cmd_open.cmd_open")
    opener.add_argument(
        "src",
        metavar="SRC",
        help="an export folder, a server data directory or a submissions/ copy",
    )
    add_identity(opener, repeatable=True)
    add_out(opener, "DIR", "folder for the opened submissions")
    add_passphrase_file(opener)
    add_custody(opener)
    add_reviewer(opener)
    opener.add_argument(
        "--jobs", type=int, default=None, metavar="N",
        help="decrypt N files at a time (default: the number of CPUs)",
    )  # fmt: skip
    opener.add_argument("--quiet", "-q", action="store_true", help="no progress display")


def _add_forward_and_table(sub: _SubCommands) -> None:
    forward = _command(
        sub,
        "forward",
        "cmd_forward.cmd_forward",
        epilog="An ID that starts with `-` goes after `--` (forward --from DIR ... -- -ID) "
        "or as --id=-ID.",
    )
    add_ids(forward, "the submissions to send")
    add_from(forward)
    add_required(
        forward, "--to", "RECIPIENT", "the partner's age public key (age1pq1... or age1...)"
    )
    add_out(forward, "FILE", "the bundle to create")
    forward.add_argument(
        "--omit-field",
        action="append",
        default=[],
        metavar="NAME",
        help="leave this manifest field out (repeatable)",
    )
    forward.add_argument(
        "--override-consent",
        metavar="REASON",
        help="send even where the witness's consent does not allow it; REASON is recorded "
        "in the custody log and the bundle",
    )
    add_questionnaires(forward)
    forward.add_argument(
        "--allow-classic",
        action="store_true",
        help="send post-quantum protected submissions to a classic (age1...) key anyway",
    )
    forward.add_argument(
        "--clean-metadata",
        action="store_true",
        help="add a copy of each attachment cleaned of metadata by mat2 beside the original "
        "(for witnesses who consented to anonymous forwarding)",
    )
    add_custody(forward)
    add_reviewer(forward)

    tabler = _command(sub, "table", "cmd_forward.cmd_table")
    add_from(tabler)
    add_out(tabler, "FILE", "the table to write")
    tabler.add_argument(
        "--format",
        choices=TABLE_FORMATS,
        default="csv",
        help="csv (UTF-8 with BOM, for spreadsheets; default) or jsonl (one JSON object a line)",
    )
    add_custody(tabler)
    add_questionnaires(tabler)


def _add_reply(sub: _SubCommands) -> None:
    replier = _command(sub, "reply", "cmd_reply.cmd_reply")
    add_ids(replier, "the submission to answer", single=True)
    add_from(replier)
    add_required(replier, "--message-file", "FILE", "the reply, UTF-8 text in any language")
    add_out(replier, "OUTBOX", "the outbox folder (may exist already)")
    replier.add_argument(
        "--signing-key",
        metavar="FILE",
        help=f"the reply signing key made by `keygen --signing` (default: ${SIGNING_KEY_ENV})",
    )
    add_passphrase_file(replier)
    add_custody(replier)
    add_reviewer(replier)


def _add_verify(sub: _SubCommands) -> None:
    verifier = _command(sub, "verify", "cmd_verify.cmd_verify")
    verifier.add_argument("dir", metavar="DIR", help="the folder written by `open`")
    add_ids(verifier, "only these submissions (default: all in DIR)")
    verifier.add_argument(
        "--src", metavar="SRC", help="also hash the ciphertext in SRC (an export or data dir)"
    )
    add_custody(verifier)
    add_expect_head(verifier)
    add_questionnaires(verifier)

    custody_sub = _group(sub, "custody", "{verify}")
    verify = _command(custody_sub, "custody verify", "cmd_verify.cmd_custody_verify")
    add_custody(verify)
    add_expect_head(verify)


def _add_desk(sub: _SubCommands) -> None:
    desk = _command(sub, "desk", "cmd_desk.cmd_desk")
    desk.add_argument("dir", metavar="OPENED_DIR", help="the folder written by `open`")
    desk.add_argument(
        "--lang",
        choices=("ko", "en", "zh"),
        help="the desk's language (default: the settings file's, else ko)",
    )
    desk.add_argument(
        "--settings",
        metavar="FILE",
        help="settings file (default: ~/.config/testimony-review/desk.toml if it exists)",
    )
    desk.add_argument(
        "--outbox",
        metavar="DIR",
        help="where replies go (default: the settings file's, else outbox beside OPENED_DIR)",
    )
    desk.add_argument(
        "--bundles",
        metavar="DIR",
        help="where forward bundles go (default: the settings file's, else bundles beside "
        "OPENED_DIR)",
    )
    desk.add_argument(
        "--port",
        type=int,
        default=0,
        metavar="N",
        help="port on 127.0.0.1 (default: a free one the system picks)",
    )
    desk.add_argument(
        "--signing-key",
        metavar="FILE",
        help="passed to `reply` for the replies written at the desk (when replies are signed)",
    )
    add_passphrase_file(desk)
    add_custody(desk)
    add_reviewer(desk)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Offline reviewer tool for Testimony Portal.")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    _add_key_commands(sub)
    _add_open(sub)
    _add_forward_and_table(sub)
    _add_reply(sub)
    _add_verify(sub)
    _add_desk(sub)
    return parser
