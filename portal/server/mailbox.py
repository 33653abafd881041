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

Every reply carries a signature by the organisation's offline signing key
(`portal.core.replysig`, a `<name>.sig` beside `<name>.age`). It is checked
before a reply is stored and again before one is shown: a file planted in
the data folder, or an outbox written by someone who is not a reviewer,
never reaches a witness. A reply the witness deleted leaves a tombstone
(`<name>.deleted`, empty) so that importing the same outbox again does not
bring it back; a reply signed more than `PORTAL_REPLY_DAYS` ago is refused,
so an old outbox cannot outlive its tombstones.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import nacl.pwhash.argon2id as argon2id

from portal.core.age import AgeError, X25519Identity, decrypt, header_stanzas
from portal.core.conversation import is_mailbox_name, mailbox_name
from portal.core.fsio import DIR_MODE, create_new, fsync_dir
from portal.core.layout import (
    SECONDS_PER_DAY,
    SUBMISSIONS_DIR,
    day_date,
    day_floor,
    day_timestamp,
)
from portal.core.receipt import Receipt
from portal.core.replykey import KdfCost, ReplyKey
from portal.core.replykey import derive_identity as derive_from_secret
from portal.core.replysig import (
    MAX_SIGNATURE_FILE,
    SIGNATURE_SUFFIX,
    ReplySigner,
    SignatureError,
    check_signature,
)

SALT_NAME = "receipt-salt"
# The argon2id cost the receipts were made with, beside the salt (issue 21).
KDF_RECORD_NAME = "receipt-salt.kdf"
KDF_RECORD_FORMAT = "testimony-portal/receipt-kdf/1"
REPLIES_DIR = "replies"
# Work folders of `ReplyStore.reseal`, beside `replies/` in the data directory.
RESEAL_NEW = ".replies-new"
RESEAL_OLD = ".replies-old"
_REPLY_RE = re.compile(r"[0-9a-f]{32}\.age")
_TOMBSTONE_RE = re.compile(r"[0-9a-f]{32}\.deleted")
TOMBSTONE_SUFFIX = ".deleted"
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


def _what_depends_on_the_salt(data_dir: Path) -> str | None:
    """Submissions or replies in the data directory, in words; None when there are none."""
    submissions = Path(data_dir) / SUBMISSIONS_DIR
    count = sum(1 for _ in os.scandir(submissions)) if submissions.is_dir() else 0
    replies = ReplyStore(data_dir)
    reply_count = sum(1 for box in replies.mailboxes() for _ in replies._entries(box))
    held = [
        f"{count} submission(s)" if count else "",
        f"{reply_count} reply(ies)" if reply_count else "",
    ]
    return " and ".join(h for h in held if h) or None


def _kdf_record(cost: KdfCost) -> bytes:
    document = {"format": KDF_RECORD_FORMAT, "opslimit": cost.opslimit, "memlimit": cost.memlimit}
    return json.dumps(document, sort_keys=True).encode("ascii") + b"\n"


def check_salt(data_dir: Path, cost: KdfCost | None = None) -> bytes | None:
    """The salt and, with `cost`, that it is the cost the receipts were made with.

    Returns None when there is no salt yet and nothing depends on one.

    Raises:
        MailboxError: the salt is missing while submissions or replies exist,
            damaged, or the configured cost differs from the recorded one.
    """
    path = Path(data_dir) / SALT_NAME
    if path.is_symlink():
        raise MailboxError(f"{path} is a symbolic link; refusing to use it")
    if not path.exists():
        held = _what_depends_on_the_salt(data_dir)
        if held is None:
            return None
        raise MailboxError(
            f"the receipt salt {path} is missing, but the data directory holds {held}. A new "
            "salt would give every witness's receipt another key: no witness could read their "
            f"replies. Restore {SALT_NAME} and {KDF_RECORD_NAME} from your backup (every "
            "`testimony-portal export` copies them onto the export medium) into "
            f"{Path(data_dir)}, then start again"
        )
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
    if cost is not None:
        _check_kdf_record(Path(data_dir) / KDF_RECORD_NAME, cost)
    return salt


