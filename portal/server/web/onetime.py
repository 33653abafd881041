"""One submission per form: a signed one-time value in every form, and the ledger of used ones.

Every form the portal draws carries a fresh random value, signed with the
app's secret key and stamped with the time it was drawn. A POST of that form
claims the value before anything is committed; a second POST of the same
form (a reload of the "received" page, a double click, a replay) finds it
claimed and is answered with the "received" page again, without storing
anything. Forging a value needs the secret key, so one form token cannot be
turned into more submissions.

The ledger lives in anonymous shared memory created before gunicorn forks
its workers, like the rate bucket: every worker sees every claim, and
nothing of it is ever written to disk. It holds a keyed hash of each value
(the key is random per start and exists only in memory), not the value
itself, and each entry is dropped when its form's signature expires.

What a repeated POST is shown is kept in the entry too (today nothing per
submission; later a receipt), sealed with a key derived from the form's
value, so only a request carrying that value can read it back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import multiprocessing
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from itsdangerous import BadSignature, TimestampSigner

from portal.server.locks import SharedLock
from portal.server.store import Archive, ArchiveUnavailable, FormClaim

# A form's value is valid as long as its CSRF token: a slow upload over Tor
# may take hours. The ledger keeps each entry until then.
FORM_LIFETIME = dt.timedelta(hours=12)
_SALT = "portal.form-once"
_NONCE_BYTES = 16

KEY_SIZE = 16
# The ledger's keyed hash of a value: its KEY_SIZE-byte key, then the 32-byte
# key that seals its page state (ChaCha20-Poly1305).
_DIGEST_SIZE = KEY_SIZE + 32
# Room for what the "received" page shows again (a receipt, later), sealed.
PAGE_STATE_SIZE = 64
_SEAL_OVERHEAD = 12 + 16  # ChaCha20-Poly1305 nonce and tag
_SEALED_SIZE = 2 + PAGE_STATE_SIZE + _SEAL_OVERHEAD
_SLOT_BYTES = KEY_SIZE + _SEALED_SIZE

# Slot states. FREE was used and is free again: look-ups go on past it
# (a later slot of the window may hold the value), NEVER ends them.
NEVER, STORING, STORED, FREE = 0, 1, 2, 3
# The slots a value may live in, from where its hash points.
PROBE_WINDOW = 64


class InvalidFormValue(Exception):
    """The form's one-time value is missing, forged or expired."""


@dataclass(frozen=True)
class FormValue:
    """A verified one-time value: what identifies the form, and until when."""

    nonce: bytes
    seconds_left: float


class FormSigner:
    def __init__(self, secret_key: bytes) -> None:
        self._signer = TimestampSigner(secret_key, salt=_SALT)

    def issue(self) -> str:
        return self._signer.sign(secrets.token_urlsafe(_NONCE_BYTES)).decode("ascii")

    def verify(self, value: str | None) -> FormValue:
        lifetime = FORM_LIFETIME.total_seconds()
        try:
            nonce, stamp = self._signer.unsign(
                (value or "").encode("ascii", "replace"),
                max_age=int(lifetime),
                return_timestamp=True,
            )
        except BadSignature:  # also covers an expired signature
            raise InvalidFormValue("the form's one-time value is not valid") from None
        left = stamp.timestamp() + lifetime - time.time()
        return FormValue(nonce=bytes(nonce), seconds_left=max(0.0, left))


@dataclass(frozen=True)
class Claimed:
    """This request holds the form: it stores, then calls `complete` or `release`."""

    key: bytes
    page_key: bytes
    # Where the claim was put in this node's ledger: `complete` and `release` look there first.
    slot: int = -1


@dataclass(frozen=True)
class AlreadyStored:
    """The form was stored before; `page_state` is what its "received" page showed."""

    page_state: bytes


class StillStoring:
    """Another request with this form is storing it right now."""


ClaimResult = Claimed | AlreadyStored | StillStoring


