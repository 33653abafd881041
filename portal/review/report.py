"""Static, offline HTML pages for the reviewer: `DIR/index.html` and one page per submission.

Every string that came from a witness (testimony, field names, file names,
types, the language tag) is passed through `html.escape` and wrapped in an
element with `dir="auto"` (or `<bdi>`), so markup renders as text and a
right-to-left override cannot reorder the page around it. The pages carry
a Content-Security-Policy that allows no script, no network request and no
style but the one inline block, whose hash the policy names: even a mistake
in escaping would not let a testimony run code on the reviewer's machine.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from portal.core.fsio import replace_file
from portal.core.manifest import (
    ManifestError,
    SealedQuestionnaire,
    parse_sealed_questionnaire,
)
from portal.core.questionnaire import QuestionKind
from portal.review import inert
from portal.review.outcomes import Status
from portal.review.record import (
    MANIFEST_JSON,
    LongField,
    OpenedAttachment,
    OpenedRecord,
    ReplyCopy,
    load_sent_replies,
)

PREVIEW_CHARS = 280
INDEX_NAME = "index.html"
PAGE_NAME = "testimony.html"

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em;
  color: #111; background: #fff; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ccc; padding: .4em .5em; text-align: start;
  vertical-align: top; }
code, .hash { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; border: 1px solid #ddd; padding: .8em;
  background: #fafafa; }
.preview { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 40em; }
.ok { color: #075e07; font-weight: bold; }
.bad { color: #a00; font-weight: bold; }
.note { color: #555; }
ul.files { margin: 0; padding-inline-start: 1.2em; }
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
_CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{_STYLE_HASH}'; "
    "img-src 'none'; base-uri 'none'; form-action 'none'"
)
# A page shows at most this much of the witness's text fields together (a
# field beyond it is cut, and its full text is kept as a file beside the
# page), so a 60 MB testimony makes a page of a few hundred KiB, not 240 MB.
PAGE_TEXT_CHARS = 200_000
# Question labels, choice labels and field names come from the manifest too:
# a crafted one sealed 40 MB of labels and made a 160 MB page (issue 21).
# They share this budget, each question or field costing at least
# `_ITEM_CHARS` (its markup), so a page holds at most a few thousand of them.
PAGE_LABEL_CHARS = 200_000
_ITEM_CHARS = 100
_LANG_RE = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8}){0,4}")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


# Bidirectional controls: inside a name they reorder what follows, so
# "evil\u202egpj.exe" shows as "evilexe.jpg". <bdi> only keeps them from
# reordering the page around the name.
_BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def esc_name(value: object) -> str:
    """A witness-given name as HTML, with each bidirectional control shown as its code."""
    return esc(_BIDI_CONTROLS.sub(lambda m: f"[U+{ord(m.group()):04X}]", str(value)))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _lang_attr(language: str) -> str:
    return f' lang="{esc(language)}"' if _LANG_RE.fullmatch(language) else ""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"{body}\n</body>\n</html>\n"
    )


class _Labels:
    """What is left of the page's budget for labels, field names and choice texts."""

    def __init__(self) -> None:
        self.left = PAGE_LABEL_CHARS
        self.skipped = 0

    def item(self) -> bool:
        """Whether one more question or field fits; counts it if not."""
        if self.left < _ITEM_CHARS:
            self.skipped += 1
            return False
        self.left -= _ITEM_CHARS
        return True

    def take(self, text: str) -> str:
        """`text`, cut to what is left of the budget."""
        count = min(len(text), self.left)
        self.left -= count
        return text if count == len(text) else text[:count] + "…"

    def note(self) -> list[str]:
        if not self.skipped:
            return []
        return [
            f'<p class="note">{self.skipped} more question(s) or field(s) are not shown: their '
            "labels and names exceed what one page holds. testimony.json has them all.</p>"
        ]


def shown_chars(fields: Mapping[str, str]) -> dict[str, int]:
    """How many characters of each field the submission page shows (testimony first)."""
    budget = PAGE_TEXT_CHARS
    shown = {}
    for name, value in _ordered(fields):
        shown[name] = min(len(value), budget)
        budget -= shown[name]
    return shown


def _ordered(fields: Mapping[str, str]) -> list[tuple[str, str]]:
    return sorted(fields.items(), key=lambda item: (item[0] != "testimony", item[0]))


