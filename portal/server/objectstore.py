"""The archive in an S3-compatible bucket, shared by several stateless nodes (issue 24).

Needs the `s3` extra (boto3): `pip install 'testimony-portal[s3]'`.

Keys under `PORTAL_S3_PREFIX` (default `portal`)::

    submissions/<id>/testimony.age     the manifest: present only once every
    submissions/<id>/files/<n>.age     attachment of <id> is (manifest-last)
    replies/<mailbox>/<hash>.age       replies imported for witnesses
    claims/<keyed hash>                one-time form values claimed (see below)
    receipt-salt                       the deployment's salt for receipts
    probe/<random>                     written and deleted by `check` and `serve`

Only ciphertext, keyed hashes and the (public) salt ever reach the bucket.

Publishing. A node never writes a submission to the bucket as it arrives:
it commits to its own spool (fsync, rename) and publishes at the seal, every
submission of the spool in a random order, a few at a time. So LastModified,
the listing and the store's request log show the batch, not arrivals. A
submission's attachments go first and its manifest last, and a submission
*is* its manifest: export lists manifests only, so a publish cut half way
(a SIGKILL, the store going away) leaves attachments nobody lists, which the
next publish from the same spool overwrites with the same bytes. The local
copy is deleted only after the manifest is in the bucket; a node killed
between the two publishes it again (same key, same bytes: no duplicate).
Each object carries the SHA-256 of its bytes (metadata `sha256`), which
export checks on what it downloaded and again on what it reads back.

Claims. A form's one-time value is claimed across nodes by creating
`claims/<hash>` with `If-None-Match: *` (a conditional write: exactly one of
several nodes creating it at once succeeds). Its body says `storing`, then
`stored` once the submission is committed; a failed request deletes it so
the form can be sent again. The hash is keyed with the deployment's
PORTAL_SECRET_KEY, so the bucket never holds the value. Claims older than a
form's lifetime are deleted at each publish. If the bucket cannot be reached
when a form is posted, the node's own ledger decides alone (the submission
is still accepted into the spool); a replay of that form on *another* node
during the outage could then be stored twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import io
import os
import random
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from portal.core.age import X25519Identity
from portal.core.conversation import is_mailbox_name, mailbox_name
from portal.core.fsio import CHUNK, READ_FLAGS, sha256_file
from portal.core.layout import (
    MANIFEST_NAME,
    SECONDS_PER_DAY,
    SUBMISSIONS_DIR,
    LayoutError,
    day_date,
    day_floor,
    is_attachment_path,
    is_valid_id,
    submission_files,
)
from portal.core.replykey import KdfCost
from portal.core.replysig import (
    MAX_SIGNATURE_FILE,
    SIGNATURE_SUFFIX,
    ReplySigner,
)
from portal.server.config import Config, ConfigError
from portal.server.mailbox import (
    MAX_REPLY_BYTES,
    REPLIES_DIR,
    SALT_NAME,
    TOMBSTONE_SUFFIX,
    MailboxError,
    Reply,
    ReplyBox,
    UnreadableReply,
    accept_reply,
    is_reply_name,
    open_reply,
    reply_name,
)
from portal.server.store import (
    ArchiveUnavailable,
    FormClaim,
    PublishReport,
    StoreError,
    SubmissionStore,
    UnknownSubmissionError,
)

CLAIMS_DIR = "claims"
PROBE_DIR = "probe"
# Longer than a form's lifetime (portal.server.web.onetime.FORM_LIFETIME,
# 12 hours; a test holds them together): a claim outlives its form.
CLAIM_LIFETIME = dt.timedelta(hours=13)
# Submissions published at once. The order is random whatever this is; it
# bounds the requests in flight and the open spool files.
PUBLISH_THREADS = 8
_STORING, _STORED = b"storing", b"stored"
SALT_BYTES = 16


def _boto() -> tuple[Any, Any, Any]:
    """boto3, botocore's Config and its exceptions, or one line saying how to install them."""
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError:
        raise ConfigError(
            "PORTAL_STORE=s3 needs boto3: install the portal with its s3 extra, "
            "`pip install 'testimony-portal[s3]'`"
        ) from None
    return boto3, botocore.config.Config, botocore.exceptions


