"""The desk as a WSGI application on the standard library: routing, the guards, the views.

Who may drive it is decided before anything else, on every request:

1. the Host header must be the address the desk listens on
   (`127.0.0.1:PORT`): a page on another site that points its own name at
   127.0.0.1 (DNS rebinding) sends its own name, and is refused;
2. the first path segment must be the random secret printed at start-up,
   compared in constant time: another local user or a web page that does
   not know it gets "not found";
3. a form post must come from the desk's own pages: an `Origin` header, if
   sent, must be the desk's origin; `Sec-Fetch-Site`, if sent, must be
   `same-origin`; and the form must carry this run's CSRF token.

Every response carries a Content-Security-Policy that allows no script, no
frame, no connection and no resource from anywhere but the desk, and the
pages hold none. Views validate, make one domain call and render.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from portal.core.fsio import READ_FLAGS, sha256_file
from portal.core.layout import is_valid_id
from portal.core.manifest import Manifest
from portal.core.questionnaire import Consent
from portal.review import inert
from portal.review.consent import answered_same, consent_of, identifying_answers, resolve_same
from portal.review.custody import CustodyError
from portal.review.desk import pages
from portal.review.desk.actions import Runner
from portal.review.desk.cases import Case, CaseBook, CaseError, Change, thread_key
from portal.review.desk.metadata import MetadataUnavailable, identifying_metadata
from portal.review.desk.pages import AttachmentView, CaseView, ConversationItem, Frame
from portal.review.desk.search import Filters, SearchIndex
from portal.review.desk.settings import LANGUAGES, DeskSettings
from portal.review.outcomes import Changed
from portal.review.recheck import read_opened_manifest
from portal.review.record import OpenedRecord, RecordError, load_sent_replies, require_record
from portal.review.sealed import SealedIndex

StartResponse = Callable[..., Any]
MAX_FORM_BYTES = 256 * 1024
_THREAD_RE = re.compile(r"[0-9a-f]{64}")
_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{pages.STYLE_HASH}'; "
    "img-src 'self'; media-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
# An attachment shown in the browser's own viewer: a sandboxed document, no script.
FILE_CSP = "sandbox; default-src 'none'; img-src 'self'; media-src 'self'"
_MEDIA_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".webp": "image/webp", ".bmp": "image/bmp", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
    ".oga": "audio/ogg", ".opus": "audio/ogg", ".wav": "audio/wav", ".flac": "audio/flac",
    ".m4a": "audio/mp4", ".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm",
    ".ogv": "video/ogg",
}  # fmt: skip
_DONE = {"status", "tag", "untag", "note", "reply", "forward"}


class _Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class DeskState:
    """What the desk holds while it runs; every view reads through it."""

    opened_dir: Path
    index: SearchIndex
    book: CaseBook
    settings: DeskSettings
    runner: Runner
    reviewer: str
    secret: str
    csrf: str
    host: str = ""
    refused: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _synced: object = None
    _hashes: dict[tuple[str, int, int], str] = field(default_factory=dict)
    _metadata: dict[str, list[Any] | str] = field(default_factory=dict)

    def sync_cases(self) -> None:
        """Copy the case state into the index if the custody log changed."""
        book = self.book.read()
        with self.lock:
            if book is self._synced:
                return
            statuses = {k: c.status for k, c in book.cases.items() if c.status}
            tags = {k: sorted(c.tags) for k, c in book.cases.items() if c.tags}
            self.index.set_cases(statuses, tags)
            self._synced = book

    def refresh(self) -> None:
        sealed = SealedIndex.from_entries(self.book.read().entries)
        with self.lock:
            self.refused = self.index.refresh(sealed).refused

    def file_hash(self, path: Path) -> str:
        """SHA-256 of a file, computed again whenever its size or time changes."""
        info = os.stat(path, follow_symlinks=False)
        key = (str(path), info.st_size, info.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]


class Desk:
    """The WSGI application."""

    def __init__(self, state: DeskState) -> None:
        self.state = state

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            return self._dispatch(environ, start_response)
        except _Refused as refused:
            return _plain(start_response, refused.status, str(refused))

    # ------------------------------------------------------------ guards and routes

    def _dispatch(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        state = self.state
        if environ.get("HTTP_HOST", "") != state.host:
            raise _Refused(HTTPStatus.MISDIRECTED_REQUEST, "wrong Host header: refused")
        segments = environ.get("PATH_INFO", "").split("/")[1:]
        if not segments or not hmac.compare_digest(segments[0].encode(), state.secret.encode()):
            raise _Refused(HTTPStatus.NOT_FOUND, "not found")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD", "POST"):
            raise _Refused(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")
        if len(segments) < 2 or segments[1] not in LANGUAGES:
            return _redirect(start_response, f"/{state.secret}/{state.settings.language}/")
        frame = self._frame(segments[1])
        route = segments[2:]
        if method == "POST":
            form = self._form(environ)
            return self._post(frame, route, form, start_response)
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if route in ([], [""]):
            return self._html(start_response, HTTPStatus.OK, self.list_view(frame, query))
        if len(route) == 2 and route[0] == "case":
            status, body = self.case_view(frame, route[1], done=query.get("done"))
            return self._html(start_response, status, body)
        if len(route) == 3 and route[0] == "file":
            return self.file_view(route[1], route[2], start_response)
        raise _Refused(HTTPStatus.NOT_FOUND, "not found")

    def _frame(self, lang: str) -> Frame:
        state = self.state
        return Frame(
            lang=lang,
            base=f"/{state.secret}/{lang}/",
            root=f"/{state.secret}/",
            reviewer=state.reviewer,
            csrf=state.csrf,
            settings=state.settings,
        )

    def _form(self, environ: dict[str, Any]) -> dict[str, list[str]]:
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and origin != f"http://{self.state.host}":
            raise _Refused(HTTPStatus.FORBIDDEN, "cross-site form: refused")
        if environ.get("HTTP_SEC_FETCH_SITE", "same-origin") != "same-origin":
            raise _Refused(HTTPStatus.FORBIDDEN, "cross-site form: refused")
        kind = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise _Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "forms only")
        try:
            length = int(environ.get("CONTENT_LENGTH") or "0")
        except ValueError:
            raise _Refused(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length < 0 or length > MAX_FORM_BYTES:
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "form too large")
        raw = environ["wsgi.input"].read(length)
        try:
            form = parse_qs(
                raw.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict",
                max_num_fields=100,
            )  # fmt: skip
        except (UnicodeError, ValueError):
            raise _Refused(HTTPStatus.BAD_REQUEST, "malformed form") from None
        token = (form.get("csrf_token") or [""])[-1]
        if not hmac.compare_digest(token.encode(), self.state.csrf.encode()):
            raise _Refused(HTTPStatus.FORBIDDEN, "missing or wrong form token: refused")
        return form

    def _post(
        self,
        frame: Frame,
        route: list[str],
        form: dict[str, list[str]],
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        def one(name: str) -> str:
            return (form.get(name) or [""])[-1]

        if route == ["change"]:
            return self.change_view(frame, one("key"), one("change"), one("value"), start_response)
        if len(route) == 2 and route[0] == "reply":
            return self.reply_view(frame, route[1], one("message"), start_response)
        if len(route) == 2 and route[0] == "forward":
            recipient = one("recipient").strip() or one("partner").strip()
            omit = form.get("omit") or []
            override = one("override").strip() or None
            clean = one("clean") == "yes"
            return self.forward_view(
                frame, route[1], recipient, omit, override, clean, start_response
            )
        raise _Refused(HTTPStatus.NOT_FOUND, "not found")

    # ------------------------------------------------------------ views

    def list_view(self, frame: Frame, query: dict[str, str]) -> str:
        state = self.state
        state.sync_cases()
        filters = _filters(query)
        with state.lock:
            results = state.index.search(filters)
            choices = state.index.choices()
        return pages.list_page(frame, filters, results, choices, state.refused)

    def case_view(
        self, frame: Frame, submission: str, *, done: str | None = None, error: str | None = None
    ) -> tuple[HTTPStatus, str]:
        _ = frame._
        try:
            view = self._case(frame, submission)
        except _Refused as refused:
            return refused.status, pages.error_page(frame, _("Not available"), str(refused))
        message = _done_message(frame, done, view) if done in _DONE else None
        view = CaseView(**{**view.__dict__, "message": message, "error": error})
        status = HTTPStatus.OK if error is None else HTTPStatus.CONFLICT
        return status, pages.case_page(frame, view)

    def _case(self, frame: Frame, submission: str) -> CaseView:
        state = self.state
        record, manifest = self._opened(submission)
        state.sync_cases()
        book = state.book.read()
        thread = manifest.thread
        conversation = self._conversation(submission, manifest)
        consent, assumed = self._consent(submission, manifest)
        return CaseView(
            submission=submission,
            manifest=manifest,
            attachments=[
                self._attachment(submission, n, entry)
                for n, entry in enumerate(record.attachments, 1)
            ],
            case=book.cases.get(submission) or Case(),
            thread_case=(book.cases.get(thread_key(thread)) or Case())
            if manifest.reply_to is not None
            else None,
            conversation=conversation,
            history=state.book.history({submission, thread_key(thread)}),
            log_damage=book.damage,
            log_head=book.head,
            consent=consent,
            consent_assumed=assumed,
            identifying=identifying_answers(manifest),
        )

    def _opened(self, submission: str) -> tuple[OpenedRecord, Manifest]:
        if not is_valid_id(submission):
            raise _Refused(HTTPStatus.NOT_FOUND, "not found")
        folder = self.state.opened_dir / submission
        try:
            record = require_record(folder)
            _data, manifest = read_opened_manifest(folder, record)
            # What the desk shows is held to the custody log's first opening
            # of it, as `forward` and `reply` hold what they send (issue 21).
            SealedIndex.from_entries(self.state.book.read().entries).check(folder, record, manifest)
        except (RecordError, Changed) as exc:
            raise _Refused(HTTPStatus.CONFLICT, str(exc)) from None
        return record, manifest

    def _attachment(self, submission: str, number: int, entry: Any) -> AttachmentView:
        path = self.state.opened_dir / submission / entry.file
        try:
            verified = self.state.file_hash(path) == entry.sha256
        except OSError:
            verified = False
        found: list[Any] | None = None
        problem: str | None = None
        if verified:
            cached = self.state._metadata.get(entry.sha256)
            if cached is None:
                try:
                    cached = identifying_metadata(path)
                except MetadataUnavailable as exc:
                    cached = str(exc)
                self.state._metadata[entry.sha256] = cached
            found, problem = (None, cached) if isinstance(cached, str) else (cached, None)
        text = None
        if verified and entry.view == inert.TEXT:
            head = inert.read_head(path)
            text = head.decode("utf-8", "replace") if inert.looks_like_text(head) else None
        return AttachmentView(number, entry, verified, found, problem, text)

    def _consent(self, submission: str, manifest: Manifest) -> tuple[Consent, bool]:
        """The consent `forward` applies: a follow-up's "same as before" read from its thread."""
        if not answered_same(manifest):
            return consent_of(manifest)
        with self.state.lock:
            members = self.state.index.thread_members(manifest.thread)
        others = []
        for sid, _day, _preview in members:
            if sid != submission:
                try:
                    others.append(self._opened(sid)[1])
                except _Refused:
                    continue  # a damaged member is shown as such on its own page
        resolved = resolve_same(manifest, others)
        return resolved.consent, resolved.assumed

    def _conversation(self, submission: str, manifest: Manifest) -> list[ConversationItem]:
        with self.state.lock:
            members = self.state.index.thread_members(manifest.thread)
        items = [ConversationItem(day, sid, None, preview) for sid, day, preview in members]
        if not any(item.submission == submission for item in items):
            items.append(ConversationItem(manifest.received, submission, None, ""))
        for reply in load_sent_replies(self.state.opened_dir).get(manifest.thread, []):
            items.append(ConversationItem(reply.sent, None, reply, ""))
        # Submissions before the replies of the same day: a reply answers what came in.
        items.sort(key=lambda i: (i.day, i.reply is not None))
        return items

    def change_view(
        self, frame: Frame, key: str, change: str, value: str, start_response: StartResponse
    ) -> Iterable[bytes]:
        submission = key
        if key.startswith("thread:"):
            thread = key.removeprefix("thread:")
            if not _THREAD_RE.fullmatch(thread):
                raise _Refused(HTTPStatus.BAD_REQUEST, "not a conversation")
            with self.state.lock:
                members = self.state.index.thread_members(thread)
            if not members:
                raise _Refused(HTTPStatus.NOT_FOUND, "not found")
            submission = members[0][0]
        else:
            self._opened(key)
        try:
            kind = Change(change)
            self.state.book.change(key, kind, value, self.state.reviewer)
        except ValueError:
            raise _Refused(HTTPStatus.BAD_REQUEST, "unknown change") from None
        except CaseError:
            status, body = self.case_view(
                frame,
                submission,
                error=frame._(
                    "That value cannot be recorded: a tag needs 1 to 40 characters, "
                    "a note some text."
                ),
            )
            return self._html(start_response, status, body)
        except CustodyError as exc:
            status, body = self.case_view(frame, submission, error=str(exc))
            return self._html(start_response, status, body)
        self.state.sync_cases()
        return _redirect(start_response, frame.url(f"case/{submission}", done=kind.value))

    def reply_view(
        self, frame: Frame, submission: str, message: str, start_response: StartResponse
    ) -> Iterable[bytes]:
        self._opened(submission)
        if not message.strip():
            status, body = self.case_view(
                frame, submission, error=frame._("Write the reply first.")
            )
            return self._html(start_response, status, body)
        outcome = self.state.runner.reply(submission, message)
        if not outcome.ok:
            status, body = self.case_view(
                frame,
                submission,
                error=frame._("The reply was not sent: %(reason)s") % {"reason": outcome.message},
            )
            return self._html(start_response, status, body)
        self._mark(submission, "answered")
        self.state.refresh()
        return _redirect(start_response, frame.url(f"case/{submission}", done="reply"))

    def forward_view(
        self,
        frame: Frame,
        submission: str,
        recipient: str,
        omit: list[str],
        override: str | None,
        clean: bool,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        _record, manifest = self._opened(submission)
        if not recipient:
            status, body = self.case_view(
                frame, submission, error=frame._("Give the partner’s public key.")
            )
            return self._html(start_response, status, body)
        omit = sorted(set(omit) & set(manifest.fields))
        name = f"{manifest.received}-{submission[:12]}-{os.urandom(4).hex()}.age"
        outcome = self.state.runner.forward(
            submission, recipient, self.state.runner.bundles / name, omit, override, clean=clean
        )
        if not outcome.ok:
            status, body = self.case_view(
                frame,
                submission,
                error=frame._("Nothing was sent: %(reason)s") % {"reason": outcome.message},
            )
            return self._html(start_response, status, body)
        self._mark(submission, "forwarded")
        return _redirect(start_response, frame.url(f"case/{submission}", done="forward"))

    def _mark(self, submission: str, status: str) -> None:
        """Set the status a reply or a forward implies, if the organisation's list has it."""
        if status in self.state.settings.statuses:
            # The reply or bundle itself is logged; if this fails, the status is set by hand.
            with contextlib.suppress(CaseError, CustodyError):
                self.state.book.change(submission, Change.STATUS, status, self.state.reviewer)
        self.state.sync_cases()

    def file_view(
        self, submission: str, number: str, start_response: StartResponse
    ) -> Iterator[bytes]:
        record, _manifest = self._opened(submission)
        if not number.isdigit() or not 1 <= int(number) <= len(record.attachments):
            raise _Refused(HTTPStatus.NOT_FOUND, "not found")
        entry = record.attachments[int(number) - 1]
        path = self.state.opened_dir / submission / entry.file
        kind = entry.view
        # The same rule as the static index: an inert medium by name and by its first bytes.
        if not isinstance(kind, str) or not inert.is_linkable(entry.file, kind):
            raise _Refused(HTTPStatus.FORBIDDEN, "not a type known to be safe to open")
        if inert.decide(entry.file, inert.read_head(path)).kind != kind:
            raise _Refused(HTTPStatus.FORBIDDEN, "not a type known to be safe to open")
        if self.state.file_hash(path) != entry.sha256:
            raise _Refused(HTTPStatus.CONFLICT, "the file changed since it was opened")
        suffix = os.path.splitext(entry.file)[1].lower()
        fd = os.open(path, READ_FLAGS)
        handle = os.fdopen(fd, "rb")
        start_response(
            "200 OK",
            [
                ("Content-Type", _MEDIA_TYPES[suffix]),
                ("Content-Length", str(os.fstat(fd).st_size)),
                ("Content-Disposition", "inline"),
                *_security_headers(FILE_CSP),
            ],
        )
        return _chunks(handle)

    def _html(self, start_response: StartResponse, status: HTTPStatus, body: str) -> list[bytes]:
        data = body.encode("utf-8")
        start_response(
            f"{status.value} {status.phrase}",
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(data))),
                *_security_headers(CSP),
            ],
        )
        return [data]