def _attachment_link(entry: OpenedAttachment, prefix: str, number: int) -> str:
    """The file's name: a link if it is an inert medium, else the reason it is not linked."""
    name = entry.file
    label = f"<bdi>{esc(name)}</bdi>"
    kind = entry.view
    if kind == inert.TEXT:
        href = f"{prefix}{PAGE_NAME}#file-{number}"
        return f'<a href="{esc(href)}">{label}</a> (text, shown on the page)'
    # The name is checked again here, so a doctored record cannot make an
    # active type linkable.
    if isinstance(kind, str) and inert.is_linkable(name, kind):
        return f'<a href="{esc(prefix + quote(name))}">{label}</a>'
    reason = entry.view_reason or "not linked"
    return f'{label} <span class="note">({esc(reason)})</span>'


def _status(entry: OpenedAttachment, state: Status | None = Status.OPENED) -> str:
    """The integrity status to show: `state` is what this run found for the submission."""
    if state is None:
        return '<span class="note">not checked in this run</span>'
    if state not in (Status.OPENED, Status.ALREADY_OPENED) or not entry.verified:
        return '<span class="bad">NOT verified</span>'
    if state == Status.OPENED:
        return '<span class="ok">SHA-256 verified when opened</span>'
    return '<span class="ok">SHA-256 verified</span>'


def render_submission_page(
    record: OpenedRecord,
    manifest: Mapping[str, Any],
    texts: Mapping[str, str] | None = None,
) -> str:
    """The readable page for one opened submission (written as `DIR/<id>/testimony.html`).

    `texts` holds the start of each plain-text attachment, by file name.
    """
    fields = manifest.get("fields") or {}
    language = str(manifest.get("language", ""))
    ordered = _ordered(fields)
    shown = shown_chars(fields)
    full_texts = {t.field: t for t in record.long_fields}
    parts = [
        '<p><a href="../index.html">All submissions</a></p>',
        f"<h1>Submission <code>{esc(record.id)}</code></h1>",
        "<table>",
        f'<tr><th>Received</th><td dir="auto">{esc(manifest.get("received", ""))}</td></tr>',
        f'<tr><th>Language</th><td dir="auto">{esc(language)}</td></tr>',
        f"<tr><th>Opened</th><td>{esc(record.opened)}</td></tr>",
        f'<tr><th>Manifest SHA-256</th><td class="hash">{esc(record.manifest.sha256)}</td></tr>',
        "</table>",
    ]
    sealed = _sealed_questionnaire(manifest)
    labels = _Labels()
    if sealed is not None:
        parts.extend(_questionnaire_answers(sealed, fields, language, shown, full_texts, labels))
    asked = {q.id for q in sealed.questions} if sealed is not None else set()
    for name, value in ordered:
        if name in asked:
            continue
        if name != "testimony" and not labels.item():
            continue
        parts.append(f'<h2 dir="auto">{esc(labels.take(name))}</h2>')
        parts.extend(_text_block(name, value, language, shown, full_texts))
    parts.extend(labels.note())
    attachments = record.attachments
    parts.append(f"<h2>Attachments ({len(attachments)})</h2>")
    if attachments:
        parts.append(
            "<table><tr><th>File</th><th>Name as sent</th><th>Type</th><th>Size</th>"
            "<th>SHA-256</th><th>Integrity</th></tr>"
        )
        for number, entry in enumerate(attachments, start=1):
            parts.append(
                f"<tr><td>{_attachment_link(entry, '', number)}</td>"
                f"<td><bdi>{esc_name(entry.name)}</bdi></td>"
                f"<td><bdi>{esc(entry.type)}</bdi></td>"
                f"<td>{esc(human_size(entry.size))}</td>"
                f'<td class="hash">{esc(entry.sha256)}</td>'
                f"<td>{_status(entry)}</td></tr>"
            )
        parts.append("</table>")
    for number, entry in enumerate(attachments, start=1):
        text = (texts or {}).get(entry.file)
        if entry.view != inert.TEXT or text is None:
            continue
        size = entry.size
        parts.append(f'<h2 id="file-{number}">Text of <bdi>{esc(entry.file)}</bdi></h2>')
        parts.append(f'<div class="text" dir="auto">{esc(text)}</div>')
        if size > inert.SNIFF_BYTES:
            parts.append(
                f'<p class="note">The first {human_size(inert.SNIFF_BYTES)} of '
                f"{human_size(size)} are shown; open the file in a text editor for the rest.</p>"
            )
    return _page(f"Submission {record.id}", "\n".join(parts))