class FormLedger:
    """The set of forms already used, in memory shared by every worker.

    A hash table of twice `capacity` slots; a value's keyed hash picks a
    window of `PROBE_WINDOW` neighbouring slots, and the value lives in one
    of them or nowhere. Every claim looks at that window only, whatever the
    table holds: the work (and the time the lock all workers share is held)
    is the same for the first claim and at the cap, and nothing is ever
    rebuilt. A released or expired entry's slot is reused in place.
    `capacity` should cover every submission the rate limit lets through
    in `FORM_LIFETIME`; at half full a window is all live about once in
    2^64 claims. If ever it is, the entry of that window that expires first
    is forgotten (that form could then be stored once more).
    """

    def __init__(
        self,
        capacity: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        alive: Callable[[int], bool] | None = None,
    ) -> None:
        self._size = max(PROBE_WINDOW, 2 * capacity)
        self._data = multiprocessing.RawArray("B", self._size * _SLOT_BYTES)
        # One view for every access (the shared memory is never replaced or resized).
        self._bytes = memoryview(self._data).cast("B")
        self._state = multiprocessing.RawArray("b", self._size)
        self._owner = multiprocessing.RawArray("i", self._size)
        self._expires = multiprocessing.RawArray("d", self._size)
        self._clock = clock
        self._alive = alive or _process_alive
        self._lock = SharedLock("portal-form-ledger")
        # Random per start, memory only: the table never holds a form's value.
        self._hash_key = secrets.token_bytes(32)

    def claim(self, form: FormValue) -> ClaimResult:
        # Both from one keyed BLAKE2b of the value (a PRF, keyed per start).
        digest = hashlib.blake2b(form.nonce, key=self._hash_key, digest_size=_DIGEST_SIZE).digest()
        key, page_key = digest[:KEY_SIZE], digest[KEY_SIZE:]
        with self._lock:
            now = self._clock()
            slot = self._find(key, now)
            if slot is not None:
                if self._state[slot] == STORED:
                    return AlreadyStored(_unseal(page_key, self._sealed(slot)))
                return StillStoring()
            slot = self._put(key, STORING, os.getpid(), now + form.seconds_left + 60, b"", now)
        return Claimed(key=key, page_key=page_key, slot=slot)

    def complete(self, claim: Claimed, page_state: bytes = b"") -> None:
        """Mark the form stored, keeping what its "received" page shows."""
        # Nothing to keep (the usual case): no seal. An empty sealed area
        # does not open, and what does not open reads as nothing (`_unseal`).
        sealed = _seal(claim.page_key, page_state) if page_state else b""
        with self._lock:
            slot = self._claimed(claim, self._clock())
            if slot is not None:
                self._write(slot, claim.key, sealed)
                self._state[slot] = STORED

    def release(self, claim: Claimed) -> None:
        """Forget a claim whose submission was not stored: the form may be sent again."""
        with self._lock:
            slot = self._claimed(claim, self._clock())
            if slot is not None and self._state[slot] == STORING:
                self._state[slot] = FREE

    def _live(self, slot: int, now: float) -> bool:
        state = self._state[slot]
        if state in (NEVER, FREE) or self._expires[slot] <= now:
            return False
        # A worker killed while storing leaves its claim behind; it holds nothing.
        return state == STORED or self._alive(self._owner[slot])

    def _claimed(self, claim: Claimed, now: float) -> int | None:
        """The slot of a claim this worker holds: where `claim` put it, else looked up.

        The slot still holds it if it is storing, unexpired and has its key:
        only a claim that expired or whose worker died can be replaced, and
        the worker asking is this claim's own.
        """
        slot = claim.slot
        if (
            0 <= slot < self._size
            and self._state[slot] == STORING
            and self._expires[slot] > now
            and self._key(slot) == claim.key
        ):
            return slot
        return self._find(claim.key, now)

    def _window(self, key: bytes) -> range:
        start = int.from_bytes(key[:8], "big") % self._size
        return range(start, start + PROBE_WINDOW)

    def _find(self, key: bytes, now: float) -> int | None:
        for index in self._window(key):
            slot = index % self._size
            if self._state[slot] == NEVER:
                return None  # slots are filled in order: nothing further on
            if self._live(slot, now) and self._key(slot) == key:
                return slot
        return None

    def _put(self, key: bytes, state: int, owner: int, expires: float, sealed: bytes,
             now: float) -> int:  # fmt: skip
        window = [index % self._size for index in self._window(key)]
        slot = next((s for s in window if not self._live(s, now)), None)
        if slot is None:  # the whole window is live: forget the entry that expires first
            slot = min(window, key=lambda s: self._expires[s])
        self._write(slot, key, sealed)
        self._state[slot] = state
        self._owner[slot] = owner
        self._expires[slot] = expires
        return slot

    def _key(self, slot: int) -> bytes:
        start = slot * _SLOT_BYTES
        return bytes(self._bytes[start : start + KEY_SIZE])

    def _sealed(self, slot: int) -> bytes:
        start = slot * _SLOT_BYTES + KEY_SIZE
        return bytes(self._bytes[start : start + _SEALED_SIZE])

    def _write(self, slot: int, key: bytes, sealed: bytes) -> None:
        start = slot * _SLOT_BYTES
        record = key + sealed.ljust(_SEALED_SIZE, b"\0")
        self._bytes[start : start + _SLOT_BYTES] = record


