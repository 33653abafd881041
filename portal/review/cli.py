"""`testimony-review`: the offline reviewer's command line.

All flags, environment variables, prompts and exit codes live here; the
modules below take paths, keys and callbacks as arguments. `main()` takes its
streams as arguments so tests call it in-process, and returns an ExitStatus
instead of exiting. User errors print one line naming the problem and the
fix, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from portal.age import (
    KeyFormatError,
    MLKEM768X25519Identity,
    PrivateKey,
    X25519Identity,
    parse_recipient,
)
from portal.exitstatus import ExitStatus
from portal.review import consent, keys, shares, table
from portal.review.custody import (
    CustodyDamaged,
    CustodyError,
    CustodyLog,
    Entry,
    LoggedFile,
    Opening,
    Session,
)
from portal.review.discovery import SourceError, find_submissions, leftovers
from portal.review.failures import OpenFailure
from portal.review.forward import ForwardError, collect, write_bundle
from portal.review.opening import Opener
from portal.review.recheck import check_ciphertext, check_opened_files
from portal.review.record import (
    MANIFEST_JSON,
    RECORD_NAME,
    OpenedRecord,
    RecordError,
    opened_ids,
    read_record,
)
from portal.review.report import human_size
from portal.store import is_valid_id

PROG = "testimony-review"
CUSTODY_ENV = "TESTIMONY_REVIEW_CUSTODY"
REVIEWER_ENV = "TESTIMONY_REVIEW_REVIEWER"


class UserError(Exception):
    """A problem the user can fix; printed as one line, no traceback."""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        hint = f"see `{self.prog} --help`"
        words = message.replace(",", " ").split()
        if any(w.startswith("-") and is_valid_id(w) for w in words):
            # About one id in 64 made before new ids stopped starting with "-".
            hint = "a submission id that starts with `-` goes after `--`, or as --id=ID; " + hint
        raise _UsageError(f"{self.prog}: error: {message} ({hint})")


@contextlib.contextmanager
def _redirect(stdout: TextIO, stderr: TextIO) -> Any:
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        yield


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


# ---------------------------------------------------------------- passphrases


def _read_passphrase_file(path: str) -> bytes:
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


def _unlock_source(ctx: Context, passphrase_file: str | None) -> Callable[[Path], bytes]:
    def source(path: Path) -> bytes:
        if passphrase_file:
            return _read_passphrase_file(passphrase_file)
        return ctx.ask_secret(f"Passphrase for {path}: ")

    return source


def _new_passphrase(ctx: Context, args: argparse.Namespace) -> bytes | None:
    """The passphrase to protect a new identity file with, or None for --no-passphrase."""
    if args.no_passphrase:
        return None
    if args.passphrase_file:
        secret = _read_passphrase_file(args.passphrase_file)
    else:
        if not ctx.interactive():
            raise UserError(
                "no terminal to ask for a passphrase on: give one with --passphrase-file FILE "
                "(or use --no-passphrase for a throwaway test key)"
            )
        secret = ctx.ask_secret("New passphrase for the identity: ")
        if ctx.ask_secret("Repeat the passphrase: ") != secret:
            raise UserError("the two passphrases differ; nothing was written. Run again")
    try:
        keys.check_passphrase(secret)
    except keys.KeyFileError as exc:
        raise UserError(str(exc)) from None
    return secret


def _write_identity(ctx: Context, args: argparse.Namespace, identity: PrivateKey, note: str) -> str:
    passphrase = _new_passphrase(ctx, args)
    text = keys.identity_file_text(identity, note=note)
    # Read at call time, so the test suite can lower the module constant.
    work_factor = keys.IDENTITY_WORK_FACTOR
    data = text if passphrase is None else keys.protect(text, passphrase, work_factor)
    keys.write_new_file(Path(args.out), data)
    return "unencrypted (no passphrase)" if passphrase is None else "encrypted with your passphrase"


_ROTATION_HELP = """\
Wrote {out} ({how}, {kind}).
The line printed above is its public key (recipient). To start using it:
  1. Put that {prefix} line in keys/recipients.txt on the server, on a line of
     its own. {placement}
  2. Open with both the old and the new identity while old submissions exist:
       testimony-review open SRC --identity OLD-KEY --identity {out} --out DIR
  3. Keep the old identity for the submissions encrypted to it.
  4. Make a paper backup now, before anything is encrypted to this key:
       testimony-review key backup --identity {out} --out BACKUP-DIR"""

_PQ_PLACEMENT = """\
A post-quantum key must not be listed beside
     classic age1... keys (the server refuses the mix): REPLACE every age1...
     line with the age1pq1... keys of all reviewers, then restart the server.
     See docs/REVIEWER.md, "Moving to a post-quantum key"."""

_CLASSIC_PLACEMENT = """\
List it BESIDE any recipient already there;
     remove the old line only when every reviewer can open with the new key.
     A classic key is not protected against a future quantum computer."""


def cmd_keygen(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    identity: PrivateKey
    if args.classic:
        identity = X25519Identity.generate()
        kind, prefix, placement = "classic X25519", "age1...", _CLASSIC_PLACEMENT
    else:
        identity = MLKEM768X25519Identity.generate()
        kind, prefix, placement = "post-quantum mlkem768x25519", "age1pq1...", _PQ_PLACEMENT
    how = _write_identity(ctx, args, identity, "created")
    print(identity.recipient, file=ctx.stdout, flush=True)
    ctx.err(
        _ROTATION_HELP.format(out=args.out, how=how, kind=kind, prefix=prefix, placement=placement)
    )
    return ExitStatus.OK


# ---------------------------------------------------------------- key backup / restore


def cmd_key_backup(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    found = keys.load_identities([Path(args.identity)], _unlock_source(ctx, args.passphrase_file))
    if len(found) != 1:
        raise UserError(
            f"{args.identity} holds {len(found)} identities; back up a file with exactly one"
        )
    identity = found[0]
    mnemonics = shares.split_identity(identity, args.shares, args.threshold)
    out_dir = Path(args.out)
    paths = [out_dir / f"share-{i}-of-{args.shares}.txt" for i in range(1, args.shares + 1)]
    if existing := [str(p) for p in paths if p.exists() or p.is_symlink()]:
        # Sheets of two different backups in one folder would be mixed up.
        raise UserError(f"{', '.join(existing)} already exist; choose an empty folder for --out")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for index, mnemonic in enumerate(mnemonics, start=1):
        sheet = shares.render_sheet(
            mnemonic,
            index=index,
            shares=args.shares,
            threshold=args.threshold,
            recipient=identity.recipient,
        )
        path = paths[index - 1]
        keys.write_new_file(path, sheet.encode("utf-8"))
        written.append(path)
    print(identity.recipient, file=ctx.stdout, flush=True)
    ctx.err(
        f"Wrote {len(written)} share sheets to {out_dir}; any {args.threshold} of them restore "
        "the key.\nPrint each sheet, give one to each trustee, check the printouts, then "
        f"securely delete the files in {out_dir} (they are the key, in pieces)."
    )
    return ExitStatus.OK


def _typed_shares(ctx: Context) -> list[shares.ShareInput]:
    if not ctx.interactive():
        return shares.read_typed_shares(ctx.stdin, "standard input")
    collected: list[shares.ShareInput] = []
    needed: int | None = None
    while needed is None or len(collected) < needed:
        label = f"Share {len(collected) + 1}" + (f" of {needed}" if needed else "")
        ctx.err(f"{label}: type its words in order, then Enter (an empty line stops):")
        line = ctx.stdin.readline()
        if not line.strip():
            break
        item = shares.parse_sheet(line, f"typed share {len(collected) + 1}")
        try:
            needed = shares.check_share(item)
        except shares.ShareError as exc:
            ctx.err(f"  {exc}. Type that share again.")
            continue
        collected.append(item)
    return collected


def cmd_key_restore(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    if Path(args.out).exists():
        raise UserError(f"{args.out} already exists; refusing to overwrite it")
    inputs: list[shares.ShareInput] = []
    for sheet in args.sheets:
        try:
            text = Path(sheet).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the share sheet {sheet}: {exc}") from exc
        inputs.append(shares.parse_sheet(text, sheet))
    if not inputs:
        inputs = _typed_shares(ctx)
    identity = shares.combine_shares(inputs)
    how = _write_identity(ctx, args, identity, "restored from backup shares")
    print(identity.recipient, file=ctx.stdout, flush=True)
    ctx.err(
        f"Restored the identity into {args.out} ({how}). Its public key, printed above, "
        "matches the one on the sheets."
    )
    return ExitStatus.OK


# ---------------------------------------------------------------- open


class _Progress:
    """Byte progress on a terminal, at most a few updates a second."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.total = 0
        self.started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def on_bytes(self, count: int) -> None:
        # Called from the decrypting threads.
        with self._lock:
            self.total += count
            now = time.monotonic()
            if not self.enabled or now - self._last < 0.5:
                return
            self._last = now
            rate = self.total / max(now - self.started, 1e-6)
            self.stream.write(
                f"\r  {human_size(self.total)} decrypted ({human_size(int(rate))}/s)   "
            )
            self.stream.flush()

    def say(self, message: str) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 60 + "\r")
        print(message, file=self.stream, flush=True)