def _text_block(
    name: str,
    value: str,
    language: str,
    shown: Mapping[str, int],
    full_texts: Mapping[str, LongField],
) -> list[str]:
    start = value[: shown[name]]
    parts = [f'<div class="text" dir="auto"{_lang_attr(language)}>{esc(start)}</div>']
    if len(start) < len(value):
        long_field = full_texts.get(name)
        where = long_field.file if long_field is not None else MANIFEST_JSON
        parts.append(
            f'<p class="note">Only the first {len(start):,} of {len(value):,} characters '
            f"are shown. The full text is in <bdi>{esc(where)}</bdi> in this folder: open it "
            "in a text editor.</p>"
        )
    return parts


def _sealed_questionnaire(manifest: Mapping[str, Any]) -> SealedQuestionnaire | None:
    raw = manifest.get("questionnaire")
    if raw is None:
        return None
    try:
        return parse_sealed_questionnaire(raw)
    except ManifestError:
        # `open` refused such a manifest already; a page is never the place to fail.
        return None


def _questionnaire_answers(
    sealed: SealedQuestionnaire,
    fields: Mapping[str, str],
    language: str,
    shown: Mapping[str, int],
    full_texts: Mapping[str, LongField],
    labels: _Labels | None = None,
) -> list[str]:
    """Each answer under its question as the witness saw it, the English label beside it."""
    labels = labels or _Labels()
    lang = _lang_attr(labels.take(sealed.language) or language)
    parts = [
        '<p class="note">Questionnaire <bdi>'
        f"{esc(labels.take(sealed.id))}</bdi>, version <bdi>{esc(labels.take(sealed.version))}"
        "</bdi>, SHA-256 "
        f'<span class="hash">{esc(sealed.sha256)}</span>. The questions below are the exact '
        "texts the witness saw, sealed with the answers; the English label is beside each.</p>"
    ]
    for question in sealed.questions:
        if question.id != "testimony" and not labels.item():
            continue
        parts.append(
            f'<h2><span dir="auto"{lang}>{esc(labels.take(question.label))}</span> '
            f'<span class="note">(<bdi>{esc(labels.take(question.label_en))}</bdi>; '
            f"<code>{esc(labels.take(question.id))}</code>)</span></h2>"
        )
        if question.type == QuestionKind.FILES:
            parts.append('<p class="note">See the attachments below.</p>')
            continue
        if question.type == "notice":
            # Words the witness read before answering (no answer of its own).
            parts.append(
                '<p class="note">Shown to the witness before the questions that follow:</p>'
            )
            parts.append(f'<div class="text" dir="auto"{lang}>{esc(question.help)}</div>')
            continue
        value = fields.get(question.id)
        if not value:
            parts.append('<p class="note">No answer.</p>')
        elif question.choices:
            words = labels.take(question.answer_text(value))
            english = labels.take(question.answer_text(value, english=True))
            parts.append(
                f'<p><span dir="auto"{lang}>{esc(words)}</span> '
                f'<span class="note">(<bdi>{esc(english)}</bdi>; '
                f"<code>{esc(labels.take(value))}</code>)</span></p>"
            )
        else:
            parts.extend(_text_block(question.id, value, language, shown, full_texts))
    return parts


def preview(text: str) -> str:
    """The start of a testimony as the index shows it: whitespace folded, cut at PREVIEW_CHARS."""
    return _preview(text)


def _preview(text: str) -> str:
    # Cut first: splitting a 60 MB testimony would copy all of it.
    text = " ".join(text[: PREVIEW_CHARS * 4].split())
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def _thread_rows(thread: str, members: int, replies: Sequence[ReplyCopy]) -> list[str]:
    """The heading row of one conversation and the replies sent to it."""
    rows = [
        f'<tr class="thread" id="thread-{esc(thread[:16])}"><th colspan="5">Conversation '
        f"<code>{esc(thread[:16])}</code>: {members} submission(s), {len(replies)} "
        "reply(ies) sent</th></tr>"
    ]
    for reply in replies:
        rows.append(
            f'<tr class="sent-reply"><td>{esc(reply.sent)}</td><td colspan="4">'
            f"<strong>Reply sent</strong> (to <code>{esc(reply.submission)}</code>)"
            f'<div class="reply-text" dir="auto">{esc(reply.message)}</div></td></tr>'
        )
    return rows


@dataclass(frozen=True)
class _Conversation:
    """The group of the index a submission is listed in."""

    # The thread every submission made with one receipt shares. Records
    # written before threads have none ("") and each is a group of its own,
    # named by `alone`, without a heading.
    thread: str
    alone: str = ""


