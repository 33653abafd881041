"""`testimony-portal check`: configuration, keys, permissions and free space, one line each."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from portal.core import questionnaire
from portal.core.exitstatus import ExitStatus
from portal.server.archive import open_archive
from portal.server.cli.context import Context
from portal.server.config import (
    Config,
    ConfigError,
    check_data_dir,
    describe_protection,
    load_recipients,
)
from portal.server.mailbox import SALT_NAME, MailboxError, configured_cost
from portal.server.scratch import scratch_problems
from portal.server.store import ArchiveUnavailable
from portal.server.web.i18n import LANGUAGES


def run(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    """A readable report of everything the portal needs; non-zero if anything is wrong."""
    config, env, out = ctx.config, ctx.env, ctx.stdout
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
    _check_archive(config, report, out)
    for problem in scratch_problems():
        report(False, problem)
    if "PORTAL_SECRET_KEY" not in env:
        print(
            "[note] PORTAL_SECRET_KEY is not set: open forms stop working after a restart", file=out
        )
    _check_conversation(config, report, out)
    print("all checks passed" if not problems else f"{problems} problem(s) found", file=out)
    return ExitStatus.OK if not problems else ExitStatus.ERROR


def _check_archive(config: Config, report: Callable[[bool, str], None], out: TextIO) -> None:
    """With PORTAL_STORE=s3: the bucket reached, credentials taken, a real write and delete."""
    if config.store == "local":
        return  # the data directory checks above are the archive's
    try:
        archive = open_archive(config)
        notes = archive.verify()
    except (ConfigError, ArchiveUnavailable) as exc:
        report(False, f"PORTAL_STORE={config.store}: {exc}")
        return
    report(True, archive.describe() + "; a test object was written and deleted")
    for note in notes:
        warning = note.startswith("WARNING: ")
        print(
            f"[warning] {note.removeprefix('WARNING: ')}" if warning else f"[note] {note}", file=out
        )
    print(
        f"[note] rate budget: this node takes 1/{config.nodes} of PORTAL_RATE_PER_MINUTE="
        f"{config.rate_per_minute} (PORTAL_NODES={config.nodes}); set PORTAL_NODES to the "
        "number of nodes on every node",
        file=out,
    )


def _check_questionnaire(config: Config, report: Callable[[bool, str], None]) -> None:
    """Every mistake in the questionnaire, each with its line: the server would refuse it."""
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
    salt = config.data_dir / SALT_NAME
    if config.store != "local":
        print(
            f"[note] receipt salt: `{SALT_NAME}` in the bucket, shared by every node; back it "
            "up: without it no witness can read replies",
            file=out,
        )
    elif salt.is_file():
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
