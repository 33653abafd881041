"""The `testimony-portal` command: serve, check, export, import-replies, seal.

All flags, environment reading, printing and exit statuses live here:
`main(argv, env=, stdout=, stderr=)` returns an `ExitStatus` and never exits
the process (tests call it in-process). The domain modules it calls
(`portal.export`, `portal.seal`, `portal.mailbox`) print nothing; they
return reports and raise typed errors, which are turned into lines here.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from portal import questionnaire
from portal.cliutil import Parser, parse_args
from portal.config import (
    BODY_PROGRESS_WINDOW,
    PROGRESS_BYTES,
    Config,
    ConfigError,
    check_data_dir,
    describe_protection,
    load_recipients,
)
from portal.exitstatus import ExitStatus

PROG = "testimony-portal"
# The defaults of `serve`'s flags (README.md, "Commands"). The body timeout's
# is the app's own progress window, portal.config.BODY_PROGRESS_WINDOW.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 1024
DEFAULT_HEADER_TIMEOUT = 10.0


def _parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Anonymous testimony intake that encrypts every submission on arrival.",
        epilog="Configuration comes from PORTAL_* environment variables; see README.md.",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    serve = sub.add_parser(
        "serve", help="run the web portal (nginx in front of gunicorn's threaded workers)"
    )
    serve.add_argument(
        "--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)"
    )
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    serve.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="worker processes (default %(default)s)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="most threads per worker, started as needed; one per request in flight "
        "(default %(default)s)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT,
        help="seconds a client has to send its whole request header block (default %(default)s)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_PROGRESS_WINDOW,
        help="a request body is dropped if it sends nothing for this many seconds, or less "
        f"than {PROGRESS_BYTES // 1024} KiB in this many seconds (default %(default)s)",
    )
    serve.add_argument(
        "--no-front",
        action="store_true",
        help="serve with gunicorn alone, without nginx in front: for development and tests "
        "only, it does not withstand slow or silent connections",
    )
    # Used by the front proxy to start the app server behind it.
    serve.add_argument("--unix-socket", type=Path, help=argparse.SUPPRESS)
    sub.add_parser("check", help="check configuration, keys, permissions and free space")
    export = sub.add_parser(
        "export", help="copy committed submissions (ciphertext) to DEST, verified"
    )
    export.add_argument("dest", type=Path, help="destination folder, e.g. a mounted USB drive")
    export.add_argument(
        "--purge",
        action="store_true",
        help="delete each server copy once its exported copy has been read back and verified",
    )
    replies = sub.add_parser(
        "import-replies",
        help="store the replies from an outbox written by `testimony-review reply`",
    )
    replies.add_argument("outbox", type=Path, help="the outbox folder, e.g. on a USB drive")
    seal = sub.add_parser(
        "seal",
        help="rewrite recent submissions into fresh files so no file time tells their order "
        "(the server does this daily at PORTAL_SEAL_TIME)",
    )
    seal.add_argument(
        "--all", action="store_true", help="rewrite every submission, not only recent ones"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> ExitStatus:
    """Run one `testimony-portal` command; never exits the process, never shows a traceback."""
    env = os.environ if env is None else env
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = parse_args(_parser(), argv, stdout=stdout, stderr=stderr)
    if isinstance(args, ExitStatus):
        return args
    try:
        config = Config.from_env(env)
        if args.command == "serve":
            return _serve(config, args, stderr)
        if args.command == "check":
            return _check(config, env, stdout)
        if args.command == "import-replies":
            return _import_replies(config, args.outbox, stdout, stderr)
        if args.command == "seal":
            return _seal(config, args, stdout, stderr)
        return _export(config, args, stdout, stderr)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=stderr)
        return ExitStatus.ERROR
    except Exception as exc:  # noqa: BLE001 (the last line of defence: never a traceback)
        # Only the type: on the server an exception message can quote what a
        # client sent, and nothing here may print that.
        print(
            f"{PROG}: {args.command}: unexpected error ({type(exc).__name__}); "
            "nothing stored was changed by it. Run `testimony-portal check`, and report "
            "this as a bug if the checks pass.",
            file=stderr,
        )
        return ExitStatus.BUG


def _serve(config: Config, args: argparse.Namespace, stderr: TextIO) -> ExitStatus:
    from portal.front import (
        FrontError,
        FrontSettings,
        app_server_command,
        raise_open_file_limit,
        run_front,
    )
    from portal.server import bind_address, configure_logging, serve
    from portal.web import create_app
    from portal.web.body_guard import BODY_PROGRESS_WINDOW_KEY

    timeouts = (args.header_timeout, args.body_timeout)
    # nan and inf parse as floats but make the deadlines meaningless (and
    # crash the server's own arithmetic), so only finite timeouts pass.
    if min(args.workers, args.threads) < 1 or not all(math.isfinite(t) and t > 0 for t in timeouts):
        print(
            "testimony-portal: workers, threads and timeouts must be positive "
            "(timeouts in seconds, e.g. --header-timeout 10)",
            file=stderr,
        )
        return ExitStatus.USAGE
    if not 0 < args.port < 65536:
        print(f"{PROG}: --port {args.port} is not a TCP port (1-65535)", file=stderr)
        return ExitStatus.USAGE
    nofile = raise_open_file_limit()
    app = create_app(config, **{BODY_PROGRESS_WINDOW_KEY: args.body_timeout})
    if args.unix_socket is None:
        front = "" if args.no_front else "nginx in front, "
        print(
            f"testimony-portal: serving on http://{bind_address(args.host, args.port)} "
            f"({front}data in {config.data_dir}, keys from {config.recipients_file})",
            file=stderr,
        )
    if args.no_front or args.unix_socket is not None:
        bind = bind_address(args.host, args.port)
        if args.unix_socket is not None:
            bind = f"unix:{args.unix_socket}"
        serve(app, config, bind, args.workers, args.threads)
        return ExitStatus.OK
    configure_logging(config.log_level)
    settings = FrontSettings(
        host=args.host,
        port=args.port,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        # The app answers oversized uploads with its own page; nginx's limit
        # is only a backstop above it.
        max_body_bytes=config.max_upload_bytes + 16 * 1024 * 1024,
        nofile=nofile,
    )
    command = app_server_command(args.workers, args.threads, args.body_timeout)
    try:
        return run_front(app, settings, command, stderr)
    except FrontError as exc:
        print(f"testimony-portal: {exc}", file=stderr)
        return ExitStatus.ERROR


def _export(config: Config, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> ExitStatus:
    from portal.export import ExportError, export_submissions
    from portal.store import SubmissionStore

    def progress(message: str) -> None:
        print(message, file=stderr, flush=True)

    # The data directory is only read, and purged from with --purge: its
    # staging area is never swept, so an export can run beside a live server.
    store = SubmissionStore(config.data_dir)
    try:
        report = export_submissions(store, args.dest, purge=args.purge, progress=progress)
    except ExportError as exc:
        print(f"export failed: {exc}. Nothing was copied or deleted.", file=stderr)
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        print(
            "export interrupted. Submissions not yet verified on DEST are untouched on the "
            "server; run the same command again to continue (verified copies are skipped).",
            file=stderr,
        )
        return ExitStatus.INTERRUPTED
    done = len(report.copied) + len(report.already_present)
    print(
        f"{done} submission(s) on {args.dest} and verified "
        f"({len(report.copied)} copied now, {len(report.already_present)} already there, "
        f"{report.bytes_copied} bytes written); {len(report.purged)} purged from the server.",
        file=stdout,
    )
    if report.ok:
        return ExitStatus.OK
    if report.stopped:
        print(
            f"export stopped: {report.stopped}. {len(report.failed) + len(report.not_attempted)} "
            "submission(s) were NOT exported and remain on the server untouched. "
            "Free space or use another medium, then run the command again; "
            "verified copies are skipped.",
            file=stderr,
        )
    for submission_id, reason in report.failed.items():
        if reason != report.stopped:
            print(f"not exported: {submission_id}: {reason}", file=stderr)
    return ExitStatus.ERROR


def _import_replies(config: Config, outbox: Path, stdout: TextIO, stderr: TextIO) -> ExitStatus:
    from portal.mailbox import MailboxError, ReplyStore, import_outbox
    from portal.store import StoreError, SubmissionStore

    if not outbox.is_dir():
        print(
            f"testimony-portal: no outbox folder at {outbox}: give the folder that "
            "`testimony-review reply --out` wrote",
            file=stderr,
        )
        return ExitStatus.ERROR
    store = ReplyStore(config.data_dir)
    try:
        # The daily seal rewrites replies/ too: never import in the middle of it.
        with SubmissionStore(config.data_dir).maintenance():
            store.initialise()
            result = import_outbox(store, outbox)
            expired = store.purge_older_than(config.reply_days)
    except (MailboxError, StoreError, OSError) as exc:
        print(f"testimony-portal: import-replies: {exc}", file=stderr)
        return ExitStatus.ERROR
    for problem in result.rejected:
        print(f"testimony-portal: NOT imported: {problem}", file=stderr)
    print(
        f"{result.added} reply(ies) imported, {result.already} already here, "
        f"{len(result.rejected)} refused; {expired} older than PORTAL_REPLY_DAYS="
        f"{config.reply_days} deleted",
        file=stdout,
    )
    return ExitStatus.OK if not result.rejected else ExitStatus.ERROR


def _seal(config: Config, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> ExitStatus:
    from portal.mailbox import ReplyStore
    from portal.seal import SealError, seal
    from portal.store import StoreError, SubmissionStore

    store = SubmissionStore(config.data_dir)
    if not store.submissions_dir.is_dir() or not store.staging_dir.is_dir():
        print(
            f"seal failed: {config.data_dir} is not a portal data directory; check "
            "PORTAL_DATA_DIR (start the server once to create it). Nothing was changed.",
            file=stderr,
        )
        return ExitStatus.ERROR
    try:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(store.maintenance(wait=False))
            except BlockingIOError:
                print("waiting for a running seal, export or purge to finish...", file=stderr)
                stack.enter_context(store.maintenance())
            reserve = config.min_free_mb * 1024 * 1024
            report = seal(store, everything=args.all, reserve_bytes=reserve)
            replies_kept = ReplyStore(config.data_dir).reseal(config.reply_days)
    except (SealError, StoreError) as exc:
        print(f"seal failed: {exc}", file=stderr)
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        print("seal interrupted; every submission is in place. Run it again later.", file=stderr)
        return ExitStatus.INTERRUPTED
    except OSError as exc:
        print(
            f"seal failed: {exc.strerror or exc} ({exc.filename}); check that the data "
            "directory belongs to this user. Run the command again: nothing was lost.",
            file=stderr,
        )
        return ExitStatus.ERROR
    print(
        f"sealed: {report.rewritten} submission(s) rewritten into fresh files, "
        f"{report.already_sealed} sealed before, {report.arrived_during_seal} arrived during "
        f"the seal (sealed next time); {replies_kept} reply(ies) rewritten",
        file=stdout,
    )
    for submission_id, reason in report.not_sealed.items():
        print(f"not sealed: {submission_id}: {reason}", file=stderr)
    return ExitStatus.OK if report.ok else ExitStatus.ERROR


def _check(config: Config, env: Mapping[str, str], out: TextIO) -> ExitStatus:
    """A readable report of everything the portal needs; non-zero if anything is wrong."""
    problems = 0

    def report(ok: bool, text: str) -> None:
        nonlocal problems
        problems += not ok
        print(f"[{'ok' if ok else 'PROBLEM'}] {text}", file=out)

    try:
        recipients = load_recipients(config.recipients_file)
        report(True, f"{len(recipients)} recipient(s) in {config.recipients_file}, no private keys")
        post_quantum, protection = describe_protection(recipients)
        # Classic keys are allowed (partners' tools may be older): a note, not a problem.
        print(f"[{'ok' if post_quantum else 'note'}] protection: {protection}", file=out)
    except ConfigError as exc:
        report(False, str(exc))

    _check_questionnaire(config, report)

    data = config.data_dir
    try:
        report(True, check_data_dir(data))
        usable = True
    except ConfigError as exc:
        report(False, str(exc))
        usable = False
    if usable and data.is_dir():
        mode = stat.S_IMODE(data.stat().st_mode)
        report(
            mode & 0o077 == 0,
            f"data directory {data} has mode {mode:04o}"
            + ("" if mode & 0o077 == 0 else f" — run `chmod 700 {data}`"),
        )
        loose = _loose_permissions(data)
        report(
            not loose,
            "all stored files are 0600 and folders 0700"
            if not loose
            else f"{len(loose)} stored item(s) readable by others, e.g. {loose[0]}",
        )
    probe = next((p for p in (data, *data.parents) if p.is_dir()), Path("."))

    free_mb = shutil.disk_usage(probe).free // (1024 * 1024)
    report(
        free_mb >= config.min_free_mb,
        f"{free_mb} MiB free (new submissions are refused below PORTAL_MIN_FREE_MB="
        f"{config.min_free_mb})",
    )
    report(
        free_mb >= config.max_upload_mb,
        f"room for one upload of PORTAL_MAX_UPLOAD_MB={config.max_upload_mb}",
    )
    if "PORTAL_SECRET_KEY" not in env:
        print(
            "[note] PORTAL_SECRET_KEY is not set: open forms stop working after a restart", file=out
        )
    _check_conversation(config, report, out)
    print("all checks passed" if not problems else f"{problems} problem(s) found", file=out)
    return ExitStatus.OK if not problems else ExitStatus.ERROR


def _check_questionnaire(config: Config, report: Callable[[bool, str], None]) -> None:
    """Every mistake in the questionnaire, each with its line: the server would refuse it."""
    from portal.web.i18n import LANGUAGES

    path = config.questionnaire_file or questionnaire.DEFAULT_QUESTIONNAIRE
    try:
        loaded = questionnaire.load_questionnaire(path, LANGUAGES)
    except questionnaire.QuestionnaireError as exc:
        for line in exc.lines():
            report(False, line)
        return
    report(
        True,
        f"questionnaire {path}: {loaded.id!r} version {loaded.version!r}, "
        f"{len(loaded.questions)} questions in {', '.join(LANGUAGES)}, with consent",
    )


def _check_conversation(config: Config, report: Callable[[bool, str], None], out: TextIO) -> None:
    """The receipts' salt and key-derivation cost (issue 11)."""
    from portal.mailbox import SALT_NAME, MailboxError, configured_cost

    salt = config.data_dir / SALT_NAME
    if salt.is_file():
        report(
            True,
            f"receipt salt {salt} present: back it up with the data; without it no "
            "witness can read replies",
        )
    else:
        print(f"[note] receipt salt {salt} will be created at first start", file=out)
    try:
        cost = configured_cost(config.receipt_kdf_ops, config.receipt_kdf_memory_kib)
    except MailboxError as exc:
        report(False, str(exc))
        return
    per_worker = cost.memlimit * config.receipt_kdf_concurrency // 2**20
    print(
        f"[note] receipts: argon2id opslimit {cost.opslimit}, {cost.memlimit // 2**20} MiB each; "
        f"up to {per_worker} MiB per worker (PORTAL_RECEIPT_KDF_CONCURRENCY="
        f"{config.receipt_kdf_concurrency}); replies kept {config.reply_days} days",
        file=out,
    )


def _loose_permissions(root: Path) -> list[Path]:
    loose = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o077:
                loose.append(path)
    return loose


if __name__ == "__main__":
    sys.exit(main())