_Row = tuple[OpenedRecord, Mapping[str, Any]]


def _by_thread(rows: Sequence[_Row]) -> list[tuple[_Conversation, list[_Row]]]:
    """Rows grouped by conversation, the conversation with the newest submission first."""
    groups: dict[_Conversation, list[_Row]] = {}
    for row in rows:
        record = row[0]
        key = _Conversation(record.thread) if record.thread else _Conversation("", record.id)
        groups.setdefault(key, []).append(row)
    return list(groups.items())


def render_index(
    entries: Sequence[tuple[OpenedRecord, Mapping[str, Any]]],
    failures: Mapping[str, str],
    checked: Mapping[str, Status] | None = None,
    replies: Mapping[str, Sequence[ReplyCopy]] | None = None,
) -> str:
    """The overview of every opened submission, newest first, and this run's failures.

    `checked` says, per submission id, what this run found: OPENED (just
    decrypted and verified) or ALREADY_OPENED (opened before, every hash
    checked again now). Other submissions are shown as not checked in this run.
    """
    checked = checked or {}
    replies = replies or {}
    rows = sorted(entries, key=lambda pair: (str(pair[1].get("received", "")), pair[0].id))
    rows.reverse()
    parts = [
        "<h1>Opened submissions</h1>",
        f"<p>{len(rows)} submission(s). An attachment shown as verified was checked in the run "
        "that wrote this page: its SHA-256 matched the encrypted manifest, and for a submission "
        "opened earlier, the ciphertext and every opened file still matched the hashes "
        "recorded then.</p>",
    ]
    if failures:
        parts.append(f'<h2 class="bad">Not opened in the last run ({len(failures)})</h2><ul>')
        for submission_id, reason in sorted(failures.items()):
            parts.append(f"<li><code>{esc(submission_id)}</code>: {esc(reason)}</li>")
        parts.append("</ul>")
    parts.append(
        "<table><tr><th>Received</th><th>Language</th><th>Testimony (start)</th>"
        "<th>Attachments</th><th>Submission</th></tr>"
    )
    # Submissions made with one receipt form a conversation: shown together,
    # under a heading row, with the replies sent to it.
    for conversation, members in _by_thread(rows):
        if conversation.thread:
            thread = conversation.thread
            parts.extend(_thread_rows(thread, len(members), replies.get(thread, [])))
        for record, manifest in members:
            parts.append(_index_row(record, manifest, checked, failures))
    parts.append("</table>")
    return _page("Opened submissions", "\n".join(parts))


def _index_row(
    record: OpenedRecord,
    manifest: Mapping[str, Any],
    checked: Mapping[str, Status],
    failures: Mapping[str, str],
) -> str:
    submission_id = record.id
    prefix = quote(submission_id) + "/"
    testimony = str((manifest.get("fields") or {}).get("testimony", ""))
    state = checked.get(submission_id)
    if submission_id in failures:
        state = Status.FAILED
    files = []
    for number, entry in enumerate(record.attachments, start=1):
        files.append(
            f"<li>{_attachment_link(entry, prefix, number)}, "
            f"{esc(human_size(entry.size))}, {_status(entry, state)}<br>"
            f'<span class="hash">{esc(entry.sha256)}</span></li>'
        )
    language = str(manifest.get("language", ""))
    return (
        f'<tr><td dir="auto">{esc(manifest.get("received", ""))}</td>'
        f'<td dir="auto">{esc(language)}</td>'
        f'<td class="preview" dir="auto"{_lang_attr(language)}>{esc(_preview(testimony))}</td>'
        f'<td><ul class="files">{"".join(files)}</ul></td>'
        f'<td><a href="{esc(prefix + PAGE_NAME)}">read</a><br>'
        f"<code>{esc(submission_id)}</code></td></tr>"
    )


def write_atomically(path: Path, text: str) -> None:
    """Replace one of the tool's own files in a single step (temporary file, fsync, rename)."""
    replace_file(path, text.encode("utf-8"))


def write_index(
    out_dir: Path,
    entries: Iterable[tuple[OpenedRecord, Mapping[str, Any]]],
    failures: Mapping[str, str],
    checked: Mapping[str, Status] | None = None,
) -> Path:
    path = out_dir / INDEX_NAME
    replies = load_sent_replies(out_dir)
    write_atomically(path, render_index(list(entries), failures, checked, replies))
    return path
