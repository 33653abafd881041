"""`testimony-review table`: the answers of every opened submission, one row each.

For import into documentation databases (HURIDOCS Uwazi, spreadsheets).
CSV is written as UTF-8 with a byte-order mark, which spreadsheet programs
need to show Korean and Chinese instead of mojibake; JSON Lines keeps every
value exactly. A manifest changed after it was opened is refused, so the
table only ever holds what was decrypted and verified.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portal.core.layout import is_valid_id
from portal.core.manifest import Manifest
from portal.review.consent import KnownQuestionnaires, default_known, resolve_same
from portal.review.outcomes import Changed
from portal.review.recheck import read_opened_manifest
from portal.review.record import RecordError, read_record
from portal.review.report import write_atomically
from portal.review.sealed import SealedIndex

FORMATS = ("csv", "jsonl")
FIXED_COLUMNS = (
    "submission",
    "received",
    "language",
    "questionnaire_id",
    "questionnaire_version",
    "questionnaire_sha256",
    "questionnaire_known",
    "consent_effective",
)
TAIL_COLUMNS = ("attachments",)
# A cell a spreadsheet would run as a formula (`=HYPERLINK(...)`, `@SUM`, a
# DDE call) is written with a leading apostrophe in CSV: the witness's text
# is untrusted. JSON Lines keeps the exact value.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class TableError(Exception):
    """The table cannot be written; the message names the submission or file."""


class TableTampered(TableError):
    """An opened submission is not what was decrypted and logged."""


@dataclass(frozen=True)
class Row:
    manifest: Manifest
    # The consent `forward` would apply: a follow-up's "the same as before"
    # resolved from the other opened submissions of its conversation.
    consent: str = ""
    # The questionnaires the organisation knows; the shipped default if None.
    known: KnownQuestionnaires | None = None

    def answers(self) -> dict[str, str]:
        return dict(self.manifest.fields)

    def as_json(self) -> dict[str, Any]:
        m = self.manifest
        sealed = m.questionnaire
        return {
            "submission": m.id,
            "received": m.received,
            "language": m.language,
            "questionnaire": (
                {
                    "id": sealed.id,
                    "version": sealed.version,
                    "sha256": sealed.sha256,
                    # "yes", or "unknown"/"relabelled": then consent counts as ask.
                    "known": (self.known or default_known()).vouch(m),
                }
                if sealed is not None
                else None
            ),
            "consent_effective": self.consent,
            "answers": self.answers(),
            "attachments": [
                {"name": a.name, "type": a.type, "size": a.size, "sha256": a.sha256}
                for a in m.attachments
            ],
        }


def read_rows(
    from_dir: Path,
    sealed: SealedIndex | None = None,
    known: KnownQuestionnaires | None = None,
) -> list[Row]:
    """Every submission `open` wrote under `from_dir`, oldest first.

    With `sealed` (the command line always gives it), each is held to what
    the custody log recorded when it was opened.

    Raises:
        TableTampered: a manifest or record was changed after opening.
        TableError: nothing opened there.
    """
    if not from_dir.is_dir():
        raise TableError(f"{from_dir} is not a folder; give the folder written by `open`")
    rows = []
    for folder in sorted(from_dir.iterdir()):
        if not is_valid_id(folder.name) or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            record = read_record(folder)
            if record is None:
                continue
            _data, manifest = read_opened_manifest(folder, record)
            if sealed is not None:
                sealed.check(folder, record, manifest)
        except RecordError as exc:
            raise TableError(f"{exc}; open the submission again from the ciphertext") from None
        except Changed as exc:
            raise TableTampered(f"{exc}; open the submission again from the ciphertext") from None
        rows.append(Row(manifest, known=known))
    if not rows:
        raise TableError(f"no opened submissions in {from_dir}; run `testimony-review open` first")
    manifests = [row.manifest for row in rows]
    rows = [
        Row(row.manifest, resolve_same(row.manifest, manifests, known).consent.value, known)
        for row in rows
    ]
    rows.sort(key=lambda row: (row.manifest.received, row.manifest.id))
    return rows


def answer_columns(rows: Sequence[Row]) -> list[str]:
    """Question ids in questionnaire order (first seen first), then any other field names."""
    columns: list[str] = []
    for row in rows:
        sealed = row.manifest.questionnaire
        for question in sealed.questions if sealed is not None else ():
            if question.type not in ("files", "notice") and question.id not in columns:
                columns.append(question.id)
    others = sorted({name for row in rows for name in row.manifest.fields} - set(columns))
    return columns + others


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def render_csv(rows: Sequence[Row]) -> str:
    answers = answer_columns(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    # Field names come from the manifest too: a crafted one can name a
    # field `=HYPERLINK(...)`, so the header row is defused like the cells.
    writer.writerow([_cell(c) for c in (*FIXED_COLUMNS, *answers, *TAIL_COLUMNS)])
    for row in rows:
        data = row.as_json()
        sealed = data["questionnaire"] or {}
        fixed = [
            data["submission"],
            data["received"],
            data["language"],
            sealed.get("id", ""),
            sealed.get("version", ""),
            sealed.get("sha256", ""),
            sealed.get("known", ""),
            data["consent_effective"],
        ]
        files = "; ".join(
            f"{a['name']} ({a['size']} bytes, sha256 {a['sha256']})" for a in data["attachments"]
        )
        writer.writerow(
            [_cell(v) for v in (*fixed, *(data["answers"].get(c, "") for c in answers), files)]
        )
    # The byte-order mark tells spreadsheet programs the file is UTF-8.
    return "\ufeff" + out.getvalue()


def render_jsonl(rows: Sequence[Row]) -> str:
    return "".join(json.dumps(row.as_json(), ensure_ascii=False) + "\n" for row in rows)


def write_table(
    from_dir: Path,
    out: Path,
    fmt: str,
    *,
    sealed: SealedIndex | None = None,
    known: KnownQuestionnaires | None = None,
) -> int:
    """Write the table; returns the number of rows.

    Raises:
        TableError: see `read_rows`.
        OSError: `out` cannot be written.
    """
    rows = read_rows(from_dir, sealed, known)
    text = render_csv(rows) if fmt == "csv" else render_jsonl(rows)
    write_atomically(out, text)
    return len(rows)