class ObjectArchive:
    """Submissions, replies, claims and the salt in one bucket under one prefix."""

    kind = "s3"

    def __init__(
        self,
        spool: SubmissionStore,
        *,
        bucket: str,
        prefix: str,
        endpoint: str | None,
        claim_key: bytes,
        region: str | None = None,
        attempts: int = 3,
    ) -> None:
        self.spool = spool
        self.root: Path | None = None
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self._claim_key = claim_key
        self._region = region
        self._attempts = attempts
        self._clients: dict[tuple[int, int], Any] = {}
        self._listing: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self.requests = 0  # requests sent by this process, for the benchmark

    @classmethod
    def from_config(cls, config: Config, spool: SubmissionStore) -> ObjectArchive:
        if not config.s3_bucket:
            raise ConfigError(
                "PORTAL_STORE=s3 needs PORTAL_S3_BUCKET (the bucket's name) and, for anything "
                "but AWS itself, PORTAL_S3_ENDPOINT (e.g. http://127.0.0.1:8333)"
            )
        _boto()
        # Claims are keyed with the deployment's secret: every node must share it.
        claim_key = hmac.new(config.secret_key, b"portal.form-claims", hashlib.sha256).digest()
        return cls(
            spool,
            bucket=config.s3_bucket,
            prefix=config.s3_prefix,
            endpoint=config.s3_endpoint,
            claim_key=claim_key,
        )

    # -- the client and its errors ---------------------------------------------------

    def _client(self, attempts: int | None = None) -> Any:
        """This process's client (a gunicorn worker forks after start: never share one).

        `attempts` below the archive's own is for requests a witness waits
        for (claims): with the store down, they must fail fast, not retry.
        """
        attempts = attempts or self._attempts
        key = (os.getpid(), attempts)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                boto3, boto_config, _ = _boto()
                # Credentials come from the usual AWS variables and files.
                session = boto3.session.Session()
                settings = boto_config(
                    connect_timeout=5 if attempts > 1 else 2,
                    read_timeout=60 if attempts > 1 else 10,
                    retries={"mode": "standard", "max_attempts": attempts},
                    s3={"addressing_style": "path"},
                    # Checksums only where the API requires them: stores other
                    # than AWS do not all know the newer checksum headers.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                client = session.client(
                    "s3",
                    endpoint_url=self.endpoint,
                    region_name=self._region or session.region_name or "us-east-1",
                    config=settings,
                )
                self._clients = {k: c for k, c in self._clients.items() if k[0] == key[0]}
                self._clients[key] = client
            return client

    def _call(self, operation: str, *, fast: bool = False, **kwargs: Any) -> Any:
        """One request; any failure becomes `ArchiveUnavailable` or `_Refused` (a 4xx).

        `fast`: one attempt, short timeouts (a witness is waiting for it).
        """
        _, _, errors = _boto()
        with self._lock:
            self.requests += 1
        try:
            client = self._client(1 if fast else None)
            return getattr(client, operation)(Bucket=self.bucket, **kwargs)
        except errors.ClientError as exc:
            raise _Refused.from_client_error(exc, self) from None
        except errors.NoCredentialsError:
            raise ArchiveUnavailable(
                "no credentials for the object store: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE and ~/.aws/credentials)"
            ) from None
        except (errors.EndpointConnectionError, errors.ConnectionError) as exc:
            raise ArchiveUnavailable(
                f"cannot reach the object store at PORTAL_S3_ENDPOINT={self.endpoint}: "
                f"{type(exc).__name__}; check the address and that the store is running"
            ) from None
        except errors.BotoCoreError as exc:
            raise ArchiveUnavailable(
                f"the object store at {self.endpoint} failed: {type(exc).__name__}"
            ) from None

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _list(self, *parts: str) -> Iterator[dict[str, Any]]:
        """Every object under a folder of the prefix (a page of a thousand per request)."""
        start = self._key(*parts) + "/"
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": start}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", **kwargs)
            for item in page.get("Contents", []):
                item["Name"] = item["Key"][len(start) :]
                yield item
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    # -- check and serve -------------------------------------------------------------

    def describe(self) -> str:
        where = self.endpoint or "AWS S3"
        return (
            f"submissions rest in bucket {self.bucket!r} under {self.prefix or '(no prefix)'}/ "
            f"at {where} (PORTAL_STORE=s3); {self.spool.root} is this node's spool"
        )

    def verify(self) -> list[str]:
        """Reach, credentials, bucket, then a real write and delete; notes (versioning)."""
        self._call("list_objects_v2", Prefix=self._key(SUBMISSIONS_DIR) + "/", MaxKeys=1)
        probe = self._key(PROBE_DIR, secrets.token_hex(16))
        try:
            self._call("put_object", Key=probe, Body=b"")
            self._call("delete_object", Key=probe)
        except (_Refused, AccessDenied):
            raise AccessDenied(
                f"the credentials can read but not write bucket {self.bucket!r}: grant "
                "them s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket on it"
            ) from None
        notes = []
        try:
            status = self._call("get_bucket_versioning").get("Status")
        except (_Refused, AccessDenied):
            status = None
            notes.append(
                "could not read whether the bucket keeps old versions; if it does, "
                "`export --purge` does not erase them (docs/DEPLOYMENT.md)"
            )
        if status in ("Enabled", "Suspended"):
            notes.append(
                f"WARNING: bucket {self.bucket!r} has versioning {status.lower()}: "
                "`export --purge` and deleted replies leave their old versions in the bucket. "
                "Turn versioning off, or add a lifecycle rule that expires noncurrent "
                "versions (docs/DEPLOYMENT.md)"
            )
        return notes

    # -- publishing at the seal --------------------------------------------------------

    def publish(self, *, rng: random.Random | None = None, reserve_bytes: int = 0) -> PublishReport:
        """Every submission of the spool into the bucket, in random order; see the module doc."""
        rng = rng or secrets.SystemRandom()
        report = PublishReport()
        before = self.requests
        ids = self.spool.ids()
        rng.shuffle(ids)
        stop = threading.Event()
        tally = threading.Lock()

        def one(submission_id: str) -> None:
            if stop.is_set():
                return
            try:
                self._publish_one(submission_id, rng)
            except ArchiveUnavailable as exc:
                stop.set()
                with tally:
                    report.stopped = str(exc)
            except (_Refused, StoreError, OSError) as exc:
                with tally:
                    report.failed[submission_id] = str(exc)
            else:
                with tally:
                    report.published += 1

        with ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="publish") as pool:
            list(pool.map(one, ids))
        if report.stopped is None:
            with contextlib.suppress(ArchiveUnavailable, _Refused):
                report.claims_forgotten = self._forget_old_claims()
        report.requests = self.requests - before
        return report

    def _publish_one(self, submission_id: str, rng: random.Random) -> None:
        folder = self.spool.path(submission_id)
        try:
            files = submission_files(folder)
        except LayoutError as exc:
            raise StoreError(str(exc)) from exc
        manifest, attachments = files[0], files[1:]
        rng.shuffle(attachments)
        for path in [*attachments, manifest]:  # the manifest last: see the module doc
            relpath = path.relative_to(folder).as_posix()
            digest = sha256_file(path)
            fd = os.open(path, READ_FLAGS)
            with open(fd, "rb") as body:
                self._call(
                    "put_object",
                    Key=self._key(SUBMISSIONS_DIR, submission_id, relpath),
                    Body=body,
                    Metadata={"sha256": digest},
                )
        # Only now may the spool forget it.
        self.spool.purge(submission_id)

    def _forget_old_claims(self) -> int:
        cutoff = dt.datetime.now(dt.UTC) - CLAIM_LIFETIME
        old = [item["Key"] for item in self._list(CLAIMS_DIR) if item["LastModified"] < cutoff]
        for start in range(0, len(old), 1000):
            batch = [{"Key": key} for key in old[start : start + 1000]]
            self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})
        return len(old)

    # -- export ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        # Publishing never shows a partial submission (manifest-last), so an
        # export needs no lock against the nodes; running two exports at once
        # is the operator's mistake, and costs only a second verified copy.
        yield

    def ids(self) -> list[str]:
        """Complete submissions (those whose manifest is in), from one listing of the bucket.

        The listing is kept, so that `files` and `file_time` for an export
        cost no request of their own; `purge` drops a submission from it.
        """
        listing: dict[str, dict[str, float]] = {}
        for item in self._list(SUBMISSIONS_DIR):
            submission_id, _, rest = item["Name"].partition("/")
            if is_valid_id(submission_id):
                listing.setdefault(submission_id, {})[rest] = item["LastModified"].timestamp()
        self._listing = listing
        return sorted(i for i, names in listing.items() if MANIFEST_NAME in names)

    def _names(self, submission_id: str) -> dict[str, float]:
        cached = self._listing.get(submission_id)
        if cached is not None:
            return cached
        return {
            item["Name"]: item["LastModified"].timestamp()
            for item in self._list(SUBMISSIONS_DIR, submission_id)
        }

    def files(self, submission_id: str) -> list[str]:
        if not is_valid_id(submission_id):
            raise UnknownSubmissionError(f"not a submission id: {submission_id!r}")
        names = list(self._names(submission_id))
        if MANIFEST_NAME not in names:
            raise UnknownSubmissionError(f"no submission {submission_id}")
        attachments = []
        for name in names:
            if name == MANIFEST_NAME:
                continue
            if not is_attachment_path(name):
                raise StoreError(f"{submission_id}: unexpected object {name!r} in the bucket")
            attachments.append(name)
        attachments.sort(key=lambda n: int(n.split("/")[1].split(".")[0]))
        return [MANIFEST_NAME, *attachments]

    @contextlib.contextmanager
    def open_file(self, submission_id: str, relpath: str) -> Iterator[BinaryIO]:
        answer = self._call("get_object", Key=self._key(SUBMISSIONS_DIR, submission_id, relpath))
        expected = answer.get("Metadata", {}).get("sha256")
        stream = _CheckedBody(answer["Body"], expected, f"{submission_id}/{relpath}")
        try:
            yield stream  # type: ignore[misc]
        finally:
            answer["Body"].close()

    def file_time(self, submission_id: str, relpath: str) -> float:
        stamp = self._names(submission_id).get(relpath)
        if stamp is None:
            key = self._key(SUBMISSIONS_DIR, submission_id, relpath)
            stamp = self._call("head_object", Key=key)["LastModified"].timestamp()
        return day_floor(stamp)

    def purge(self, submission_id: str) -> None:
        files = self.files(submission_id)
        # The manifest first: a purge cut half way leaves no partial submission.
        for relpath in files:
            self._call("delete_object", Key=self._key(SUBMISSIONS_DIR, submission_id, relpath))
        self._listing.pop(submission_id, None)

    # -- replies, salt and claims --------------------------------------------------------

    def replies(self, signers: Sequence[ReplySigner] = (), *, reply_days: int = 90) -> ReplyBox:
        return BucketReplies(self, signers, reply_days=reply_days)

    def receipt_salt(self, cost: KdfCost | None = None) -> bytes:
        # The cost is not recorded beside a bucket's salt (a local data
        # directory's only; docs/DEPLOYMENT.md).
        key = self._key(SALT_NAME)
        for _ in range(2):
            try:
                text = self._call("get_object", Key=key)["Body"].read(256)
            except _Refused as exc:
                if exc.code not in ("NoSuchKey", "404"):
                    raise ArchiveUnavailable(f"cannot read {key} from the bucket: {exc}") from None
                fresh = os.urandom(SALT_BYTES).hex().encode("ascii") + b"\n"
                with contextlib.suppress(_Refused):  # another node created it first
                    self._call("put_object", Key=key, Body=fresh, IfNoneMatch="*")
                continue
            try:
                salt = bytes.fromhex(text.decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                salt = b""
            if len(salt) != SALT_BYTES:
                raise MailboxError(
                    f"{key} in bucket {self.bucket!r} is damaged; restore it from a backup: "
                    "without the original salt no witness can read replies"
                )
            return salt
        raise ArchiveUnavailable(f"could not create {key} in bucket {self.bucket!r}")

    def _claim_object(self, key: str) -> str:
        name = hmac.new(self._claim_key, key.encode("ascii"), hashlib.sha256).hexdigest()
        return self._key(CLAIMS_DIR, name)

    def claim_form(self, key: str) -> FormClaim:
        target = self._claim_object(key)
        try:
            self._call("put_object", fast=True, Key=target, Body=_STORING, IfNoneMatch="*")
            return FormClaim.CLAIMED
        except _Refused as exc:
            if exc.code not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise ArchiveUnavailable(f"could not claim a form in the bucket: {exc}") from None
        try:
            body = self._call("get_object", fast=True, Key=target)["Body"].read(64)
        except _Refused:
            # Released between the two requests: the form is free again.
            return self.claim_form(key)
        return FormClaim.STORED if body == _STORED else FormClaim.STORING

    def form_stored(self, key: str) -> None:
        self._call("put_object", fast=True, Key=self._claim_object(key), Body=_STORED)

    def release_form(self, key: str) -> None:
        self._call("delete_object", fast=True, Key=self._claim_object(key))


class AccessDenied(ArchiveUnavailable):
    """The credentials are good but may not do this (read, write or delete) in the bucket."""


class _Refused(Exception):
    """The store answered with an error (4xx, 5xx): `code` is its error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code

    @classmethod
    def from_client_error(cls, exc: Any, archive: ObjectArchive) -> Exception:
        error = exc.response.get("Error", {})
        code = str(
            error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        )
        message = str(error.get("Message") or "")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            return ArchiveUnavailable(
                f"the object store refused the credentials ({code}): check AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY (or the AWS_PROFILE in use)"
            )
        if code == "NoSuchBucket":
            return ArchiveUnavailable(
                f"bucket {archive.bucket!r} does not exist at {archive.endpoint or 'AWS S3'}: "
                "create it, or fix PORTAL_S3_BUCKET"
            )
        if code in ("AccessDenied", "AllAccessDisabled", "403"):
            return AccessDenied(
                f"the object store denied access to bucket {archive.bucket!r} ({code}): grant "
                "the credentials s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket"
            )
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if isinstance(status, int) and status >= 500:
            return ArchiveUnavailable(
                f"the object store at {archive.endpoint or 'AWS S3'} is failing ({code}); "
                "submissions wait in each node's spool until it is back"
            )
        return cls(code, message)


class _CheckedBody(io.RawIOBase):
    """A downloaded object that proves, at its end, it is the bytes the node published."""

    def __init__(self, body: Any, expected: str | None, name: str) -> None:
        self._body = body
        self._expected = expected
        self._name = name
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk: bytes = self._body.read(CHUNK if size is None or size < 0 else size)
        if chunk:
            self._hash.update(chunk)
        elif self._expected is not None and self._hash.hexdigest() != self._expected:
            raise StoreError(
                f"{self._name}: the bucket's copy does not match the SHA-256 its node "
                "recorded when publishing it; it was not exported"
            )
        return chunk


class BucketReplies:
    """`replies/<mailbox>/<hash>.age` in the bucket; the same contract as `ReplyStore`.

    Each reply's signature is `<hash>.sig` beside it, and a reply the witness
    deleted leaves `<hash>.deleted` (issue 21), as on the data directory.
    """

    def __init__(
        self,
        archive: ObjectArchive,
        signers: Sequence[ReplySigner] = (),
        *,
        reply_days: int = 90,
    ) -> None:
        self._archive = archive
        self.signers = tuple(signers)
        self.reply_days = reply_days

    def initialise(self) -> None:
        return None

    def _entries(self, mailbox: str) -> list[dict[str, Any]]:
        if not is_mailbox_name(mailbox):
            return []
        # A reply is a short text: anything larger in the bucket is not one.
        return [
            item
            for item in self._archive._list(REPLIES_DIR, mailbox)
            if is_reply_name(item["Name"]) and item.get("Size", 0) <= MAX_REPLY_BYTES
        ]

    def _get(self, key: str, limit: int) -> bytes:
        answer = self._archive._call("get_object", Key=key)
        data: bytes = answer["Body"].read(limit + 1)
        return data

    def _exists(self, key: str) -> bool:
        try:
            self._archive._call("head_object", Key=key)
        except _Refused as exc:
            if exc.code in ("NoSuchKey", "404", "NotFound"):
                return False
            raise ArchiveUnavailable(f"cannot read {key} from the bucket: {exc}") from None
        return True

    def read(self, identity: X25519Identity) -> list[Reply]:
        replies = []
        mailbox = mailbox_name(str(identity.recipient))
        for item in self._entries(mailbox):
            try:
                data = self._get(item["Key"], MAX_REPLY_BYTES)
                signature = self._get(_signature_key(item["Key"]), MAX_SIGNATURE_FILE)
                text = open_reply(data, signature, mailbox, self.signers, identity)
            except (_Refused, UnreadableReply):
                continue
            stamp = item["LastModified"].timestamp()
            replies.append(
                Reply(id=item["Name"][: -len(".age")], text=text, received=day_date(stamp))
            )
        replies.sort(key=lambda r: (r.received, r.id))
        return replies

    def delete(self, identity: X25519Identity, reply_ids: list[str]) -> int:
        mailbox = mailbox_name(str(identity.recipient))
        wanted = {f"{i}.age" for i in reply_ids}
        removed = 0
        for item in self._entries(mailbox):
            if item["Name"] in wanted:
                # The tombstone first: an outbox imported again must not bring it back.
                tombstone = item["Key"][: -len(".age")] + TOMBSTONE_SUFFIX
                self._archive._call("put_object", Key=tombstone, Body=b"")
                self._archive._call("delete_object", Key=item["Key"])
                self._archive._call("delete_object", Key=_signature_key(item["Key"]))
                removed += 1
        return removed

    def add(self, mailbox: str, data: bytes, signature: bytes | None) -> bool:
        if not is_mailbox_name(mailbox):
            raise MailboxError(f"not a mailbox name: {mailbox[:80]!r}")
        signature = accept_reply(mailbox, data, signature, self.signers, self.reply_days)
        key = self._archive._key(REPLIES_DIR, mailbox, reply_name(data))
        if self._exists(key[: -len(".age")] + TOMBSTONE_SUFFIX):
            return False
        try:
            # The signature first, so a reply is never in the bucket without it.
            self._archive._call("put_object", Key=_signature_key(key), Body=signature)
            self._archive._call("put_object", Key=key, Body=data, IfNoneMatch="*")
        except _Refused as exc:
            if exc.code in ("PreconditionFailed", "412"):
                return False
            raise ArchiveUnavailable(f"could not store a reply in the bucket: {exc}") from None
        return True

    def purge_older_than(self, days: int, now: dt.datetime | None = None) -> int:
        now = now or dt.datetime.now(dt.UTC)
        cutoff = day_floor(now.timestamp()) - days * SECONDS_PER_DAY
        removed = 0
        for item in list(self._archive._list(REPLIES_DIR)):
            if item["LastModified"].timestamp() < cutoff:
                self._archive._call("delete_object", Key=item["Key"])
                removed += item["Key"].endswith(".age")
        return removed

    def reseal(self, days: int, rng: random.Random | None = None) -> int:
        # A bucket has no file-system times to rewrite: expire, and count what is kept.
        self.purge_older_than(days)
        return sum(1 for item in self._archive._list(REPLIES_DIR) if item["Key"].endswith(".age"))


def _signature_key(reply_key: str) -> str:
    return reply_key[: -len(".age")] + SIGNATURE_SUFFIX