def _check_kdf_record(path: Path, cost: KdfCost) -> None:
    try:
        recorded = json.loads(path.read_bytes())
        was = KdfCost(int(recorded["opslimit"]), int(recorded["memlimit"]))
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        raise MailboxError(f"{path} is damaged; restore it from your backup") from None
    if was != cost:
        raise MailboxError(
            f"PORTAL_RECEIPT_KDF_OPS/PORTAL_RECEIPT_KDF_MEMORY_KIB give argon2id {cost.opslimit} "
            f"pass(es) and {cost.memlimit // 1024} KiB, but this deployment's receipts were made "
            f"with {was.opslimit} and {was.memlimit // 1024} KiB (recorded in {path}). Another "
            "cost gives every receipt another key: set them back"
        )


def ensure_salt(data_dir: Path, cost: KdfCost | None = None) -> bytes:
    """The deployment's salt, created (random, 0600, fsynced) the first time.

    Losing it loses every mailbox: the same receipt would then derive a
    different identity. It is not secret; it is in the data directory so
    that backups of the data carry it (and every export copies it). The
    argon2id cost is recorded beside it (`receipt-salt.kdf`) when `cost` is
    given, and a changed cost is refused later.

    Raises:
        MailboxError: see `check_salt`; a missing salt is made anew only
            while no submission or reply depends on it.
    """
    path = Path(data_dir) / SALT_NAME
    salt = check_salt(data_dir, cost)
    if salt is None:
        with contextlib.suppress(FileExistsError):
            create_new(path, os.urandom(argon2id.SALTBYTES).hex().encode("ascii") + b"\n")
        salt = check_salt(data_dir, cost)
        assert salt is not None
    record = Path(data_dir) / KDF_RECORD_NAME
    if cost is not None and not record.exists():
        with contextlib.suppress(FileExistsError):
            create_new(record, _kdf_record(cost))
    return salt


def back_up_salt(data_dir: Path, dest: Path) -> list[Path]:
    """Copy the salt and its recorded cost to `dest` (an export medium); the copies made.

    A file already on `dest` with the same bytes is left; one with other
    bytes (another deployment's export) is not replaced.

    Raises:
        MailboxError: `dest` holds another deployment's salt.
    """
    copied = []
    for name in (SALT_NAME, KDF_RECORD_NAME):
        source = Path(data_dir) / name
        if source.is_symlink() or not source.is_file():
            continue
        data = source.read_bytes()
        target = Path(dest) / name
        if target.exists():
            if target.read_bytes() != data:
                raise MailboxError(
                    f"{target} is another deployment's {name}; not replaced. Export each "
                    "deployment to its own medium"
                )
            continue
        create_new(target, data)
        copied.append(target)
    return copied


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


def _read_signature(path: Path) -> bytes:
    """A signature file's bytes, never through a link, never more than a signature's size."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        return handle.read(MAX_SIGNATURE_FILE + 1)


def reply_text(plaintext: bytes) -> str:
    """A reply's text: the reviewer pads it with NUL bytes to its size bucket (issue 21)."""
    return plaintext.rstrip(b"\x00").decode("utf-8")


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

    def add(self, mailbox: str, data: bytes, signature: bytes | None) -> bool: ...

    def purge_older_than(self, days: int, now: dt.datetime | None = None) -> int: ...

    def reseal(self, days: int, rng: random.Random | None = None) -> int: ...


def reply_name(data: bytes) -> str:
    """A reply's file name: a hash of its ciphertext, so importing it twice stores it once."""
    return hashlib.sha256(data).hexdigest()[:32] + ".age"


def is_reply_name(name: str) -> bool:
    return _REPLY_RE.fullmatch(name) is not None


class UnreadableReply(MailboxError):
    """A stored reply not shown: unsigned, signed by no reply signer, or not for this key."""


