"""The desk's search index: SQLite FTS5 over testimony, answers and replies, rebuilt at will.

The index is derived data. It lives in `OPENED_DIR/.desk/index.sqlite`,
beside the plaintext it was made from, and is brought up to date from the
opened folders whenever the desk starts (a submission whose recorded
manifest hash changed is indexed again; one that is gone is dropped). A
damaged or older index is deleted and built anew. Nothing the desk decides
rests on it: a case page reads the opened files and the custody log.

Why not FTS5's `trigram` tokenizer alone (SQLite >= 3.34): it matches only
queries of three or more characters, and Korean words of one or two
syllables (회령, 고문) are everyday search terms. So the text is indexed as
terms this module makes itself, and a `unicode61` FTS5 table stores them:

- a run of CJK characters (Hangul, Han, kana) becomes its character
  bigrams, plus its last character alone: "보위부" -> "보위 위부 부". A
  two-character query is one exact term; a one-character query is the
  prefix query `c*`, which matches every bigram starting with c and the
  lone last character, so every occurrence of c is found;
- any other word (Latin, Cyrillic, digits) becomes its suffixes, so the
  prefix query `ryo*` finds "ryo" inside "hoeryong".

A query of three or more CJK characters, or one that mixes scripts, asks
the index for every piece (AND), and then keeps only the submissions whose
normalised text holds the query as it was typed (`instr`), so the answer
is exact: a testimony holding 보위 and 위부 apart does not match 보위부.
Text and queries are NFKC-normalised and case-folded alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from portal.core.manifest import Manifest
from portal.review.consent import consent_of
from portal.review.outcomes import Changed
from portal.review.recheck import read_opened_manifest
from portal.review.record import (
    RecordError,
    ReplyCopy,
    load_sent_replies,
    opened_ids,
    read_record,
)
from portal.review.sealed import SealedIndex

# Bump when the schema or the term scheme changes: an older index is rebuilt.
SCHEMA_VERSION = "desk-index/1"
INDEX_DIR = ".desk"
INDEX_NAME = "index.sqlite"
PAGE_SIZE = 50
# Suffixes of one non-CJK word are indexed up to this length; longer words
# are rare (hashes, URLs) and are still found from their start.
_MAX_WORD = 32
_CJK = (
    "\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
    "\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff\uf900-\ufaff"
)
_RUN_RE = re.compile(rf"([{_CJK}]+)|([^\W{_CJK}]+)")
# The same terms as a loop over _RUN_RE makes, found by the regex engine in C
# (the term order does not matter to an index without positions).
_BIGRAM_RE = re.compile(rf"(?=([{_CJK}]{{2}}))")
_LAST_RE = re.compile(rf"[{_CJK}](?![{_CJK}])")
_WORD_RE = re.compile(rf"[^\W{_CJK}]+")


def normalise(text: str) -> str:
    """Text as it is indexed and searched: NFKC, case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def index_terms(text: str) -> str:
    """The space-separated terms one normalised text is indexed under."""
    terms = _BIGRAM_RE.findall(text)
    terms += _LAST_RE.findall(text)
    for word in _WORD_RE.findall(text):
        word = word[:_MAX_WORD]
        terms += [word[i:] for i in range(len(word))]
    return " ".join(terms)


@dataclass(frozen=True)
class Query:
    """One parsed search: FTS5 expression, and the strings every hit must hold exactly."""

    match: str | None
    exact: tuple[str, ...]


def parse_query(text: str) -> Query:
    """A search box's text as an FTS5 expression (every word must match) and exact checks."""
    expression: list[str] = []
    exact: list[str] = []
    for word in normalise(text).split():
        pieces = list(_RUN_RE.finditer(word))
        needs_check = len(pieces) > 1
        for match in pieces:
            cjk, other = match.groups()
            if cjk:
                if len(cjk) == 1:
                    expression.append(f'"{cjk}"*')
                else:
                    bigrams = sorted({cjk[i : i + 2] for i in range(len(cjk) - 1)})
                    expression.extend(f'"{b}"' for b in bigrams)
                    needs_check = needs_check or len(cjk) > 2
            elif other:
                expression.append(f'"{other[:_MAX_WORD]}"*')
                needs_check = needs_check or len(other) > _MAX_WORD
        if needs_check or not pieces:
            # Punctuation alone, or pieces that must stand side by side.
            exact.append(word)
    return Query(" AND ".join(expression) or None, tuple(exact))