log = logging.getLogger("portal.forms")


@dataclass(frozen=True)
class SharedClaimed(Claimed):
    """A claim held in this node's ledger and in the archive, for every node to see."""

    name: str = ""


class SharedFormLedger:
    """The node's own ledger first, then the archive's claim across nodes (issue 24).

    With the local archive the second step always succeeds and costs
    nothing. With a bucket, a form posted to two nodes is claimed by one:
    the other is told it was stored (or waits while it is being stored). If
    the bucket cannot be reached, this node's ledger decides alone, and the
    submission is still accepted into the spool (docs/DEPLOYMENT.md).
    """

    def __init__(self, ledger: FormLedger, archive: Archive) -> None:
        self.ledger = ledger
        self._archive = archive

    def claim(self, form: FormValue) -> ClaimResult:
        local = self.ledger.claim(form)
        if not isinstance(local, Claimed):
            return local
        name = form.nonce.decode("ascii", "replace")
        try:
            shared = self._archive.claim_form(name)
        except ArchiveUnavailable as exc:
            log.warning("form claims across nodes unavailable, this node decides alone: %s", exc)
            return local
        if shared is FormClaim.CLAIMED:
            return SharedClaimed(key=local.key, page_key=local.page_key, slot=local.slot, name=name)
        if shared is FormClaim.STORED:
            self.ledger.complete(local, b"")
            return AlreadyStored(b"")
        self.ledger.release(local)
        return StillStoring()

    def complete(self, claim: Claimed, page_state: bytes = b"") -> None:
        self.ledger.complete(claim, page_state)
        if isinstance(claim, SharedClaimed):
            try:
                self._archive.form_stored(claim.name)
            except ArchiveUnavailable as exc:
                log.warning("could not mark a form stored in the archive: %s", exc)

    def release(self, claim: Claimed) -> None:
        self.ledger.release(claim)
        if isinstance(claim, SharedClaimed):
            try:
                self._archive.release_form(claim.name)
            except ArchiveUnavailable as exc:
                log.warning("could not release a form's claim in the archive: %s", exc)


def _seal(page_key: bytes, page_state: bytes) -> bytes:
    if len(page_state) > PAGE_STATE_SIZE:
        raise ValueError(f"page state is limited to {PAGE_STATE_SIZE} bytes")
    padded = len(page_state).to_bytes(2, "big") + page_state.ljust(PAGE_STATE_SIZE, b"\0")
    nonce = secrets.token_bytes(12)
    return nonce + ChaCha20Poly1305(page_key).encrypt(nonce, padded, None)


def _unseal(page_key: bytes, sealed: bytes) -> bytes:
    try:
        padded = ChaCha20Poly1305(page_key).decrypt(sealed[:12], sealed[12:], None)
    except InvalidTag:
        return b""  # completed before its page state was written: nothing to show
    return padded[2 : 2 + int.from_bytes(padded[:2], "big")]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
