"""From a receipt to the witness's age identity, and the replies waiting for it.

No Flask here. The receipt is turned into an X25519 identity with argon2id
(PyNaCl) under a per-deployment salt (`portal.core.replykey`); what the
reviewer needs to reach that identity is sealed inside each manifest made
with that receipt (its recipient for a version 1 receipt, its seed for a
version 2 one), and replies for it wait,
encrypted on the reviewer's air-gapped machine, in `replies/<mailbox>/`,
where `<mailbox>` is a hash of the recipient (see `portal.core.conversation`).

Nothing derived from a receipt is written at submission time: a mailbox
folder exists only once the organisation has imported a reply to it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import nacl.pwhash.argon2id as argon2id

from portal.core.age import AgeError, X25519Identity, decrypt, header_stanzas
from portal.core.conversation import is_mailbox_name, mailbox_name
from portal.core.fsio import DIR_MODE, create_new, fsync_dir
from portal.core.layout import SECONDS_PER_DAY, day_date, day_floor, day_timestamp
from portal.core.receipt import Receipt
from portal.core.replykey import KdfCost, ReplyKey
from portal.core.replykey import derive_identity as derive_from_secret

SALT_NAME = "receipt-salt"
REPLIES_DIR = "replies"
# Work folders of `ReplyStore.reseal`, beside `replies/` in the data directory.
RESEAL_NEW = ".replies-new"
RESEAL_OLD = ".replies-old"
_REPLY_RE = re.compile(r"[0-9a-f]{32}\.age")
# A reply is a short text; anything near this size is not one.
MAX_REPLY_BYTES = 256 * 1024


class MailboxError(Exception):
    """The reply store or its salt cannot be used; the message says what to do."""


class ReplyRejected(MailboxError):
    """A file offered for import is not a reply this server will keep."""


# A receipt holds 83 random bits, so guessing one is out of reach whatever
# the cost: argon2id is a margin on top (for a receipt partly seen or
# partly remembered), not what keeps it secret. A follow-up login runs one
# derivation (a first submission with a version 2 receipt runs none: it
# seals the receipt's seed, and the reviewer derives offline). The default
# is OWASP's minimum for argon2id passwords (19 MiB, 2 passes).
# Measured on the development machine (2 cores, 2026-11, PyNaCl): about
# 15 ms, against 140 ms for 64 MiB and 3 passes, which capped the whole
# server at a few submissions a second. Memory stays bounded by
# `ReceiptKeys`: at most `concurrency` derivations at once per worker.
DEFAULT_COST = KdfCost(opslimit=2, memlimit=19 * 1024 * 1024)


def configured_cost(opslimit: int | None, memory_kib: int | None) -> KdfCost:
    """The cost from settings; unset values take `DEFAULT_COST` (read now, not at import)."""
    cost = KdfCost(
        opslimit=opslimit or DEFAULT_COST.opslimit,
        memlimit=(memory_kib * 1024) if memory_kib else DEFAULT_COST.memlimit,
    )
    if cost.opslimit < argon2id.OPSLIMIT_MIN or cost.memlimit < argon2id.MEMLIMIT_MIN:
        raise MailboxError(
            f"receipt key derivation needs at least {argon2id.OPSLIMIT_MIN} pass and "
            f"{argon2id.MEMLIMIT_MIN // 1024} KiB (PORTAL_RECEIPT_KDF_OPS, "
            "PORTAL_RECEIPT_KDF_MEMORY_KIB)"
        )
    return cost


def ensure_salt(data_dir: Path) -> bytes:
    """The deployment's salt, created (random, 0600, fsynced) the first time.

    Losing it loses every mailbox: the same receipt would then derive a
    different identity. It is not secret; it is in the data directory so
    that backups of the data carry it.
    """
    path = Path(data_dir) / SALT_NAME
    if path.is_symlink():
        raise MailboxError(f"{path} is a symbolic link; refusing to use it")
    with contextlib.suppress(FileExistsError):
        create_new(path, os.urandom(argon2id.SALTBYTES).hex().encode("ascii") + b"\n")
    text = path.read_text("ascii", "replace").strip()
    try:
        salt = bytes.fromhex(text)
    except ValueError:
        salt = b""
    if len(salt) != argon2id.SALTBYTES:
        raise MailboxError(
            f"{path} is damaged (expected {argon2id.SALTBYTES * 2} hex digits). Restore it "
            "from your backup: without the original salt no witness can read replies"
        )
    return salt


def derive_identity(receipt: Receipt, salt: bytes, cost: KdfCost) -> X25519Identity:
    """The witness's age identity: argon2id over the receipt's secret, under the salt."""
    return derive_from_secret(receipt.secret(), salt, cost)


class ReceiptKeys:
    """Derivations for one worker process, at most `concurrency` at a time.

    Each derivation holds `cost.memlimit` bytes while it runs; the semaphore
    bounds the memory a flood of receipts can take, and the global rate
    bucket (spent by every POST) bounds how many arrive at all.
    """

    def __init__(self, salt: bytes, cost: KdfCost, concurrency: int) -> None:
        self._salt = salt
        self.cost = cost
        self._slots = threading.BoundedSemaphore(concurrency)
        self.derivations = 0  # counted, so tests can prove a typo never gets here

    def measure_cpu_seconds(self) -> float:
        """The CPU time one derivation takes at this cost, measured now (the least of three)."""
        probe = b"testimony-portal/cost-probe"
        times = []
        for _ in range(3):
            started = time.thread_time()
            argon2id.kdf(32, probe, self._salt, opslimit=self.cost.opslimit,
                         memlimit=self.cost.memlimit)  # fmt: skip
            times.append(time.thread_time() - started)
        return max(min(times), 1e-6)

    def derive(self, receipt: Receipt) -> X25519Identity:
        with self._slots:
            self.derivations += 1
            return derive_identity(receipt, self._salt, self.cost)

    def reply_key(self, receipt: Receipt) -> ReplyKey:
        """What a version 2 receipt's submissions seal: no derivation, one SHA-256."""
        return ReplyKey(seed=receipt.seed(), salt=self._salt, cost=self.cost)


