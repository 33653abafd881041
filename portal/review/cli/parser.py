"""The command line's grammar: every subcommand and option, each shared option declared once.

An option several commands take (`--custody`, `--reviewer`, `--identity`,
`--passphrase-file`, `--from`, `--out`, `--expect-head`, submission ids) is
added by one function here, so its name, metavar and help text cannot drift
between commands. A test walks every subcommand and fails on an option
without help.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from portal.review import table
from portal.review.cli import cmd_forward, cmd_keys, cmd_open, cmd_reply, cmd_verify
from portal.review.cli.context import CUSTODY_ENV, PROG, REVIEWER_ENV, UsageError
from portal.store import is_valid_id


class Parser(argparse.ArgumentParser):
    """Reports a usage error as an exception (for `main` to print), never by exiting."""

    def error(self, message: str) -> NoReturn:
        hint = f"see `{self.prog} --help`"
        words = message.replace(",", " ").split()
        if any(w.startswith("-") and is_valid_id(w) for w in words):
            # About one id in 64 made before new ids stopped starting with "-".
            hint = "a submission id that starts with `-` goes after `--`, or as --id=ID; " + hint
        raise UsageError(f"{self.prog}: error: {message} ({hint})")


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


def add_new_key_options(parser: argparse.ArgumentParser) -> None:
    """How a new identity file is protected: --passphrase-file or --no-passphrase."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--passphrase-file", metavar="F", help="read the new passphrase from the first line of F"
    )
    group.add_argument(
        "--no-passphrase",
        action="store_true",
        help="store the identity unencrypted (throwaway test keys only)",
    )


def add_out(parser: argparse.ArgumentParser, metavar: str, what: str) -> None:
    parser.add_argument("--out", required=True, metavar=metavar, help=what)


def add_from(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="source", required=True, metavar="DIR", help="the folder written by `open`"
    )


def add_ids(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("ids", nargs="*", metavar="ID", help=what)
    parser.add_argument(
        "--id", action="append", default=[], metavar="ID", help="a submission id (repeatable)"
    )


def add_expect_head(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expect-head",
        metavar="HASH",
        help="a head hash written down earlier; it must still be in the log",
    )


# ---------------------------------------------------------------- commands


def _add_key_commands(sub: argparse._SubParsersAction[Parser]) -> None:
    keygen = sub.add_parser("keygen", help="create a new reviewer identity (key pair)")
    add_out(keygen, "FILE", "identity file to create")
    keygen.add_argument(
        "--classic",
        action="store_true",
        help="make a classic X25519 key (age1...) instead of a post-quantum one (age1pq1...), "
        "for partners whose age tools are older than 1.3",
    )
    add_new_key_options(keygen)
    keygen.set_defaults(handler=cmd_keys.cmd_keygen)

    key = sub.add_parser("key", help="paper backup of an identity: backup, restore")
    key_sub = key.add_subparsers(
        dest="key_command", metavar="{backup,restore}", required=True, parser_class=Parser
    )
    backup = key_sub.add_parser("backup", help="split an identity into trustee share sheets")
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
    backup.set_defaults(handler=cmd_keys.cmd_key_backup)
    restore = key_sub.add_parser("restore", help="rebuild an identity from share sheets")
    add_out(restore, "FILE", "identity file to create")
    restore.add_argument(
        "sheets",
        nargs="*",
        metavar="SHEET",
        help="share sheet files (or type the words when asked)",
    )
    add_new_key_options(restore)
    restore.set_defaults(handler=cmd_keys.cmd_key_restore)


def _add_open(sub: argparse._SubParsersAction[Parser]) -> None:
    opener = sub.add_parser("open", help="decrypt and verify submissions into a folder")
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
    opener.set_defaults(handler=cmd_open.cmd_open)


def _add_forward_and_table(sub: argparse._SubParsersAction[Parser]) -> None:
    forward = sub.add_parser(
        "forward",
        help="send opened submissions to a partner, encrypted",
        epilog="An ID that starts with `-` goes after `--` (forward --from DIR ... -- -ID) "
        "or as --id=-ID.",
    )
    add_ids(forward, "the submissions to send")
    add_from(forward)
    forward.add_argument(
        "--to",
        required=True,
        metavar="RECIPIENT",
        help="the partner's age public key (age1pq1... or age1...)",
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
    add_custody(forward)
    add_reviewer(forward)
    forward.set_defaults(handler=cmd_forward.cmd_forward)

    tabler = sub.add_parser(
        "table",
        help="write the answers of all opened submissions as CSV or JSON Lines, one row each",
    )
    add_from(tabler)
    add_out(tabler, "FILE", "the table to write")
    tabler.add_argument(
        "--format",
        choices=table.FORMATS,
        default="csv",
        help="csv (UTF-8 with BOM, for spreadsheets; default) or jsonl (one JSON object a line)",
    )
    tabler.set_defaults(handler=cmd_forward.cmd_table)


def _add_reply(sub: argparse._SubParsersAction[Parser]) -> None:
    replier = sub.add_parser(
        "reply",
        help="write a reply to a witness, encrypted to them, into an outbox for the server",
        epilog="An ID that starts with `-` goes after `--`.",
    )
    replier.add_argument("id", metavar="ID", help="the submission to answer")
    add_from(replier)
    replier.add_argument(
        "--message-file",
        required=True,
        metavar="FILE",
        help="the reply, UTF-8 text in any language",
    )
    add_out(replier, "OUTBOX", "the outbox folder (may exist already)")
    add_custody(replier)
    add_reviewer(replier)
    replier.set_defaults(handler=cmd_reply.cmd_reply)


def _add_verify(sub: argparse._SubParsersAction[Parser]) -> None:
    verifier = sub.add_parser(
        "verify",
        help="hash an opened folder again against its manifests and the custody log",
        epilog="An ID that starts with `-` goes after `--` or as --id=-ID.",
    )
    verifier.add_argument("dir", metavar="DIR", help="the folder written by `open`")
    add_ids(verifier, "only these submissions (default: all in DIR)")
    verifier.add_argument(
        "--src", metavar="SRC", help="also hash the ciphertext in SRC (an export or data dir)"
    )
    add_custody(verifier)
    add_expect_head(verifier)
    verifier.set_defaults(handler=cmd_verify.cmd_verify)

    custody = sub.add_parser("custody", help="the chain-of-custody log")
    custody_sub = custody.add_subparsers(
        dest="custody_command", metavar="{verify}", required=True, parser_class=Parser
    )
    verify = custody_sub.add_parser("verify", help="check the log's hash chain")
    add_custody(verify)
    add_expect_head(verify)
    verify.set_defaults(handler=cmd_verify.cmd_custody_verify)


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
    return parser
