"""The decrypted manifest (`testimony.age`): strict parsing of untrusted JSON.

Everything in it came from a witness's browser or from a server that may
have been tampered with, so every member is checked for type and shape
before any of it is used to name a file or to check a hash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from portal.age import KeyFormatError, X25519Recipient
from portal.conversation import thread_id, thread_of_one

# The same string as portal.intake.MANIFEST_FORMAT (a test keeps them equal);
# the reviewer tool does not import the server's intake code. Version 2 adds
# the conversation's reply recipient and the sealed questionnaire; version 1
# manifests are still read.
MANIFEST_FORMAT = "testimony-portal/submission/2"
MANIFEST_FORMATS = ("testimony-portal/submission/1", MANIFEST_FORMAT)
_PATH_RE = re.compile(r"files/[1-9][0-9]{0,5}\.age")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# No honest manifest holds a number longer than a file size. Python refuses
# to convert integers over 4,300 digits with a ValueError of its own; this
# limit turns every oversized number into one clear ManifestError first.
MAX_INTEGER_DIGITS = 20
# The server writes values three levels deep (an attachment's members).
# Anything much deeper is not a manifest; the parser's own recursion limit
# stops absurd nesting before this check sees it.
MAX_DEPTH = 8


class ManifestError(Exception):
    """The manifest is not a valid submission manifest (damaged or tampered)."""


@dataclass(frozen=True)
class AttachmentEntry:
    path: str
    name: str
    type: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    id: str
    received: str
    language: str
    fields: dict[str, str]
    attachments: tuple[AttachmentEntry, ...]
    document: dict[str, Any]
    # The witness's own age recipient (from their receipt), and the opaque
    # thread shared by every submission made with that receipt.
    reply_to: str | None = None
    thread: str = ""

    questionnaire: SealedQuestionnaire | None = None

    @property
    def testimony(self) -> str:
        return self.fields.get("testimony", "")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ManifestError(message)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values under one key would let two readers of the same manifest
    # see different submissions.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ManifestError(f"manifest has the key {key[:80]!r} twice")
        result[key] = value
    return result


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ManifestError(f"manifest holds a number of {len(text)} digits")
    return int(text)


def _parse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's parser accepts them by default.
    raise ManifestError(f"manifest holds {name}, which is not JSON")


def _check_values(document: Any) -> None:
    """Every key and string must be encodable text, and nesting must stay shallow.

    JSON escapes can spell a lone surrogate such as "\\ud800", which Python
    keeps in a str but which cannot be written to a UTF-8 page or file name
    later. The walk is iterative, so it cannot exhaust the stack itself.
    """
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ManifestError(f"manifest is nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, str):
            texts: list[str] = [item]
        elif isinstance(item, dict):
            stack.extend((value, depth + 1) for value in item.values())
            texts = list(item)
        elif isinstance(item, list):
            stack.extend((value, depth + 1) for value in item)
            continue
        else:
            continue
        # A search, not an encode: a 60 MB testimony is not copied to check it.
        if any(_SURROGATE_RE.search(text) for text in texts):
            raise ManifestError(
                "manifest holds a string that is not valid Unicode (a lone surrogate)"
            )


def parse_manifest(plaintext: bytes) -> Manifest:
    """Parse and check a manifest.

    The JSON object may be followed by whitespace (a writer may pad the
    plaintext with spaces to hide its length), and by nothing else.

    Raises:
        ManifestError: not UTF-8 JSON of the expected format and shape.
    """
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError("manifest is not UTF-8") from exc
    return parse_manifest_text(text)


def parse_manifest_text(text: str) -> Manifest:
    """`parse_manifest` for a manifest already decoded from UTF-8.

    Raises:
        ManifestError: not JSON of the expected format and shape.
    """
    try:
        document = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_int=_parse_int,
            parse_constant=_parse_constant,
        )
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"manifest is not JSON ({str(exc)[:120]})") from exc
    except ValueError as exc:
        # Anything else the parser raises for a malformed number.
        raise ManifestError(f"manifest holds a malformed value ({str(exc)[:120]})") from exc
    _check_values(document)
    _require(isinstance(document, dict), "manifest is not a JSON object")
    _require(
        document.get("format") in MANIFEST_FORMATS,
        f"manifest format is {str(document.get('format'))[:80]!r}, expected one of "
        f"{', '.join(map(repr, MANIFEST_FORMATS))}",
    )
    for key in ("id", "received", "language"):
        _require(isinstance(document.get(key), str), f"manifest member {key!r} is not a string")
    fields = document.get("fields")
    _require(isinstance(fields, dict), "manifest member 'fields' is not an object")
    _require(
        all(isinstance(value, str) for value in fields.values()),
        "manifest fields must all be strings",
    )
    raw_attachments = document.get("attachments")
    _require(isinstance(raw_attachments, list), "manifest member 'attachments' is not a list")
    attachments = []
    seen_paths: set[str] = set()
    for index, item in enumerate(raw_attachments, start=1):
        where = f"manifest attachment {index}"
        _require(isinstance(item, dict), f"{where} is not an object")
        path, name, kind = item.get("path"), item.get("name"), item.get("type")
        size, digest = item.get("size"), item.get("sha256")
        _require(isinstance(path, str) and bool(_PATH_RE.fullmatch(path)), f"{where}: bad path")
        _require(path not in seen_paths, f"{where}: path {path} is listed twice")
        seen_paths.add(path)
        _require(isinstance(name, str), f"{where}: name is not a string")
        _require(isinstance(kind, str), f"{where}: type is not a string")
        _require(
            isinstance(size, int) and not isinstance(size, bool) and size >= 0,
            f"{where}: size is not a non-negative integer",
        )
        _require(
            isinstance(digest, str) and bool(_SHA256_RE.fullmatch(digest)),
            f"{where}: sha256 is not 64 lowercase hex digits",
        )
        attachments.append(AttachmentEntry(path, name, kind, size, digest))
    questionnaire = None
    if "questionnaire" in document:
        _require(
            document["format"] != MANIFEST_FORMATS[0],
            "a version 1 manifest cannot hold a questionnaire",
        )
        questionnaire = parse_sealed_questionnaire(document["questionnaire"])
    reply_to, thread = _conversation(document)
    return Manifest(
        reply_to=reply_to,
        thread=thread,
        id=document["id"],
        received=document["received"],
        language=document["language"],
        fields=dict(fields),
        attachments=tuple(attachments),
        document=document,
        questionnaire=questionnaire,
    )


@dataclass(frozen=True)
class SealedChoice:
    id: str
    label: str
    label_en: str


@dataclass(frozen=True)
class SealedQuestion:
    """A question exactly as the witness saw it, sealed in the manifest."""

    id: str
    type: str
    required: bool
    identifying: bool
    label: str
    label_en: str
    help: str
    choices: tuple[SealedChoice, ...]

    def answer_text(self, value: str, *, english: bool = False) -> str:
        """A stored answer in words: choice ids become their labels."""
        if not self.choices:
            return value
        labels = {c.id: (c.label_en if english else c.label) for c in self.choices}
        return "; ".join(labels.get(part, part) for part in value.split(","))


@dataclass(frozen=True)
class SealedQuestionnaire:
    id: str
    version: str
    sha256: str
    language: str
    questions: tuple[SealedQuestion, ...]

    @property
    def identifying(self) -> tuple[str, ...]:
        return tuple(q.id for q in self.questions if q.identifying)


def _string(item: dict[str, Any], key: str, where: str, *, optional: bool = False) -> str:
    value = item.get(key, "" if optional else None)
    _require(isinstance(value, str), f"{where}: {key!r} is not a string")
    return str(value)


def parse_sealed_questionnaire(raw: Any) -> SealedQuestionnaire:
    """Check the `questionnaire` member of a version 2 manifest.

    Raises:
        ManifestError: a member is missing or of the wrong type.
    """
    where = "manifest questionnaire"
    _require(isinstance(raw, dict), f"{where} is not an object")
    _require(
        isinstance(raw.get("sha256"), str) and bool(_SHA256_RE.fullmatch(raw["sha256"])),
        f"{where}: sha256 is not 64 lowercase hex digits",
    )
    questions_raw = raw.get("questions")
    _require(isinstance(questions_raw, list), f"{where}: 'questions' is not a list")
    questions = []
    seen: set[str] = set()
    for index, item in enumerate(questions_raw, start=1):
        at = f"{where}, question {index}"
        _require(isinstance(item, dict), f"{at} is not an object")
        qid = _string(item, "id", at)
        _require(qid not in seen, f"{at}: id {qid[:80]!r} is listed twice")
        seen.add(qid)
        for flag in ("required", "identifying"):
            _require(isinstance(item.get(flag, False), bool), f"{at}: {flag!r} is not true/false")
        choices_raw = item.get("choices", [])
        _require(isinstance(choices_raw, list), f"{at}: 'choices' is not a list")
        choices = []
        for number, choice in enumerate(choices_raw, start=1):
            cat = f"{at}, choice {number}"
            _require(isinstance(choice, dict), f"{cat} is not an object")
            choices.append(
                SealedChoice(
                    _string(choice, "id", cat),
                    _string(choice, "label", cat),
                    _string(choice, "label_en", cat),
                )
            )
        questions.append(
            SealedQuestion(
                id=qid,
                type=_string(item, "type", at),
                required=item.get("required", False) is True,
                identifying=item.get("identifying", False) is True,
                label=_string(item, "label", at),
                label_en=_string(item, "label_en", at),
                help=_string(item, "help", at, optional=True),
                choices=tuple(choices),
            )
        )
    return SealedQuestionnaire(
        id=_string(raw, "id", where),
        version=_string(raw, "version", where),
        sha256=raw["sha256"],
        language=_string(raw, "language", where),
        questions=tuple(questions),
    )


def _conversation(document: dict[str, Any]) -> tuple[str | None, str]:
    """The reply recipient and thread, checked against each other.

    A manifest without a recipient (version 1) is a thread of its own.
    """
    reply_to = document.get("reply_to")
    if reply_to is None:
        _require("thread" not in document, "manifest has a thread but no reply recipient")
        return None, thread_of_one(str(document["id"]))
    _require(isinstance(reply_to, str), "manifest member 'reply_to' is not a string")
    _require(document["format"] != MANIFEST_FORMATS[0], "a version 1 manifest has no 'reply_to'")
    try:
        X25519Recipient.parse(reply_to)
    except KeyFormatError:
        raise ManifestError("manifest member 'reply_to' is not an X25519 age recipient") from None
    _require(
        document.get("thread") == thread_id(reply_to),
        "manifest member 'thread' does not belong to its reply recipient",
    )
    return reply_to, thread_id(reply_to)