@dataclass(frozen=True)
class Filters:
    """What the list shows: a search and the filters beside it, all optional."""

    text: str = ""
    status: str = ""
    tag: str = ""
    language: str = ""
    consent: str = ""
    day: str = ""
    attachments: str = ""  # "yes", "no" or ""
    thread: str = ""
    newest_first: bool = True
    page: int = 0


@dataclass(frozen=True)
class Summary:
    """What a list shows of one opened submission."""

    submission: str
    received: str
    language: str
    consent: str
    attachments: int
    thread: str
    preview: str


@dataclass(frozen=True)
class Hit(Summary):
    status: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Results:
    total: int
    hits: list[Hit]


@dataclass(frozen=True)
class Document(Summary):
    """What the index keeps of one opened submission."""

    fingerprint: str
    body: str = field(repr=False)


def document_of(
    submission: str, manifest: Manifest, fingerprint: str, replies: Sequence[ReplyCopy]
) -> Document:
    """The index's view of one submission: its answers and the replies sent to it."""
    texts = [manifest.testimony]
    texts.extend(v for k, v in sorted(manifest.fields.items()) if k != "testimony")
    if manifest.questionnaire is not None:
        # A choice answer is searchable by the words the witness chose.
        for question in manifest.questionnaire.questions:
            value = manifest.fields.get(question.id)
            if value and question.choices:
                texts.append(question.answer_text(value))
                texts.append(question.answer_text(value, english=True))
    texts.extend(reply.message for reply in replies)
    consent, _assumed = consent_of(manifest)
    return Document(
        submission=submission,
        fingerprint=fingerprint,
        received=manifest.received,
        language=manifest.language,
        consent=consent,
        attachments=len(manifest.attachments),
        thread=manifest.thread,
        preview=" ".join(manifest.testimony[:1200].split())[:300],
        body=normalise("\n".join(texts)),
    )