def accept_reply(
    mailbox: str,
    data: bytes,
    signature: bytes | None,
    signers: Sequence[ReplySigner],
    reply_days: int,
) -> bytes:
    """Check a reply offered for import, before any of it is stored; returns its signature.

    Both reply stores (the data directory, a bucket) take only this.

    Raises:
        ReplyRejected: not a reply file, not signed by a reply signer for
            this mailbox, or signed more than `reply_days` ago.
    """
    check_reply_file(data)
    if signature is None:
        raise ReplyRejected(
            "no signature file beside it: not written by `testimony-review reply --signing-key`"
        )
    try:
        written = check_signature(signature, mailbox, data, signers)
    except SignatureError as exc:
        raise ReplyRejected(f"not signed by the organisation: {exc}") from None
    if (dt.datetime.now(dt.UTC).date() - written).days > reply_days:
        raise ReplyRejected(
            f"signed on {written}, more than PORTAL_REPLY_DAYS={reply_days} days ago"
        )
    return signature


def open_reply(
    data: bytes,
    signature: bytes,
    mailbox: str,
    signers: Sequence[ReplySigner],
    identity: X25519Identity,
) -> str:
    """A stored reply's text, in memory, only if a reply signer signed it for this mailbox.

    Raises:
        UnreadableReply: the signature does not hold, or the reply does not
            decrypt with `identity` (damaged, or planted): the witness sees
            only what the organisation wrote to them.
    """
    try:
        check_signature(signature, mailbox, data, signers)
        return reply_text(decrypt(data, [identity]))
    except (AgeError, UnicodeDecodeError, SignatureError):
        raise UnreadableReply("not shown") from None