def _damaged_log(exc: CustodyError, nothing: str) -> _IntegrityError:
    return _IntegrityError(
        f"{exc}. {nothing} Keep the damaged log and its .head file as evidence; restore the "
        "log from your backup, or start a new one with --custody NEW-FILE (and a new --out "
        "folder for `open`)"
    )


def _say_head(ctx: Context, session: Session) -> None:
    ctx.err(
        f"Custody log {session.log.path}: {session.count} entries, head {session.head}\n"
        "Write this head in your paper logbook (or send it to a colleague): "
        "`testimony-review custody verify --expect-head HEAD` proves later that nothing "
        "after it was cut off or changed."
    )


def cmd_open(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give 1 or more files to decrypt at a time")
    src_root, out_root = Path(args.src).resolve(), Path(args.out).resolve()
    if out_root == src_root or src_root in out_root.parents:
        # Opened files are plaintext: inside SRC they would land on the
        # export drive (which travels) or in a data directory, and the
        # extra entries would make the submissions look tampered.
        raise UserError(
            f"--out {args.out} is inside SRC {args.src}: opened files are plaintext and "
            "must not be written onto the export drive or into a data directory; give a "
            "folder on the reviewer machine's encrypted disk"
        )
    log = ctx.custody(args.custody)
    reviewer = ctx.reviewer(args.reviewer)
    identities = keys.load_identities(
        [Path(p) for p in args.identity], _unlock_source(ctx, args.passphrase_file)
    )
    out = Path(args.out)
    progress = _Progress(ctx.stderr, enabled=ctx.stderr.isatty() and not args.quiet)
    try:
        with log.session() as session:
            opened_before = opened_ids(out)
            if session.count == 0 and opened_before:
                raise _IntegrityError(
                    f"{out} holds {len(opened_before)} opened submission(s), but the custody "
                    f"log {log.path} is missing or empty: it was deleted, emptied or is not "
                    "the log they were opened with. Nothing was opened. Give the right log "
                    "with --custody, restore it from your backup, or open into a new --out "
                    "folder"
                )

            def log_opened(record: OpenedRecord) -> None:
                session.append(
                    "open",
                    reviewer,
                    submission=record.id,
                    output=str(out / record.id),
                    manifest=record.manifest.to_json(),
                    attachments=[
                        LoggedFile(e.path, e.file, e.size, e.sha256, e.ciphertext_sha256).to_json()
                        for e in record.attachments
                    ],
                )

            opener = Opener(
                out,
                identities,
                say=progress.say,
                on_bytes=progress.on_bytes,
                on_opened=log_opened,
                jobs=args.jobs,
            )
            try:
                result = opener.open_all(Path(args.src))
            finally:
                if session.count:
                    _say_head(ctx, session)
    except CustodyDamaged as exc:
        raise _damaged_log(exc, "Nothing was opened.") from None
    ctx.err(
        f"{len(result.opened)} opened, {len(result.skipped)} already opened (every hash "
        f"checked again), {len(result.failed)} NOT opened. Overview: {result.index_path}"
    )
    for outcome in result.failed:
        ctx.err(f"NOT OPENED: {outcome.submission_id}: {outcome.kind}: {outcome.reason}")
    if any(o.failure is not None and o.failure.integrity for o in result.failed):
        ctx.err(
            "Tampered, damaged or changed submissions were not written out. Keep their "
            "ciphertext and compare it with the server's copy or another export."
        )
        return ExitStatus.INTEGRITY
    return ExitStatus.ERROR if result.failed else ExitStatus.OK


# ---------------------------------------------------------------- reply


def cmd_reply(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    from portal.review.reply import ReplyError, read_message, write_reply

    try:
        message = read_message(Path(args.message_file))
    except ReplyError as exc:
        raise UserError(str(exc)) from None
    log = ctx.custody(args.custody)
    try:
        with log.session() as session:
            try:
                sent = write_reply(Path(args.source), args.id, message, Path(args.out))
            except ReplyError as exc:
                raise UserError(str(exc)) from None
            except OpenFailure as exc:
                raise _IntegrityError(f"{args.id}: {exc}. Nothing was written") from None
            session.append(
                "reply",
                ctx.reviewer(args.reviewer),
                submission=args.id,
                thread=sent.thread,
                mailbox=sent.mailbox,
                reply={"file": str(sent.path), "sha256": sent.sha256, "size": sent.size},
            )
            _say_head(ctx, session)
    except CustodyDamaged as exc:
        raise _damaged_log(exc, "The reply was written but not logged.") from None
    print(sent.path, file=ctx.stdout, flush=True)
    ctx.err(
        f"Wrote the reply for {args.id} to {sent.path} ({human_size(sent.size)}), encrypted "
        "to the witness alone. Carry the whole outbox folder to the server and run "
        f"`testimony-portal import-replies {args.out}` there."
    )
    return ExitStatus.OK


# ---------------------------------------------------------------- forward


def cmd_forward(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    ids = [*args.ids, *args.id]
    if not ids:
        raise _UsageError(
            f"{PROG} forward: error: give at least one submission ID (an id that starts with "
            "`-` goes after `--`, or as --id=ID)"
        )
    if args.override_consent is not None and not args.override_consent.strip():
        raise _UsageError(
            f"{PROG} forward: error: --override-consent needs a reason, for example "
            '--override-consent "witness agreed by phone on 2026-11-20"'
        )
    try:
        recipient = parse_recipient(args.to)
    except KeyFormatError as exc:
        raise UserError(
            f"--to is not an age public key ({exc}); ask the partner for the age1pq1... "
            "or age1... line that `age-keygen` printed for them"
        ) from None
    log = ctx.custody(args.custody)
    try:
        with log.session() as session:
            members, listing = collect(Path(args.source), ids, args.omit_field)
            decisions = consent.check_folder(
                Path(args.source), ids, args.omit_field, args.override_consent
            )
            entries = log.entries_for(set(ids))
            if missing := sorted(set(ids) - _logged_ids(entries)):
                raise _IntegrityError(
                    f"the custody log {log.path} has no entry for the opening of "
                    f"{', '.join(missing)}: it is not the log they were opened with, or it "
                    "was emptied. Nothing was sent. Give the right log with --custody"
                )
            result = write_bundle(
                Path(args.out),
                members,
                recipient,
                custody_lines=entries,
                submission_ids=ids,
                omit_fields=args.omit_field,
                mtime=int(time.time()) // 86400 * 86400,
                consent_note=consent.bundle_note(decisions),
                consent_records=[d.as_record() for d in decisions],
            )
            session.append(
                "forward",
                ctx.reviewer(args.reviewer),
                submissions=sorted(set(ids)),
                recipient=str(recipient),
                bundle={"file": str(result.path), "sha256": result.sha256, "size": result.size},
                omitted_fields=sorted(set(args.omit_field)),
                files=listing,
                consent=[d.as_record() for d in decisions],
            )
            _say_head(ctx, session)
    except CustodyDamaged as exc:
        raise _damaged_log(exc, "Nothing was sent.") from None
    print(result.path, file=ctx.stdout, flush=True)
    ctx.err(
        f"Wrote {result.path} ({human_size(result.size)}, SHA-256 {result.sha256}) for {recipient}."
        "\nThe partner opens it with:  age -d -i THEIR-KEY -o bundle.tar FILE && tar -xf bundle.tar"
        "\nand checks it with:  sha256sum -c SHA256SUMS"
    )
    return ExitStatus.OK


def cmd_table(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    count = table.write_table(Path(args.source), Path(args.out), args.format)
    ctx.err(f"Wrote {args.out}: {count} submission(s), one row each ({args.format}).")
    return ExitStatus.OK


def _logged_ids(entries: Sequence[Entry]) -> set[str]:
    return {e.entry.opening.submission for e in entries if e.entry.opening is not None}


# ---------------------------------------------------------------- verify


def _verify_one(folder: Path, custody: Mapping[str, Opening], source: Path | None) -> str | None:
    """What is wrong with one opened submission, or None if every hash holds."""
    try:
        record = read_record(folder)
    except RecordError as exc:
        return f"{RECORD_NAME} is damaged ({exc})"
    if record is None or record.id != folder.name:
        return f"{RECORD_NAME} is missing or damaged"
    try:
        check_opened_files(folder, record)
        if source is not None:
            if not (source / folder.name).exists():
                return f"its ciphertext is not in {source}"
            check_ciphertext(source / folder.name, record)
    except OpenFailure as exc:
        return str(exc)
    opening = custody.get(folder.name)
    if opening is None:
        return "the custody log has no entry for its opening"
    logged = set(opening.files)
    recorded = {(a.file, a.sha256) for a in record.attachments}
    if opening.manifest_sha256 != record.manifest.sha256:
        return f"{MANIFEST_JSON} differs from the one the custody log recorded"
    if logged != recorded:
        return "its attachments differ from those the custody log recorded"
    return None


def cmd_verify(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    out = Path(args.dir)
    if not out.is_dir():
        raise UserError(f"{out} is not a folder written by `testimony-review open`")
    log = ctx.custody(args.custody)
    if not log.path.exists():
        raise _IntegrityError(
            f"no custody log at {log.path}: give the log these submissions were opened with "
            "(--custody FILE)"
        )
    try:
        result = log.verify(expect_head=args.expect_head)
        openings = (e.entry.opening for e in log.entries())
        custody = {o.submission: o for o in openings if o is not None}
    except CustodyDamaged as exc:
        raise _IntegrityError(str(exc)) from None
    source = None
    if args.src:
        source, _ids = find_submissions(Path(args.src))
    ids = sorted(set(args.ids) | set(args.id)) or opened_ids(out)
    if not ids:
        # "0 of 0 verified" with exit 0 reads as a pass to whoever asked for
        # the check; an empty or wrong folder proves nothing.
        raise UserError(
            f"no opened submissions in {out}: give the folder `testimony-review open` "
            "wrote (its --out)"
        )
    bad = 0
    for submission_id in ids:
        folder = out / submission_id
        if not is_valid_id(submission_id) or folder.is_symlink() or not folder.is_dir():
            problem: str | None = f"{folder} is not an opened submission"
        else:
            problem = _verify_one(folder, custody, source)
        if problem:
            bad += 1
            print(f"CHANGED {submission_id}: {problem}", file=ctx.stdout, flush=True)
        else:
            print(f"ok {submission_id}", file=ctx.stdout, flush=True)
    for path in leftovers(out):
        ctx.err(
            f"note: {path} was left by an interrupted `open` (it may hold plaintext); the "
            f"next `open` into {out} removes it"
        )
    what = "ciphertext, opened files" if source else "opened files"
    ctx.err(
        f"{len(ids) - bad} of {len(ids)} submission(s) verified ({what} and custody log "
        f"hashed again); custody log: {result.count} entries, head {result.head}"
    )
    return ExitStatus.INTEGRITY if bad else ExitStatus.OK


# ---------------------------------------------------------------- custody


class _IntegrityError(Exception):
    pass


def cmd_custody_verify(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    log = ctx.custody(args.custody)
    if not log.path.exists() and not log.anchor_path.exists():
        raise UserError(f"no custody log at {log.path} (give its path with --custody)")
    try:
        result = log.verify(expect_head=args.expect_head)
    except CustodyError as exc:
        raise _IntegrityError(str(exc)) from None
    print(f"ok: {result.count} entries, head {result.head}", file=ctx.stdout)
    if args.expect_head:
        later = result.count - (result.expected_head_line or 0)
        ctx.err(f"The recorded head is entry {result.expected_head_line}; {later} entries since.")
    ctx.err(
        "A hash chain cannot show entries cut off its end: write down the count and head "
        "above (or send them to a colleague) and check them later with --expect-head."
    )
    return ExitStatus.OK


# ---------------------------------------------------------------- parser


def _add_new_key_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--passphrase-file", metavar="F", help="read the new passphrase from the first line of F"
    )
    group.add_argument(
        "--no-passphrase",
        action="store_true",
        help="store the identity unencrypted (throwaway test keys only)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Offline reviewer tool for Testimony Portal.")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    keygen = sub.add_parser("keygen", help="create a new reviewer identity (key pair)")
    keygen.add_argument("--out", required=True, metavar="FILE", help="identity file to create")
    keygen.add_argument(
        "--classic",
        action="store_true",
        help="make a classic X25519 key (age1...) instead of a post-quantum one (age1pq1...), "
        "for partners whose age tools are older than 1.3",
    )
    _add_new_key_options(keygen)
    keygen.set_defaults(handler=cmd_keygen)

    key = sub.add_parser("key", help="paper backup of an identity: backup, restore")
    key_sub = key.add_subparsers(
        dest="key_command", metavar="{backup,restore}", required=True, parser_class=_Parser
    )
    backup = key_sub.add_parser("backup", help="split an identity into trustee share sheets")
    backup.add_argument("--identity", required=True, metavar="FILE")
    backup.add_argument("--out", required=True, metavar="DIR", help="folder for the sheets")
    backup.add_argument("--shares", type=int, default=5, metavar="N")
    backup.add_argument("--threshold", type=int, default=3, metavar="K")
    backup.add_argument("--passphrase-file", metavar="F", help="passphrase of the identity file")
    backup.set_defaults(handler=cmd_key_backup)
    restore = key_sub.add_parser("restore", help="rebuild an identity from share sheets")
    restore.add_argument("--out", required=True, metavar="FILE", help="identity file to create")
    restore.add_argument(
        "sheets",
        nargs="*",
        metavar="SHEET",
        help="share sheet files (or type the words when asked)",
    )
    _add_new_key_options(restore)
    restore.set_defaults(handler=cmd_key_restore)

    opener = sub.add_parser("open", help="decrypt and verify submissions into a folder")
    opener.add_argument(
        "src",
        metavar="SRC",
        help="an export folder, a server data directory or a submissions/ copy",
    )
    opener.add_argument(
        "--identity",
        "-i",
        action="append",
        required=True,
        metavar="FILE",
        help="identity file; repeat for old and new keys",
    )
    opener.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the opened submissions"
    )
    opener.add_argument(
        "--passphrase-file", metavar="F", help="passphrase of encrypted identity files"
    )
    opener.add_argument(
        "--custody",
        metavar="FILE",
        help=f"custody log (default: ${CUSTODY_ENV} "
        "or ~/.local/share/testimony-review/custody.jsonl)",
    )
    opener.add_argument(
        "--reviewer",
        metavar="NAME",
        help=f"your name for the custody log (default: ${REVIEWER_ENV} or your login name)",
    )
    opener.add_argument(
        "--jobs", type=int, default=None, metavar="N",
        help="decrypt N files at a time (default: the number of CPUs)",
    )  # fmt: skip
    opener.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    opener.set_defaults(handler=cmd_open)

    forward = sub.add_parser(
        "forward",
        help="send opened submissions to a partner, encrypted",
        epilog="An ID that starts with `-` goes after `--` (forward --from DIR ... -- -ID) "
        "or as --id=-ID.",
    )
    forward.add_argument("ids", nargs="*", metavar="ID")
    forward.add_argument(
        "--id", action="append", default=[], metavar="ID", help="a submission id (repeatable)"
    )
    forward.add_argument(
        "--from", dest="source", required=True, metavar="DIR", help="the folder written by `open`"
    )
    forward.add_argument(
        "--to",
        required=True,
        metavar="RECIPIENT",
        help="the partner's age public key (age1pq1... or age1...)",
    )
    forward.add_argument("--out", required=True, metavar="FILE", help="the bundle to create")
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
    forward.add_argument("--custody", metavar="FILE")
    forward.add_argument("--reviewer", metavar="NAME")
    forward.set_defaults(handler=cmd_forward)

    tabler = sub.add_parser(
        "table",
        help="write the answers of all opened submissions as CSV or JSON Lines, one row each",
    )
    tabler.add_argument(
        "--from", dest="source", required=True, metavar="DIR", help="the folder written by `open`"
    )
    tabler.add_argument("--out", required=True, metavar="FILE", help="the table to write")
    tabler.add_argument(
        "--format",
        choices=table.FORMATS,
        default="csv",
        help="csv (UTF-8 with BOM, for spreadsheets; default) or jsonl (one JSON object a line)",
    )
    tabler.set_defaults(handler=cmd_table)

    replier = sub.add_parser(
        "reply",
        help="write a reply to a witness, encrypted to them, into an outbox for the server",
        epilog="An ID that starts with `-` goes after `--`.",
    )
    replier.add_argument("id", metavar="ID", help="the submission to answer")
    replier.add_argument(
        "--from", dest="source", required=True, metavar="DIR", help="the folder written by `open`"
    )
    replier.add_argument(
        "--message-file",
        required=True,
        metavar="FILE",
        help="the reply, UTF-8 text in any language",
    )
    replier.add_argument(
        "--out", required=True, metavar="OUTBOX", help="the outbox folder (may exist already)"
    )
    replier.add_argument("--custody", metavar="FILE")
    replier.add_argument("--reviewer", metavar="NAME")
    replier.set_defaults(handler=cmd_reply)

    verifier = sub.add_parser(
        "verify",
        help="hash an opened folder again against its manifests and the custody log",
        epilog="An ID that starts with `-` goes after `--` or as --id=-ID.",
    )
    verifier.add_argument("dir", metavar="DIR", help="the folder written by `open`")
    verifier.add_argument(
        "ids", nargs="*", metavar="ID", help="only these submissions (default: all in DIR)"
    )
    verifier.add_argument("--id", action="append", default=[], metavar="ID")
    verifier.add_argument(
        "--src", metavar="SRC", help="also hash the ciphertext in SRC (an export or data dir)"
    )
    verifier.add_argument("--custody", metavar="FILE")
    verifier.add_argument(
        "--expect-head", metavar="HASH", help="a head written down earlier; it must be in the log"
    )
    verifier.set_defaults(handler=cmd_verify)

    custody = sub.add_parser("custody", help="the chain-of-custody log")
    custody_sub = custody.add_subparsers(
        dest="custody_command", metavar="{verify}", required=True, parser_class=_Parser
    )
    verify = custody_sub.add_parser("verify", help="check the log's hash chain")
    verify.add_argument("--custody", metavar="FILE")
    verify.add_argument(
        "--expect-head",
        metavar="HASH",
        help="a head hash written down earlier; it must still be in the log",
    )
    verify.set_defaults(handler=cmd_custody_verify)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> ExitStatus:
    ctx = Context(
        stdin or sys.stdin,
        stdout or sys.stdout,
        stderr or sys.stderr,
        os.environ if env is None else env,
    )
    try:
        return _run(ctx, argv)
    except Exception as exc:  # noqa: BLE001 (the last line of defence: never a traceback)
        detail = " ".join(str(exc).split())[:300]
        _print_safely(
            ctx,
            f"{PROG}: unexpected error ({type(exc).__name__}: {detail}). This is a bug in the "
            "tool; finished work is kept. Please report it, without any testimony.",
        )
        return ExitStatus.BUG


def _print_safely(ctx: Context, message: str) -> None:
    # A message may hold text that the stream's encoding cannot represent.
    try:
        ctx.err(message)
    except (UnicodeError, OSError):
        with contextlib.suppress(UnicodeError, OSError):
            ctx.err(message.encode("ascii", "backslashreplace").decode("ascii"))


def _run(ctx: Context, argv: Sequence[str] | None) -> ExitStatus:
    try:
        with _redirect(ctx.stdout, ctx.stderr):
            args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    except _UsageError as exc:
        ctx.err(str(exc))
        return ExitStatus.USAGE
    except SystemExit as exc:  # --help
        return ExitStatus.OK if not exc.code else ExitStatus.USAGE
    try:
        status: ExitStatus = args.handler(ctx, args)
        return status
    except _UsageError as exc:
        ctx.err(str(exc))
        return ExitStatus.USAGE
    except KeyboardInterrupt:
        ctx.err(f"{PROG}: interrupted. Finished work is kept; run the same command to go on.")
        return ExitStatus.INTERRUPTED
    except _IntegrityError as exc:
        ctx.err(f"{PROG}: INTEGRITY FAILURE: {exc}")
        return ExitStatus.INTEGRITY
    except (
        UserError,
        keys.KeyFileError,
        shares.ShareError,
        SourceError,
        CustodyError,
        ForwardError,
        consent.ConsentRefused,
        table.TableError,
    ) as exc:
        ctx.err(f"{PROG}: error: {exc}")
        return ExitStatus.ERROR
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        ctx.err(f"{PROG}: error: {exc.strerror or exc}{where}")
        return ExitStatus.ERROR


if __name__ == "__main__":
    sys.exit(main())