class IndexError_(Exception):
    """The index cannot be written where it belongs; the message says where and why."""


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE docs (
    rowid INTEGER PRIMARY KEY,
    submission TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    received TEXT NOT NULL,
    language TEXT NOT NULL,
    consent TEXT NOT NULL,
    attachments INTEGER NOT NULL,
    thread TEXT NOT NULL,
    preview TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX docs_received ON docs (received, submission);
CREATE INDEX docs_thread ON docs (thread);
CREATE VIRTUAL TABLE fts USING fts5 (
    terms, content='', detail='none', tokenize='unicode61 remove_diacritics 0'
);
CREATE TABLE cases (key TEXT PRIMARY KEY, status TEXT NOT NULL);
CREATE TABLE case_tags (key TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (key, tag));
"""


@dataclass(frozen=True)
class Refresh:
    added: int
    removed: int
    unchanged: int
    refused: dict[str, str]


class SearchIndex:
    """The desk's SQLite index of one opened folder."""

    def __init__(
        self, opened_dir: Path, path: Path | None = None, *, first_status: str = "new"
    ) -> None:
        self.opened_dir = opened_dir
        # What a case without a status entry counts as (the settings' first status).
        self.first_status = first_status
        self.path = path or opened_dir / INDEX_DIR / INDEX_NAME
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            version = None
            with contextlib.suppress(sqlite3.DatabaseError):
                row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                version = row[0] if row else None
            if version != SCHEMA_VERSION:
                # Older, damaged or not ours: it is derived data, so start again.
                db.close()
                self.path.unlink(missing_ok=True)
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                db.executescript(_SCHEMA)
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            return db
        except (OSError, sqlite3.Error) as exc:
            raise IndexError_(f"cannot keep the search index in {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------ building

    def refresh(self, sealed: SealedIndex | None = None) -> Refresh:
        """Bring the index up to date with the opened folder: add, re-index and drop.

        With `sealed` (the custody log's first openings), a submission whose
        files do not match what was logged when it was opened is refused,
        not indexed (issue 21).
        """
        known = dict(self._db.execute("SELECT submission, fingerprint FROM docs").fetchall())
        replies = _replies_by_submission(self.opened_dir)
        present: set[str] = set()
        refused: dict[str, str] = {}
        fresh: list[Document] = []
        for submission in opened_ids(self.opened_dir):
            folder = self.opened_dir / submission
            try:
                record = read_record(folder)
            except RecordError as exc:
                refused[submission] = str(exc)
                continue
            if record is None:
                continue
            mine = replies.get(submission, [])
            try:
                # The manifest's size and time too: an edited file is read (and refused) again.
                info = (folder / record.manifest.file).stat()
            except OSError as exc:
                refused[submission] = f"{folder / record.manifest.file}: {exc.strerror}"
                continue
            stamp = f"{record.manifest.sha256}:{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"
            fingerprint = _fingerprint(stamp, mine)
            present.add(submission)
            if known.get(submission) == fingerprint:
                continue
            try:
                _data, manifest = read_opened_manifest(folder, record)
                if sealed is not None:
                    sealed.check(folder, record, manifest)
            except Changed as exc:
                refused[submission] = str(exc)
                present.discard(submission)
                continue
            fresh.append(document_of(submission, manifest, fingerprint, mine))
        gone = (set(known) - present) | {d.submission for d in fresh if d.submission in known}
        self._write(gone, fresh)
        return Refresh(
            added=len(fresh),
            removed=len(set(known) - present),
            unchanged=len(present) - len(fresh),
            refused=refused,
        )

    def _write(self, gone: Iterable[str], fresh: Sequence[Document]) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            for submission in gone:
                rowid = db.execute(
                    "SELECT rowid, body FROM docs WHERE submission = ?", (submission,)
                ).fetchone()
                if rowid is None:
                    continue
                # A contentless table forgets a row given the terms it was made of.
                db.execute(
                    "INSERT INTO fts (fts, rowid, terms) VALUES ('delete', ?, ?)",
                    (rowid[0], index_terms(rowid[1])),
                )
                db.execute("DELETE FROM docs WHERE rowid = ?", (rowid[0],))
            for doc in fresh:
                cursor = db.execute(
                    "INSERT INTO docs (submission, fingerprint, received, language, consent, "
                    "attachments, thread, preview, body) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        doc.submission,
                        doc.fingerprint,
                        doc.received,
                        doc.language,
                        doc.consent,
                        doc.attachments,
                        doc.thread,
                        doc.preview,
                        doc.body,
                    ),
                )
                db.execute(
                    "INSERT INTO fts (rowid, terms) VALUES (?, ?)",
                    (cursor.lastrowid, index_terms(doc.body)),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def add_documents(self, documents: Iterable[Document]) -> None:
        """Index documents made elsewhere (the benchmark's generated text)."""
        self._write((), list(documents))

    def set_cases(self, statuses: Mapping[str, str], tags: Mapping[str, Iterable[str]]) -> None:
        """Replace the case table: status and tags by case key (a submission or a thread)."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM cases")
            db.execute("DELETE FROM case_tags")
            db.executemany("INSERT INTO cases VALUES (?, ?)", statuses.items())
            db.executemany(
                "INSERT INTO case_tags VALUES (?, ?)",
                ((key, tag) for key, values in tags.items() for tag in values),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------ reading

    def search(self, filters: Filters) -> Results:
        """The submissions that match, one page of them, newest (or oldest) first."""
        where, params = self._where(filters)
        order = "DESC" if filters.newest_first else "ASC"
        base = (
            "FROM docs d LEFT JOIN cases c ON c.key = d.submission "
            f"WHERE {' AND '.join(where) or '1'}"
        )
        # One pass finds every match in order (the search runs once, not again to count);
        # only the page's rows are read in full.
        matched = [
            row[0]
            for row in self._db.execute(
                f"SELECT d.rowid {base} ORDER BY d.received {order}, d.submission {order}", params
            )
        ]
        start = max(filters.page, 0) * PAGE_SIZE
        page = matched[start : start + PAGE_SIZE]
        # Only the number of placeholders is formatted in; the row ids are parameters.
        marks = ",".join("?" * len(page))
        details = (
            "SELECT d.rowid, d.submission, d.received, d.language, d.consent, d.attachments, "  # noqa: S608
            "d.thread, d.preview, coalesce(c.status, ?) FROM docs d "
            f"LEFT JOIN cases c ON c.key = d.submission WHERE d.rowid IN ({marks})"
        )
        by_rowid = {
            row[0]: row[1:] for row in self._db.execute(details, [self.first_status, *page])
        }
        rows = [by_rowid[rowid] for rowid in page]
        total = len(matched)
        tags = self._tags([r[0] for r in rows])
        hits = [
            Hit(
                submission=sid,
                received=received,
                language=language,
                consent=consent,
                attachments=attachments,
                thread=thread,
                preview=preview,
                status=status,
                tags=tuple(tags.get(sid, ())),
            )
            for sid, received, language, consent, attachments, thread, preview, status in rows
        ]
        return Results(total, hits)

    def _where(self, filters: Filters) -> tuple[list[str], list[object]]:
        where: list[str] = []
        params: list[object] = []
        query = parse_query(filters.text)
        if query.match is not None:
            where.append("d.rowid IN (SELECT rowid FROM fts WHERE fts MATCH ?)")
            params.append(query.match)
        for exact in query.exact:
            where.append("instr(d.body, ?) > 0")
            params.append(exact)
        if filters.status:
            where.append("coalesce(c.status, ?) = ?")
            params += [self.first_status, filters.status]
        if filters.tag:
            where.append(
                "EXISTS (SELECT 1 FROM case_tags t WHERE t.key = d.submission AND t.tag = ?)"
            )
            params.append(filters.tag)
        for column, value in (
            ("language", filters.language),
            ("consent", filters.consent),
            ("received", filters.day),
            ("thread", filters.thread),
        ):
            if value:
                where.append(f"d.{column} = ?")
                params.append(value)
        if filters.attachments == "yes":
            where.append("d.attachments > 0")
        elif filters.attachments == "no":
            where.append("d.attachments = 0")
        return where, params

    def _tags(self, keys: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        if not keys:
            return found
        marks = ",".join("?" * len(keys))
        for key, tag in self._db.execute(
            # Only the number of placeholders is formatted in; the keys are parameters.
            f"SELECT key, tag FROM case_tags WHERE key IN ({marks}) ORDER BY tag",  # noqa: S608
            list(keys),
        ):
            found.setdefault(key, []).append(tag)
        return found

    def choices(self) -> dict[str, list[str]]:
        """The values the filters offer: languages, consents, tags, conversations."""
        db = self._db
        return {
            "language": [r[0] for r in db.execute("SELECT DISTINCT language FROM docs ORDER BY 1")],
            "consent": [r[0] for r in db.execute("SELECT DISTINCT consent FROM docs ORDER BY 1")],
            "tag": [r[0] for r in db.execute("SELECT DISTINCT tag FROM case_tags ORDER BY 1")],
        }

    def thread_members(self, thread: str) -> list[tuple[str, str, str]]:
        """(submission, received, preview) of each submission in a conversation, oldest first."""
        return list(
            self._db.execute(
                "SELECT submission, received, preview FROM docs WHERE thread = ? "
                "ORDER BY received, submission",
                (thread,),
            )
        )

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM docs").fetchone()[0])


def _fingerprint(manifest_sha256: str, replies: Sequence[ReplyCopy]) -> str:
    digest = hashlib.sha256(manifest_sha256.encode())
    for reply in replies:
        digest.update(b"\0" + reply.ciphertext_sha256.encode() + reply.message.encode())
    return digest.hexdigest()


def _replies_by_submission(opened_dir: Path) -> dict[str, list[ReplyCopy]]:
    found: dict[str, list[ReplyCopy]] = {}
    for replies in load_sent_replies(opened_dir).values():
        for reply in replies:
            found.setdefault(reply.submission, []).append(reply)
    return found


@contextlib.contextmanager
def opened_index(opened_dir: Path) -> Iterator[SearchIndex]:
    index = SearchIndex(opened_dir)
    try:
        yield index
    finally:
        index.close()