@dataclass(frozen=True)
class Reply:
    id: str
    text: str
    received: str


def check_reply_file(data: bytes) -> None:
    """A reply must be a binary age file for exactly one X25519 recipient.

    Raises:
        ReplyRejected: saying what is wrong.
    """
    if not data:
        raise ReplyRejected("empty file")
    if len(data) > MAX_REPLY_BYTES:
        raise ReplyRejected(f"larger than {MAX_REPLY_BYTES // 1024} KiB; a reply is a short text")
    try:
        stanzas = header_stanzas(io.BytesIO(data))
    except AgeError as exc:
        raise ReplyRejected(f"not an age file ({exc})") from None
    kinds = [stanza.type for stanza in stanzas]
    if kinds != ["X25519"]:
        raise ReplyRejected(
            "not addressed to one witness (a reply has exactly one X25519 recipient)"
        )


class ReplyBox(Protocol):
    """Where replies wait: `ReplyStore` on the data directory, or a bucket (objectstore.py)."""

    def initialise(self) -> None: ...

    def read(self, identity: X25519Identity) -> list[Reply]: ...

    def delete(self, identity: X25519Identity, reply_ids: list[str]) -> int: ...

    def add(self, mailbox: str, data: bytes) -> bool: ...

    def purge_older_than(self, days: int, now: dt.datetime | None = None) -> int: ...

    def reseal(self, days: int, rng: random.Random | None = None) -> int: ...


def reply_name(data: bytes) -> str:
    """A reply's file name: a hash of its ciphertext, so importing it twice stores it once."""
    return hashlib.sha256(data).hexdigest()[:32] + ".age"


