"""The desk's HTML: the list with search and filters, and the case page.

Every string that came from a witness, a reviewer or a file (testimony,
answers, question labels, names, types, tags, notes, metadata, tool
messages) goes through `report.esc` or `report.esc_name` (the static
index's own helpers) and sits in an element with `dir="auto"` or in
`<bdi>`, so markup is text and a right-to-left override cannot reorder the
page around it. Attachments are linked only when `inert.is_linkable` says
so, the static index's allowlist. The pages hold no script, and the
Content-Security-Policy the app sends would stop any.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from portal.core.manifest import Manifest, SealedQuestionnaire
from portal.review import inert
from portal.review.custody import Entry
from portal.review.desk.cases import Case, thread_key
from portal.review.desk.i18n import NAMES, TAGS, catalogue
from portal.review.desk.metadata import Finding
from portal.review.desk.search import PAGE_SIZE, Filters, Results
from portal.review.desk.settings import LANGUAGES, DeskSettings
from portal.review.record import OpenedAttachment, ReplyCopy
from portal.review.report import esc, esc_name, human_size

Gettext = Callable[[str], str]
Words = Mapping[str, str]

STYLE = """
body { font: 16px/1.6 "Noto Sans CJK KR", system-ui, sans-serif; margin: 0; color: #111;
  background: #fff; }
header { background: #1f3a5f; color: #fff; padding: .6em 1em; display: flex; flex-wrap: wrap;
  gap: 1em; align-items: center; justify-content: space-between; }
header a { color: #fff; }
header nav ul { list-style: none; display: flex; gap: 1em; margin: 0; padding: 0; }
main { max-width: 80em; margin: 0 auto; padding: 1em; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #bbb; padding: .4em .5em; text-align: start;
  vertical-align: top; }
.hash, code { font-family: ui-monospace, monospace; font-size: 13px; word-break: break-all; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; border: 1px solid #bbb; padding: .8em;
  background: #f7f7f7; }
.preview { overflow-wrap: anywhere; max-width: 40em; }
.ok { color: #05570a; font-weight: bold; }
.bad { color: #a00000; font-weight: bold; }
.note { color: #444; }
.warn { border: 2px solid #a00000; padding: .5em 1em; background: #fff4f4; }
.done { border: 2px solid #05570a; padding: .5em 1em; background: #f2fbf2; }
form.filters { display: flex; flex-wrap: wrap; gap: .6em 1em; align-items: end;
  margin-bottom: 1em; }
form.filters label, form.stack label { display: block; font-weight: bold; }
form.inline { display: inline; }
input, select, textarea, button { font: inherit; }
textarea { width: 100%; max-width: 50em; }
input[type=text], input[type=search] { min-width: 12em; }
button { padding: .2em .8em; }
.tag { display: inline-block; border: 1px solid #1f3a5f; border-radius: .3em;
  padding: 0 .4em; margin: 0 .2em .2em 0; }
section { margin: 2em 0; }
"""
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()


# Default statuses in words; an organisation's own statuses are shown as written.
def status_label(W: Words, status: str) -> str:
    labels = {
        "new": W["new"],
        "in-review": W["in review"],
        "verified": W["verified"],
        "answered": W["answered"],
        "forwarded": W["forwarded"],
        "closed": W["closed"],
    }
    return labels.get(status, status)


def consent_short(W: Words, consent: str) -> str:
    """The consent answer in a word or two, for the list."""
    labels = {
        "yes": W["consent: yes"],
        "anonymous": W["consent: anonymous"],
        "ask": W["consent: ask first"],
        "no": W["consent: no"],
    }
    # The English msgids carry "consent: " to tell them from other yeses and noes.
    return labels.get(consent, consent).removeprefix("consent: ")


def consent_label(W: Words, consent: str) -> str:
    labels = {
        "yes": W["yes-may-be-passed-to"],
        "anonymous": W["anonymous-only-without-name-and"],
        "ask": W["ask-first-the-witness-must"],
        "no": W["no: must not be passed on"],
    }
    return labels.get(consent, consent)


@functools.cache
def words(language: str) -> Words:
    """Every phrase of the pages in one language, keyed by its English text.

    The calls are spelled out here, outside the f-strings that use them,
    because Babel's extractor does not look inside f-strings.
    """
    _ = catalogue(language).gettext
    return {
        "add-copies-cleaned-of-metadata": _(
            "Add a copy of each attachment cleaned of metadata (mat2) beside the untouched original"
        ),
        "consent: yes": _("consent: yes"),
        "consent: anonymous": _("consent: anonymous"),
        "consent: ask first": _("consent: ask first"),
        "consent: no": _("consent: no"),
        "new": _("new"),
        "in review": _("in review"),
        "verified": _("verified"),
        "answered": _("answered"),
        "forwarded": _("forwarded"),
        "closed": _("closed"),
        "yes-may-be-passed-to": _("yes: may be passed to courts and UN bodies"),
        "anonymous-only-without-name-and": _(
            "anonymous: only without name and identifying details"
        ),
        "ask-first-the-witness-must": _(
            "ask first: the witness must be asked before passing it on"
        ),
        "no: must not be passed on": _("no: must not be passed on"),
        "Testimony review desk": _("Testimony review desk"),
        "Reviewer:": _("Reviewer:"),
        "Language": _("Language"),
        "all": _("all"),
        "Search": _("Search"),
        "Status": _("Status"),
        "Tag": _("Tag"),
        "Language of the testimony": _("Language of the testimony"),
        "Consent": _("Consent"),
        "Received on": _("Received on"),
        "Attachments": _("Attachments"),
        "with attachments": _("with attachments"),
        "without attachments": _("without attachments"),
        "Order": _("Order"),
        "newest first": _("newest first"),
        "oldest first": _("oldest first"),
        "Testimonies": _("Testimonies"),
        "Showing one conversation.": _("Showing one conversation."),
        "Show all": _("Show all"),
        "these-opened-submissions-could-not": _(
            "These opened submissions could not be read; check them with testimony-review verify:"
        ),
        "%(count)s testimonies found.": _("%(count)s testimonies found."),
        "Nothing matches.": _("Nothing matches."),
        "Testimonies, by date received": _("Testimonies, by date received"),
        "Received": _("Received"),
        "Tags": _("Tags"),
        "Testimony (start)": _("Testimony (start)"),
        "Previous page": _("Previous page"),
        "Next page": _("Next page"),
        "Pages": _("Pages"),
        "All testimonies": _("All testimonies"),
        "Testimony": _("Testimony"),
        "the-custody-log-fails-its": _(
            "The custody log fails its check; nothing can be recorded until it is restored:"
        ),
        "This testimony": _("This testimony"),
        "no answer (counts as: %(meaning)s)": _("no answer (counts as: %(meaning)s)"),
        "Remove tag %(tag)s": _("Remove tag %(tag)s"),
        "Set status": _("Set status"),
        "No tags yet.": _("No tags yet."),
        "New tag": _("New tag"),
        "Add tag": _("Add tag"),
        "Notes": _("Notes"),
        "No notes yet.": _("No notes yet."),
        "new-note-recorded-with-your": _("New note (recorded with your name in the custody log)"),
        "Save note": _("Save note"),
        "Testimony and answers": _("Testimony and answers"),
        "each-question-is-shown-as": _(
            "Each question is shown as the witness saw it, with the organisation’s label beside it."
        ),
        "See the attachments below.": _("See the attachments below."),
        "No answer.": _("No answer."),
        "No attachments.": _("No attachments."),
        "File": _("File"),
        "Name as sent": _("Name as sent"),
        "Type": _("Type"),
        "Size": _("Size"),
        "Integrity": _("Integrity"),
        "not-linked-not-a-type": _("not linked: not a type known to be safe to open in a browser"),
        "SHA-256 verified now": _("SHA-256 verified now"),
        "changed-since-opening-do-not": _("CHANGED since opening: do not trust this file"),
        "Metadata could not be read:": _("Metadata could not be read:"),
        "no-identifying-metadata-found-in": _("No identifying metadata found in this file."),
        "warning-this-file-holds-metadata": _(
            "Warning: this file holds metadata that may identify the witness, a place or a device."
        ),
        "forward-it-only-as-a": _(
            "Forward it only as a cleaned copy, or with the witness’s consent."
        ),
        "Reply sent": _("Reply sent"),
        "This conversation": _("This conversation"),
        "The whole conversation": _("The whole conversation"),
        "List this conversation": _("List this conversation"),
        "Reply to the witness": _("Reply to the witness"),
        "this-testimony-was-sent-before": _(
            "This testimony was sent before the portal gave receipts: its"
            " witness cannot be answered."
        ),
        "the-reply-is-encrypted-to": _(
            "The reply is encrypted to the witness alone and put in the "
            "outbox; carry the outbox to the server."
        ),
        "Reply": _("Reply"),
        "Encrypt and put in the outbox": _("Encrypt and put in the outbox"),
        "Partner": _("Partner"),
        "(type a key below)": _("(type a key below)"),
        "Identifying answers to leave out": _("Identifying answers to leave out"),
        "The witness’s consent allows forwarding.": _("The witness’s consent allows forwarding."),
        "the-witness-allowed-forwarding-only": _(
            "The witness allowed forwarding only without identifying "
            "details: leave every identifying answer out."
        ),
        "the-witness-s-consent-does": _(
            "The witness’s consent does not allow forwarding. Only if you"
            " have their consent some other way, give the reason below; "
            "it is recorded in the custody log and the bundle."
        ),
        "Forward to a legal partner": _("Forward to a legal partner"),
        "Consent:": _("Consent:"),
        "partner-s-age-public-key": _("Partner’s age public key (age1pq1... or age1...)"),
        "reason-for-sending-without-that": _(
            "Reason for sending without that consent (leave empty otherwise)"
        ),
        "Make the encrypted bundle": _("Make the encrypted bundle"),
        "The custody log fails its check.": _("The custody log fails its check."),
        "hash-chain-of-the-custody": _("Hash chain of the custody log verified; head:"),
        "Custody history": _("Custody history"),
        "When (UTC)": _("When (UTC)"),
        "Who": _("Who"),
        "Action": _("Action"),
        "What": _("What"),
        "Line hash": _("Line hash"),
    }


@dataclass(frozen=True)
class Frame:
    """What every page needs: language, base URL, reviewer, the session's form token."""

    lang: str
    base: str  # "/SECRET/ko/"
    root: str  # "/SECRET/"
    reviewer: str
    csrf: str
    settings: DeskSettings

    def _(self, message: str) -> str:
        """One message in the frame's language (for text outside the pages' phrase table)."""
        return catalogue(self.lang).gettext(message)

    @property
    def words(self) -> Words:
        return words(self.lang)

    def url(self, path: str = "", **query: str) -> str:
        shown = {k: v for k, v in query.items() if v}
        return self.base + path + (f"?{urlencode(shown)}" if shown else "")

    def token(self) -> str:
        return f'<input type="hidden" name="csrf_token" value="{esc(self.csrf)}">'


def page(frame: Frame, title: str, body: str, here: str = "") -> str:
    W = frame.words
    current = ' aria-current="page"'
    languages = "".join(
        f'<li><a href="{esc(frame.root + code + "/" + here)}" lang="{TAGS[code]}"'
        f"{current if code == frame.lang else ''}>{esc(NAMES[code])}</a></li>"
        for code in LANGUAGES
    )
    return (
        f'<!doctype html>\n<html lang="{TAGS[frame.lang]}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="referrer" content="same-origin">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)} · {esc(W['Testimony review desk'])}</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n"
        f'<header><a href="{esc(frame.url())}"><strong>{esc(W["Testimony review desk"])}</strong>'
        f"</a><span>{esc(W['Reviewer:'])} <bdi>{esc(frame.reviewer)}</bdi></span>"
        f'<nav aria-label="{esc(W["Language"])}"><ul>{languages}</ul></nav></header>\n'
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _select(name: str, label: str, options: Sequence[tuple[str, str]], chosen: str) -> str:
    items = "".join(
        f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(t)}</option>'
        for v, t in options
    )
    return (
        f'<div><label for="f-{name}">{esc(label)}</label>'
        f'<select id="f-{name}" name="{name}">{items}</select></div>'
    )


def list_page(
    frame: Frame,
    filters: Filters,
    results: Results,
    choices: Mapping[str, Sequence[str]],
    refused: Mapping[str, str],
) -> str:
    W = frame.words
    every = [("", W["all"])]
    statuses = every + [(s, status_label(W, s)) for s in frame.settings.statuses]
    form = [
        f'<form class="filters" method="get" action="{esc(frame.url())}" role="search">',
        f'<div><label for="f-q">{esc(W["Search"])}</label>'
        f'<input type="search" id="f-q" name="q" value="{esc(filters.text)}"></div>',
        _select("status", W["Status"], statuses, filters.status),
        _select("tag", W["Tag"], every + [(t, t) for t in choices["tag"]], filters.tag),
        _select(
            "language",
            W["Language of the testimony"],
            every + [(v, v) for v in choices["language"]],
            filters.language,
        ),
        _select(
            "consent",
            W["Consent"],
            every + [(v, consent_short(W, v)) for v in choices["consent"]],
            filters.consent,
        ),
        f'<div><label for="f-day">{esc(W["Received on"])}</label>'
        f'<input type="date" id="f-day" name="day" value="{esc(filters.day)}"></div>',
        _select(
            "files",
            W["Attachments"],
            [("", W["all"]), ("yes", W["with attachments"]), ("no", W["without attachments"])],
            filters.attachments,
        ),
        _select(
            "sort",
            W["Order"],
            [("new", W["newest first"]), ("old", W["oldest first"])],
            "new" if filters.newest_first else "old",
        ),
    ]
    if filters.thread:
        form.append(f'<input type="hidden" name="thread" value="{esc(filters.thread)}">')
    form.append(f'<div><button type="submit">{esc(W["Search"])}</button></div></form>')
    parts = [f"<h1>{esc(W['Testimonies'])}</h1>", "\n".join(form)]
    if filters.thread:
        parts.append(
            f'<p class="note">{esc(W["Showing one conversation."])} '
            f'<a href="{esc(frame.url())}">{esc(W["Show all"])}</a></p>'
        )
    if refused:
        parts.append(
            '<div class="warn" role="alert"><p>'
            + esc(W["these-opened-submissions-could-not"])
            + "</p><ul>"
            + "".join(
                f"<li><code>{esc(k)}</code>: <bdi>{esc(v)}</bdi></li>"
                for k, v in sorted(refused.items())
            )
            + "</ul></div>"
        )
    parts.append(
        '<p id="count" role="status">'
        + esc(W["%(count)s testimonies found."] % {"count": f"{results.total:,}"})
        + "</p>"
    )
    parts.append(_results_table(frame, results))
    parts.append(_pager(frame, filters, results))
    return page(frame, W["Testimonies"], "\n".join(parts), _here_list(filters))


def _here_list(filters: Filters) -> str:
    query = _filter_query(filters)
    return f"?{urlencode(query)}" if query else ""


def _filter_query(filters: Filters, page_number: int | None = None) -> dict[str, str]:
    query = {
        "q": filters.text,
        "status": filters.status,
        "tag": filters.tag,
        "language": filters.language,
        "consent": filters.consent,
        "day": filters.day,
        "files": filters.attachments,
        "thread": filters.thread,
        "sort": "" if filters.newest_first else "old",
        "page": str(page_number) if page_number else "",
    }
    return {k: v for k, v in query.items() if v}


def _results_table(frame: Frame, results: Results) -> str:
    W = frame.words
    if not results.hits:
        return f"<p>{esc(W['Nothing matches.'])}</p>"
    rows = [
        f'<table><caption class="note">{esc(W["Testimonies, by date received"])}</caption>'
        f'<thead><tr><th scope="col">{esc(W["Received"])}</th>'
        f'<th scope="col">{esc(W["Status"])}</th><th scope="col">{esc(W["Tags"])}</th>'
        f'<th scope="col">{esc(W["Testimony (start)"])}</th>'
        f'<th scope="col">{esc(W["Consent"])}</th>'
        f'<th scope="col">{esc(W["Attachments"])}</th></tr></thead><tbody>'
    ]
    for hit in results.hits:
        tags = "".join(f'<span class="tag"><bdi>{esc(t)}</bdi></span>' for t in hit.tags)
        rows.append(
            f'<tr class="hit" data-id="{esc(hit.submission)}"><td>{esc(hit.received)}</td>'
            f"<td>{esc(status_label(W, hit.status))}</td><td>{tags}</td>"
            f'<td class="preview"><a href="{esc(frame.url("case/" + hit.submission))}">'
            f'<span dir="auto" lang="{esc(_lang(hit.language))}">'
            f"{esc(hit.preview[:160] or hit.submission)}</span></a></td>"
            f"<td>{esc(consent_short(W, hit.consent))}</td><td>{hit.attachments}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _lang(language: str) -> str:
    return language if language.replace("-", "").isalnum() and len(language) <= 20 else ""


def _pager(frame: Frame, filters: Filters, results: Results) -> str:
    W = frame.words
    links = []
    if filters.page > 0:
        query = urlencode(_filter_query(filters, filters.page - 1))
        links.append(f'<a href="{esc(frame.base)}?{esc(query)}">{esc(W["Previous page"])}</a>')
    if (filters.page + 1) * PAGE_SIZE < results.total:
        query = urlencode(_filter_query(filters, filters.page + 1))
        links.append(f'<a href="{esc(frame.base)}?{esc(query)}">{esc(W["Next page"])}</a>')
    return f'<nav aria-label="{esc(W["Pages"])}"><p>{" · ".join(links)}</p></nav>' if links else ""


# ---------------------------------------------------------------- the case page


@dataclass(frozen=True)
class AttachmentView:
    number: int
    entry: OpenedAttachment
    verified_now: bool
    metadata: list[Finding] | None
    metadata_error: str | None
    # The start of a plain-text attachment, shown escaped (as on the static pages).
    text: str | None = None


@dataclass(frozen=True)
class ConversationItem:
    day: str
    submission: str | None
    reply: ReplyCopy | None
    preview: str


@dataclass(frozen=True)
class CaseView:
    submission: str
    manifest: Manifest
    attachments: list[AttachmentView]
    case: Case
    thread_case: Case | None
    conversation: list[ConversationItem]
    history: list[Entry]
    log_damage: str | None
    log_head: str
    consent: str
    consent_assumed: bool
    identifying: list[str]
    message: str | None = None
    error: str | None = None


def case_page(frame: Frame, view: CaseView) -> str:
    W = frame.words
    sid = view.submission
    manifest = view.manifest
    parts = [
        f'<p><a href="{esc(frame.url())}">{esc(W["All testimonies"])}</a></p>',
        f"<h1>{esc(W['Testimony'])} <code>{esc(sid)}</code></h1>",
    ]
    if view.message:
        parts.append(f'<p class="done" role="status">{esc(view.message)}</p>')
    if view.error:
        parts.append(f'<div class="warn" role="alert"><p>{esc(view.error)}</p></div>')
    if view.log_damage:
        parts.append(
            f'<div class="warn" role="alert"><p>{esc(W["the-custody-log-fails-its"])}</p>'
            f"<p><bdi>{esc(view.log_damage)}</bdi></p></div>"
        )
    parts.append(_summary(frame, view))
    parts.append(_case_forms(frame, sid, view.case, W["This testimony"]))
    parts.append(_answers(frame, manifest))
    parts.append(_attachments(frame, view))
    parts.append(_conversation(frame, view))
    parts.append(_reply_form(frame, view))
    parts.append(_forward_form(frame, view))
    parts.append(_history(frame, view))
    return page(frame, f"{W['Testimony']} {sid}", "\n".join(parts), f"case/{sid}")


def _summary(frame: Frame, view: CaseView) -> str:
    W = frame.words
    manifest = view.manifest
    consent = consent_label(W, view.consent)
    if view.consent_assumed:
        consent = W["no answer (counts as: %(meaning)s)"] % {"meaning": consent}
    rows = [
        (W["Received"], esc(manifest.received)),
        (W["Language"], f"<bdi>{esc(manifest.language)}</bdi>"),
        (W["Status"], esc(status_label(W, view.case.status or frame.settings.first_status))),
        (W["Consent"], esc(consent)),
    ]
    return (
        "<table>"
        + "".join(f'<tr><th scope="row">{esc(k)}</th><td>{v}</td></tr>' for k, v in rows)
        + "</table>"
    )


def _case_forms(frame: Frame, key: str, case: Case, heading: str) -> str:
    W = frame.words
    action = frame.url("change")
    ident = "t" if key.startswith("thread:") else "s"
    status = case.status or frame.settings.first_status
    options = "".join(
        f'<option value="{esc(s)}"{" selected" if s == status else ""}>'
        f"{esc(status_label(W, s))}</option>"
        for s in frame.settings.statuses
    )
    tags = "".join(
        f'<li><span class="tag"><bdi>{esc(tag)}</bdi></span> '
        f'<form class="inline" method="post" action="{esc(action)}">{frame.token()}'
        f'<input type="hidden" name="key" value="{esc(key)}">'
        f'<input type="hidden" name="change" value="untag">'
        f'<input type="hidden" name="value" value="{esc(tag)}">'
        f'<button type="submit">{esc(W["Remove tag %(tag)s"] % {"tag": tag})}</button></form></li>'
        for tag in sorted(case.tags)
    )
    notes = "".join(
        f'<li><p class="note">{esc(n.time)} · <bdi>{esc(n.reviewer)}</bdi></p>'
        f'<div class="text" dir="auto">{esc(n.text)}</div></li>'
        for n in case.notes
    )
    hidden = f'{frame.token()}<input type="hidden" name="key" value="{esc(key)}">'
    return f"""<section aria-labelledby="work-{ident}"><h2 id="work-{ident}">{esc(heading)}</h2>
<form method="post" action="{esc(action)}">{hidden}
<input type="hidden" name="change" value="status">
<label for="status-{ident}">{esc(W["Status"])}</label>
<select id="status-{ident}" name="value">{options}</select>
<button type="submit">{esc(W["Set status"])}</button></form>
<h3>{esc(W["Tags"])}</h3><ul>{tags or f"<li>{esc(W['No tags yet.'])}</li>"}</ul>
<form method="post" action="{esc(action)}">{hidden}<input type="hidden" name="change" value="tag">
<label for="tag-{ident}">{esc(W["New tag"])}</label>
<input type="text" id="tag-{ident}" name="value" maxlength="40" required>
<button type="submit">{esc(W["Add tag"])}</button></form>
<h3>{esc(W["Notes"])}</h3><ul>{notes or f"<li>{esc(W['No notes yet.'])}</li>"}</ul>
<form class="stack" method="post" action="{esc(action)}">{hidden}
<input type="hidden" name="change" value="note">
<label for="note-{ident}">{esc(W["new-note-recorded-with-your"])}</label>
<textarea id="note-{ident}" name="value" rows="3" required></textarea>
<button type="submit">{esc(W["Save note"])}</button></form></section>"""


def _answers(frame: Frame, manifest: Manifest) -> str:
    W = frame.words
    lang = f' lang="{esc(_lang(manifest.language))}"' if _lang(manifest.language) else ""
    parts = [
        '<section aria-labelledby="answers">'
        f'<h2 id="answers">{esc(W["Testimony and answers"])}</h2>'
    ]
    sealed: SealedQuestionnaire | None = manifest.questionnaire
    asked: set[str] = set()
    if sealed is not None:
        parts.append(f'<p class="note">{esc(W["each-question-is-shown-as"])}</p>')
        for question in sealed.questions:
            asked.add(question.id)
            parts.append(
                f'<h3><span dir="auto"{lang}>{esc(question.label)}</span> '
                f'<span class="note">(<bdi>{esc(question.label_en)}</bdi>; '
                f"<code>{esc(question.id)}</code>)</span></h3>"
            )
            value = manifest.fields.get(question.id)
            if question.type == "files":
                parts.append(f'<p class="note">{esc(W["See the attachments below."])}</p>')
            elif not value:
                parts.append(f'<p class="note">{esc(W["No answer."])}</p>')
            elif question.choices:
                parts.append(
                    f'<p><span dir="auto"{lang}>{esc(question.answer_text(value))}</span> '
                    f'<span class="note">(<bdi>{esc(question.answer_text(value, english=True))}'
                    f"</bdi>)</span></p>"
                )
            else:
                parts.append(f'<div class="text" dir="auto"{lang}>{esc(value)}</div>')
    for name, value in sorted(manifest.fields.items(), key=lambda i: (i[0] != "testimony", i[0])):
        if name in asked:
            continue
        parts.append(
            f'<h3><bdi>{esc(name)}</bdi></h3><div class="text" dir="auto"{lang}>{esc(value)}</div>'
        )
    parts.append("</section>")
    return "\n".join(parts)


def _attachments(frame: Frame, view: CaseView) -> str:
    W = frame.words
    parts = [
        '<section aria-labelledby="files">'
        f'<h2 id="files">{esc(W["Attachments"])} ({len(view.attachments)})</h2>'
    ]
    if not view.attachments:
        parts.append(f"<p>{esc(W['No attachments.'])}</p></section>")
        return "\n".join(parts)
    parts.append(
        f'<table><thead><tr><th scope="col">{esc(W["File"])}</th>'
        f'<th scope="col">{esc(W["Name as sent"])}</th><th scope="col">{esc(W["Type"])}</th>'
        f'<th scope="col">{esc(W["Size"])}</th><th scope="col">SHA-256</th>'
        f'<th scope="col">{esc(W["Integrity"])}</th></tr></thead><tbody>'
    )
    for item in view.attachments:
        entry = item.entry
        if (
            entry.view in (inert.IMAGE, inert.AUDIO, inert.VIDEO)
            and inert.is_linkable(entry.file, entry.view)
            and item.verified_now
        ):
            href = frame.url(f"file/{view.submission}/{item.number}")
            shown = f'<a href="{esc(href)}"><bdi>{esc(entry.file)}</bdi></a>'
        else:
            shown = (
                f'<bdi>{esc(entry.file)}</bdi> <span class="note">'
                f"({esc(W['not-linked-not-a-type'])})</span>"
            )
        state = (
            f'<span class="ok">{esc(W["SHA-256 verified now"])}</span>'
            if item.verified_now
            else f'<span class="bad">{esc(W["changed-since-opening-do-not"])}</span>'
        )
        parts.append(
            f"<tr><td>{shown}</td><td><bdi>{esc_name(entry.name)}</bdi></td>"
            f"<td><bdi>{esc(entry.type)}</bdi></td><td>{esc(human_size(entry.size))}</td>"
            f'<td class="hash">{esc(entry.sha256)}</td><td>{state}</td></tr>'
        )
        shown = ""
        if item.text is not None:
            shown = f'<div class="text" dir="auto">{esc(item.text)}</div>'
        parts.append(f'<tr><td colspan="6">{shown}{_metadata(frame, item)}</td></tr>')
    parts.append("</tbody></table></section>")
    return "\n".join(parts)


def _metadata(frame: Frame, item: AttachmentView) -> str:
    W = frame.words
    if item.metadata_error is not None:
        return (
            f'<p class="note">{esc(W["Metadata could not be read:"])} '
            f"<bdi>{esc(item.metadata_error)}</bdi></p>"
        )
    if not item.metadata:
        return f'<p class="note">{esc(W["no-identifying-metadata-found-in"])}</p>'
    rows = "".join(
        f"<li><code>{esc(f.tag)}</code>: <bdi>{esc_name(f.value)}</bdi></li>" for f in item.metadata
    )
    return (
        f'<div class="warn"><p><strong>{esc(W["warning-this-file-holds-metadata"])}</strong> '
        f"{esc(W['forward-it-only-as-a'])}</p><ul>{rows}</ul></div>"
    )


def _conversation(frame: Frame, view: CaseView) -> str:
    W = frame.words
    if view.manifest.reply_to is None and len(view.conversation) <= 1:
        return ""
    items = []
    for item in view.conversation:
        if item.reply is not None:
            items.append(
                f"<li><p>{esc(item.day)} · <strong>{esc(W['Reply sent'])}</strong></p>"
                f'<div class="text" dir="auto">{esc(item.reply.message)}</div></li>'
            )
        elif item.submission == view.submission:
            items.append(
                f"<li><p>{esc(item.day)} · <strong>{esc(W['This testimony'])}</strong></p></li>"
            )
        elif item.submission is not None:
            items.append(
                f'<li><p>{esc(item.day)} · <a href="{esc(frame.url("case/" + item.submission))}">'
                f"{esc(W['Testimony'])} <code>{esc(item.submission)}</code></a></p>"
                f'<p class="preview" dir="auto">{esc(item.preview)}</p></li>'
            )
    thread = view.manifest.thread
    forms = ""
    if view.thread_case is not None:
        forms = _case_forms(frame, thread_key(thread), view.thread_case, W["This conversation"])
    return (
        '<section aria-labelledby="conversation">'
        f'<h2 id="conversation">{esc(W["The whole conversation"])}</h2>'
        f'<p><a href="{esc(frame.url(thread=thread))}">{esc(W["List this conversation"])}</a></p>'
        f"<ol>{''.join(items)}</ol>{forms}</section>"
    )


def _reply_form(frame: Frame, view: CaseView) -> str:
    W = frame.words
    if view.manifest.reply_to is None:
        return (
            f'<section aria-labelledby="reply"><h2 id="reply">{esc(W["Reply to the witness"])}</h2>'
            f"<p>{esc(W['this-testimony-was-sent-before'])}</p></section>"
        )
    return f"""<section aria-labelledby="reply"><h2 id="reply">{esc(W["Reply to the witness"])}</h2>
<p class="note">{esc(W["the-reply-is-encrypted-to"])}</p>
<form class="stack" method="post"
 action="{esc(frame.url("reply/" + view.submission))}">{frame.token()}
<label for="reply-text">{esc(W["Reply"])}</label>
<textarea id="reply-text" name="message" rows="6" required></textarea>
<button type="submit">{esc(W["Encrypt and put in the outbox"])}</button></form></section>"""


def _forward_form(frame: Frame, view: CaseView) -> str:
    W = frame.words
    partners = "".join(
        f'<option value="{esc(p.key)}">{esc(p.name)}</option>' for p in frame.settings.partners
    )
    partner_field = (
        f'<label for="partner">{esc(W["Partner"])}</label><select id="partner" name="partner">'
        f'<option value="">{esc(W["(type a key below)"])}</option>{partners}</select>'
        if partners
        else ""
    )
    omit = ""
    if view.identifying:
        boxes = "".join(
            f'<li><input type="checkbox" id="omit-{esc(q)}" name="omit" value="{esc(q)}" checked>'
            f' <label for="omit-{esc(q)}"><code>{esc(q)}</code></label></li>'
            for q in view.identifying
        )
        omit = (
            f"<fieldset><legend>{esc(W['Identifying answers to leave out'])}</legend>"
            f"<ul>{boxes}</ul></fieldset>"
        )
    checked = " checked" if view.consent == "anonymous" else ""
    clean = (
        f'<p><input type="checkbox" id="clean" name="clean" value="yes"{checked}> '
        f'<label for="clean">{esc(W["add-copies-cleaned-of-metadata"])}</label></p>'
        if view.attachments
        else ""
    )
    allowed = view.consent == "yes" or (view.consent == "anonymous")
    rule = (
        W["The witness’s consent allows forwarding."]
        if view.consent == "yes"
        else W["the-witness-allowed-forwarding-only"]
        if view.consent == "anonymous"
        else W["the-witness-s-consent-does"]
    )
    consent = consent_label(W, view.consent)
    return f"""<section aria-labelledby="forward">
<h2 id="forward">{esc(W["Forward to a legal partner"])}</h2>
<p class="{"note" if allowed else "bad"}">{esc(W["Consent:"])} {esc(consent)}. {esc(rule)}</p>
<form class="stack" method="post"
 action="{esc(frame.url("forward/" + view.submission))}">{frame.token()}
{partner_field}
<label for="recipient">{esc(W["partner-s-age-public-key"])}</label>
<input type="text" id="recipient" name="recipient" size="70" autocomplete="off">
{omit}
<label for="override">{esc(W["reason-for-sending-without-that"])}</label>
<input type="text" id="override" name="override" size="70">
{clean}
<button type="submit">{esc(W["Make the encrypted bundle"])}</button></form></section>"""


def _history(frame: Frame, view: CaseView) -> str:
    W = frame.words
    rows = []
    for line in view.history:
        entry = line.entry
        details = entry.details
        what = entry.action
        if entry.action == "case":
            what = f"{details.get('change')}: {details.get('value')}"
        elif entry.action == "forward":
            what = f"forward → {details.get('recipient', '')}"
        rows.append(
            f"<tr><td>{entry.seq}</td><td>{esc(entry.time)}</td><td><bdi>{esc(entry.reviewer)}</bdi></td>"
            f'<td><span dir="auto">{esc(entry.action)}</span></td>'
            f'<td><div class="preview" dir="auto">{esc(what[:400])}</div></td>'
            f'<td class="hash">{esc(line.hash[:16])}</td></tr>'
        )
    state = (
        f'<p class="bad">{esc(W["The custody log fails its check."])}</p>'
        if view.log_damage
        else f'<p class="ok">{esc(W["hash-chain-of-the-custody"])} '
        f'<span class="hash">{esc(view.log_head)}</span></p>'
    )
    return (
        '<section aria-labelledby="history">'
        f'<h2 id="history">{esc(W["Custody history"])}</h2>{state}'
        f'<table><thead><tr><th scope="col">#</th><th scope="col">{esc(W["When (UTC)"])}</th>'
        f'<th scope="col">{esc(W["Who"])}</th><th scope="col">{esc(W["Action"])}</th>'
        f'<th scope="col">{esc(W["What"])}</th>'
        f'<th scope="col">{esc(W["Line hash"])}</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def error_page(frame: Frame, title: str, message: str) -> str:
    return page(frame, title, f"<h1>{esc(title)}</h1><p>{esc(message)}</p>")


def quote_id(value: str) -> str:
    return quote(value, safe="")