def _done_message(frame: Frame, done: str | None, view: CaseView) -> str:
    _ = frame._
    if done == "reply":
        return _("The reply is encrypted and in the outbox. Carry the outbox to the server.")
    if done == "forward":
        bundles = [e for e in view.history if e.entry.action == "forward"]
        bundle = bundles[-1].entry.details.get("bundle") if bundles else None
        where = bundle.get("file", "") if isinstance(bundle, dict) else ""
        return _("The encrypted bundle was written: %(path)s") % {"path": where}
    return _("Recorded in the custody log.")


def _filters(query: dict[str, str]) -> Filters:
    page = query.get("page", "0")
    day = query.get("day", "")
    attachments = query.get("files", "")
    return Filters(
        text=query.get("q", "")[:200],
        status=query.get("status", "")[:40],
        tag=query.get("tag", "")[:40],
        language=query.get("language", "")[:20],
        consent=query.get("consent", "")[:20],
        day=day if _DAY_RE.fullmatch(day) else "",
        attachments=attachments if attachments in ("yes", "no") else "",
        thread=query.get("thread", "") if _THREAD_RE.fullmatch(query.get("thread", "")) else "",
        newest_first=query.get("sort") != "old",
        page=int(page) if page.isdigit() and len(page) < 7 else 0,
    )


def _security_headers(csp: str) -> list[tuple[str, str]]:
    return [
        ("Content-Security-Policy", csp),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        # Not `no-referrer`: under it Chromium sends `Origin: null` with the desk's own
        # forms, which the origin check must refuse. Nothing leaves the desk's origin.
        ("Referrer-Policy", "same-origin"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
        ("Cache-Control", "no-store"),
    ]


def _plain(start_response: StartResponse, status: HTTPStatus, message: str) -> list[bytes]:
    data = (message + "\n").encode()
    start_response(
        f"{status.value} {status.phrase}",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
            *_security_headers("default-src 'none'"),
        ],
    )
    return [data]


def _redirect(start_response: StartResponse, location: str) -> list[bytes]:
    start_response(
        "303 See Other",
        [("Location", location), ("Content-Length", "0"), *_security_headers(CSP)],
    )
    return []


def _chunks(handle: Any) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(1 << 16):
            yield chunk


def new_secret() -> str:
    """A URL-safe random secret of 256 bits."""
    return hashlib.sha256(os.urandom(32)).hexdigest()