def is_reply_name(name: str) -> bool:
    return _REPLY_RE.fullmatch(name) is not None


class ReplyStore:
    """`replies/<mailbox>/<hash>.age` under the data directory: ciphertext only.

    Times are kept to the day, like submissions'. A reply's name is a hash
    of its ciphertext, so importing the same outbox twice stores nothing new.
    """

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / REPLIES_DIR

    def initialise(self) -> None:
        self._recover_reseal()
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if self.root.is_symlink():
            raise MailboxError(f"{self.root} is a symbolic link; refusing to use it")
        os.chmod(self.root, DIR_MODE)

    def _mailbox_dir(self, mailbox: str) -> Path:
        if not is_mailbox_name(mailbox):
            raise ReplyRejected(f"not a mailbox name: {mailbox[:80]!r}")
        return self.root / mailbox

    def _entries(self, mailbox: str) -> Iterator[Path]:
        folder = self._mailbox_dir(mailbox)
        if folder.is_symlink() or not folder.is_dir():
            return
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if _REPLY_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                yield Path(entry.path)

    def read(self, identity: X25519Identity) -> list[Reply]:
        """The replies waiting for `identity`, decrypted in memory, oldest first.

        A file that does not decrypt with this identity (damaged, or planted)
        is skipped: the witness sees only what was really written to them.
        """
        replies = []
        for path in self._entries(mailbox_name(str(identity.recipient))):
            try:
                stamp = path.stat().st_mtime
                text = decrypt(path.read_bytes(), [identity]).decode("utf-8")
            except (OSError, AgeError, UnicodeDecodeError):
                continue
            replies.append(Reply(id=path.stem, text=text, received=day_date(stamp)))
        replies.sort(key=lambda r: (r.received, r.id))
        return replies

    def delete(self, identity: X25519Identity, reply_ids: list[str]) -> int:
        """Delete the named replies of this identity's mailbox; returns how many went."""
        mailbox = mailbox_name(str(identity.recipient))
        wanted = {f"{i}.age" for i in reply_ids}
        removed = 0
        for path in list(self._entries(mailbox)):
            if path.name in wanted:
                # missing_ok: the daily reseal may have just swapped the folder.
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            self._tidy(mailbox)
        return removed

    def _tidy(self, mailbox: str) -> None:
        folder = self._mailbox_dir(mailbox)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
        stamp = day_timestamp()
        for path in (folder, self.root):
            with contextlib.suppress(OSError):
                os.utime(path, (stamp, stamp))
                fsync_dir(path)

    def add(self, mailbox: str, data: bytes) -> bool:
        """Store one reply durably; False if it was already there (idempotent)."""
        check_reply_file(data)
        folder = self._mailbox_dir(mailbox)
        name = reply_name(data)
        target = folder / name
        if os.path.lexists(target):
            return False
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
        if folder.is_symlink():
            # Planted: writing through it would put a reply (and its times)
            # wherever it points.
            raise ReplyRejected(f"{folder} is a symbolic link; refusing to write through it")
        temp = folder / f".{name}.tmp"
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        create_new(temp, data, sync_dir=False)
        stamp = day_timestamp()
        os.utime(temp, (stamp, stamp))
        os.rename(temp, target)
        for path in (folder, self.root):
            fsync_dir(path)
            os.utime(path, (stamp, stamp))
        return True

    def mailboxes(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            e.name
            for e in os.scandir(self.root)
            if is_mailbox_name(e.name) and e.is_dir(follow_symlinks=False)
        )

    @property
    def _fresh(self) -> Path:
        return self.root.with_name(RESEAL_NEW)

    @property
    def _old(self) -> Path:
        return self.root.with_name(RESEAL_OLD)

    def _recover_reseal(self) -> None:
        """Finish or undo a reseal that a crash interrupted; nothing is lost either way."""
        if self._fresh.is_dir() and not self.root.exists():
            os.rename(self._fresh, self.root)  # the swap was half done: finish it
        shutil.rmtree(self._fresh, ignore_errors=True)
        shutil.rmtree(self._old, ignore_errors=True)

    def reseal(self, days: int, rng: random.Random | None = None) -> int:
        """Rewrite `replies/` into fresh files and folders, in random order; returns replies kept.

        Importing replies and a witness deleting them after reading change
        the ctime and birth time of the folders and files involved, to the
        second. Like the daily seal does for submissions, this copies every
        reply still within `days` into a fresh folder, mailbox after mailbox
        in a random order, sets each mtime back to its day, and swaps the
        fresh folder in; afterwards no file-system time under `replies/`
        says more than that the seal ran. Expired replies are not copied.
        """
        rng = rng or random.SystemRandom()
        self._recover_reseal()
        if not self.root.is_dir():
            return 0
        cutoff = day_timestamp() - days * SECONDS_PER_DAY
        fresh = self._fresh
        fresh.mkdir(mode=DIR_MODE)
        kept = 0
        mailboxes = self.mailboxes()
        rng.shuffle(mailboxes)
        for mailbox in mailboxes:
            entries = [(p, p.stat().st_mtime) for p in self._entries(mailbox)]
            entries = [(p, t) for p, t in entries if t >= cutoff]
            if not entries:
                continue
            rng.shuffle(entries)
            box = fresh / mailbox
            box.mkdir(mode=DIR_MODE)
            for path, stamp in entries:
                target = box / path.name
                create_new(target, path.read_bytes(), sync_dir=False)
                day = day_floor(stamp)
                os.utime(target, (day, day))
                kept += 1
            fsync_dir(box)
        today = day_timestamp()
        for folder in [*fresh.iterdir(), fresh]:
            os.utime(folder, (today, today))
        fsync_dir(fresh)
        os.rename(self.root, self._old)
        os.rename(fresh, self.root)
        fsync_dir(self.root.parent)
        shutil.rmtree(self._old)
        os.utime(self.root.parent, (today, today))
        return kept

    def purge_older_than(self, days: int, now: dt.datetime | None = None) -> int:
        """Delete replies imported more than `days` days ago; returns how many."""
        cutoff = day_timestamp(now) - days * SECONDS_PER_DAY
        removed = 0
        for mailbox in self.mailboxes():
            for path in list(self._entries(mailbox)):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            if removed:
                self._tidy(mailbox)
        return removed