class ReplyStore:
    """`replies/<mailbox>/<hash>.age` under the data directory: ciphertext only.

    Times are kept to the day, like submissions'. A reply's name is a hash
    of its ciphertext, so importing the same outbox twice stores nothing new.
    """

    def __init__(
        self, data_dir: Path, signers: Sequence[ReplySigner] = (), *, reply_days: int = 90
    ) -> None:
        self.root = Path(data_dir) / REPLIES_DIR
        self.signers = tuple(signers)
        self.reply_days = reply_days

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

    def _entries(self, mailbox: str, *, tombstones: bool = False) -> Iterator[Path]:
        folder = self._mailbox_dir(mailbox)
        if folder.is_symlink() or not folder.is_dir():
            return
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            wanted = _REPLY_RE.fullmatch(entry.name) or (
                tombstones and _TOMBSTONE_RE.fullmatch(entry.name)
            )
            if wanted and entry.is_file(follow_symlinks=False):
                yield Path(entry.path)

    def read(self, identity: X25519Identity) -> list[Reply]:
        """The replies waiting for `identity`, decrypted in memory, oldest first.

        A file without a valid signature by one of the reply signers, or that
        does not decrypt with this identity (damaged, or planted), is
        skipped: the witness sees only what the organisation wrote to them.
        """
        replies = []
        mailbox = mailbox_name(str(identity.recipient))
        for path in self._entries(mailbox):
            try:
                stamp = path.stat().st_mtime
                signature = _read_signature(path.with_suffix(SIGNATURE_SUFFIX))
                text = open_reply(path.read_bytes(), signature, mailbox, self.signers, identity)
            except (OSError, UnreadableReply):
                continue
            replies.append(Reply(id=path.stem, text=text, received=day_date(stamp)))
        replies.sort(key=lambda r: (r.received, r.id))
        return replies

    def delete(self, identity: X25519Identity, reply_ids: list[str]) -> int:
        """Delete the named replies of this identity's mailbox; returns how many went."""
        mailbox = mailbox_name(str(identity.recipient))
        wanted = {f"{i}.age" for i in reply_ids}
        removed = 0
        stamp = day_timestamp()
        for path in list(self._entries(mailbox)):
            if path.name in wanted:
                # The tombstone first: an outbox imported again must not
                # bring back what the witness deleted.
                tombstone = path.with_suffix(TOMBSTONE_SUFFIX)
                with contextlib.suppress(FileExistsError):
                    create_new(tombstone, b"", sync_dir=False)
                os.utime(tombstone, (stamp, stamp))
                # missing_ok: the daily reseal may have just swapped the folder.
                path.unlink(missing_ok=True)
                path.with_suffix(SIGNATURE_SUFFIX).unlink(missing_ok=True)
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

    def add(self, mailbox: str, data: bytes, signature: bytes | None) -> bool:
        """Store one signed reply durably; False if it was already there or was deleted.

        Raises:
            ReplyRejected: not a reply file, not signed by a reply signer for
                this mailbox, or signed too long ago.
        """
        signature = accept_reply(mailbox, data, signature, self.signers, self.reply_days)
        folder = self._mailbox_dir(mailbox)
        name = reply_name(data)
        target = folder / name
        if os.path.lexists(target) or os.path.lexists(target.with_suffix(TOMBSTONE_SUFFIX)):
            return False
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
        if folder.is_symlink():
            # Planted: writing through it would put a reply (and its times)
            # wherever it points.
            raise ReplyRejected(f"{folder} is a symbolic link; refusing to write through it")
        stamp = day_timestamp()
        # The signature lands first, so a reply is never in place without it.
        for final, content in ((target.with_suffix(SIGNATURE_SUFFIX), signature), (target, data)):
            temp = folder / f".{final.name}.tmp"
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            create_new(temp, content, sync_dir=False)
            os.utime(temp, (stamp, stamp))
            os.rename(temp, final)
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
            entries = [(p, p.stat().st_mtime) for p in self._entries(mailbox, tombstones=True)]
            entries = [(p, t) for p, t in entries if t >= cutoff]
            if not entries:
                continue
            rng.shuffle(entries)
            box = fresh / mailbox
            box.mkdir(mode=DIR_MODE)
            for path, stamp in entries:
                day = day_floor(stamp)
                for source in self._with_companions(path):
                    target = box / source.name
                    create_new(target, source.read_bytes(), sync_dir=False)
                    os.utime(target, (day, day))
                kept += path.suffix == ".age"
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

    def _with_companions(self, path: Path) -> list[Path]:
        """A reply file and its signature; a tombstone alone."""
        signature = path.with_suffix(SIGNATURE_SUFFIX)
        return [path, signature] if path.suffix == ".age" and signature.is_file() else [path]

    def purge_older_than(self, days: int, now: dt.datetime | None = None) -> int:
        """Delete replies (and tombstones) more than `days` days old; returns how many replies."""
        cutoff = day_timestamp(now) - days * SECONDS_PER_DAY
        removed = 0
        for mailbox in self.mailboxes():
            for path in list(self._entries(mailbox, tombstones=True)):
                if path.stat().st_mtime < cutoff:
                    for item in self._with_companions(path):
                        item.unlink(missing_ok=True)
                    removed += path.suffix == ".age"
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
            if item.name.endswith(SIGNATURE_SUFFIX) and item.is_file(follow_symlinks=False):
                continue  # read with its reply
            if not item.name.endswith(".age") or not item.is_file(follow_symlinks=False):
                result.rejected.append(f"{where}: not a reply file (*.age)")
                continue
            try:
                if item.stat(follow_symlinks=False).st_size > MAX_REPLY_BYTES:
                    raise ReplyRejected(f"larger than {MAX_REPLY_BYTES // 1024} KiB")
                data = Path(item.path).read_bytes()
                signature_path = Path(item.path).with_suffix(SIGNATURE_SUFFIX)
                try:
                    signature: bytes | None = _read_signature(signature_path)
                except OSError:
                    signature = None
                if store.add(entry.name, data, signature):
                    result.added += 1
                else:
                    result.already += 1
            except ReplyRejected as exc:
                result.rejected.append(f"{where}: {exc}")
    return result