@dataclass
class ImportResult:
    added: int = 0
    already: int = 0
    rejected: list[str] = field(default_factory=list)


def import_outbox(store: ReplyBox, outbox: Path) -> ImportResult:
    """Import `OUTBOX/<mailbox>/*.age` as written by `testimony-review reply`.

    Every file is checked on its own; a bad one is named in `rejected` and
    the others are still imported.
    """
    result = ImportResult()
    for entry in sorted(os.scandir(outbox), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not is_mailbox_name(entry.name) or not entry.is_dir(follow_symlinks=False):
            result.rejected.append(f"{entry.name}: not a mailbox folder written by `reply`")
            continue
        for item in sorted(os.scandir(entry.path), key=lambda e: e.name):
            where = f"{entry.name}/{item.name}"
            if not item.name.endswith(".age") or not item.is_file(follow_symlinks=False):
                result.rejected.append(f"{where}: not a reply file (*.age)")
                continue
            try:
                if item.stat(follow_symlinks=False).st_size > MAX_REPLY_BYTES:
                    raise ReplyRejected(f"larger than {MAX_REPLY_BYTES // 1024} KiB")
                data = Path(item.path).read_bytes()
                if store.add(entry.name, data):
                    result.added += 1
                else:
                    result.already += 1
            except ReplyRejected as exc:
                result.rejected.append(f"{where}: {exc}")
    return result
