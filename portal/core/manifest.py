"""The submission manifest (`testimony.age`): its one writer and its strict parser.

The server writes the manifest last, encrypted, beside a submission's
attachments; the reviewer tool decrypts and parses it. Both sides import this
module (it needs neither Flask nor the server's intake code), so the format
strings, the attachment-path grammar, the size buckets and the typed
`Manifest` exist once. docs/FORMAT.md describes the format in words.

Version 1 is only read. Version 2 added the optional `reply_to` and
`thread` (issue 11) and the sealed `questionnaire` (issue 12). Version 3
adds `reply_key` (issue 25): a version 2 receipt's seed, salt and cost,
sealed instead of `reply_to` so that the server derives no key for a
submission (`portal.core.replykey`). The writer writes version 3 for a
manifest with a `reply_key` and version 2 otherwise (byte for byte as
before).

A `reply_to` is not secret, so since issue 21 it comes with `reply_proof`:
an XEdDSA signature (`portal.core.xeddsa`) by the witness's own key over the
rest of the manifest, made by the server while the witness is logged in. A
manifest whose `reply_to` has no proof is read as a conversation of its own
(it cannot join the witness's thread, and no reply goes to that recipient);
one with a proof that does not verify is refused.

Everything the parser reads came from a witness's browser or from a server
that may have been tampered with, so every member is checked for type and
shape before any of it is used to name a file or to check a hash.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any, ParamSpec

from portal.core import xeddsa
from portal.core.age import KeyFormatError, X25519Identity, X25519Recipient
from portal.core.conversation import thread_id, thread_of_one, thread_of_seed
from portal.core.layout import is_attachment_path, received_date
from portal.core.replykey import ReplyKey, ReplyKeyError

MANIFEST_FORMAT_V1 = "testimony-portal/submission/1"
MANIFEST_FORMAT = "testimony-portal/submission/2"
MANIFEST_FORMAT_V3 = "testimony-portal/submission/3"
# The formats the parser accepts; the writer writes the last two.
MANIFEST_FORMATS = (MANIFEST_FORMAT_V1, MANIFEST_FORMAT, MANIFEST_FORMAT_V3)
# The smallest size a manifest is padded to (issue 22). Every path through the
# default questionnaire (victim, witness, insider) and every follow-up, with
# answers of ordinary length, fits in it, so the ciphertext's size tells
# neither who the witness is nor whether it is a follow-up: the sealed texts
# of the insider's questions alone are about 9 KiB in Korean, a follow-up's
# 2 KiB, and 64 KiB leaves room for about 18,000 Korean characters of answers.
MANIFEST_MIN_BUCKET = 64 * 1024
# The members that lead to the witness (their reply recipient or what derives
# it, and their conversation): for the organisation's reviewers only. They
# never leave in a forward bundle, whatever the consent.
WITNESS_CHANNEL_MEMBERS = ("reply_to", "reply_key", "reply_proof", "thread")
# What a reply proof signs: this label, then the manifest without
# `reply_proof` in canonical JSON (sorted keys, no spaces, UTF-8).
REPLY_PROOF_LABEL = b"testimony-portal/reply-proof/1\x00"
P = ParamSpec("P")

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


@dataclass(frozen=True)
class Attachment:
    """One attachment as the manifest lists it: where its ciphertext is, and what it holds."""

    path: str
    name: str
    type: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SealedChoice:
    """One answer a choice question offered, in the witness's language and in English."""

    id: str
    label: str
    label_en: str

    def text(self, *, english: bool = False) -> str:
        return self.label_en if english else self.label


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
        labels = {c.id: c.text(english=english) for c in self.choices}
        return "; ".join(labels.get(part, part) for part in value.split(","))

    def to_json(self) -> dict[str, Any]:
        # The server leaves out an empty help text and an empty list of choices.
        item: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "required": self.required,
            "identifying": self.identifying,
            "label": self.label,
            "label_en": self.label_en,
        }
        if self.help:
            item["help"] = self.help
        if self.choices:
            item["choices"] = [
                {"id": c.id, "label": c.label, "label_en": c.label_en} for c in self.choices
            ]
        return item


@dataclass(frozen=True)
class SealedQuestionnaire:
    """The questionnaire's identity and the exact texts the witness was shown."""

    id: str
    version: str
    sha256: str
    language: str
    questions: tuple[SealedQuestion, ...]

    @property
    def identifying(self) -> tuple[str, ...]:
        return tuple(q.id for q in self.questions if q.identifying)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "sha256": self.sha256,
            "language": self.language,
            "questions": [question.to_json() for question in self.questions],
        }

    @cached_property
    def json_member(self) -> str:
        """`to_json()` as `encode_manifest` writes it one level down: made once per object.

        The same questions in the same language give the same text; the
        questionnaire keeps its sealed copies (`Questionnaire.sealed`), so
        a submission does not serialise them again.
        """
        text = json.dumps(self.to_json(), ensure_ascii=False, indent=1)
        # One level deeper: JSON strings hold no raw line break, so every
        # line break is between members, and each line gets one more space.
        return text.replace("\n", "\n ")

    @cached_property
    def json_member_bytes(self) -> bytes:
        """`json_member` in UTF-8, as `encode_manifest` puts it in place."""
        return self.json_member.encode("utf-8")


@dataclass(frozen=True)
class Manifest:
    """A submission manifest, typed.

    `document` is the JSON object as parsed (unknown members included), kept
    for the tools that show or re-serialise the manifest as it was; it takes
    no part in equality.
    """

    id: str
    received: str
    language: str
    fields: dict[str, str]
    attachments: tuple[Attachment, ...]
    # The witness's own age recipient (a version 1 receipt's), or what
    # derives it (a version 2 receipt's seed, salt and cost); and the opaque
    # thread shared by every submission made with that receipt.
    reply_to: str | None = None
    thread: str = ""
    reply_key: ReplyKey | None = None
    # An XEdDSA signature by `reply_to`'s key over the rest (base64), or None.
    reply_proof: str | None = None
    questionnaire: SealedQuestionnaire | None = None
    format: str = MANIFEST_FORMAT
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def testimony(self) -> str:
        return self.fields.get("testimony", "")

    @property
    def reply_proven(self) -> bool:
        """Whether the reply recipient is the witness's: a reply key, or a proven reply_to.

        The parser refuses a proof that does not verify, so a proof here is
        a good one; a manifest built in memory is proven by its writer.
        """
        return self.reply_key is not None or (
            self.reply_to is not None and self.reply_proof is not None
        )

    def reply_recipient(self) -> str | None:
        """The witness's age recipient, or None when there is none or it is not proven.

        For a version 2 receipt this runs argon2id (offline, on the reviewer's
        machine): tens of milliseconds.
        """
        if self.reply_key is not None:
            return self.reply_key.recipient()
        return self.reply_to if self.reply_proven else None

    def to_json(self) -> dict[str, Any]:
        """The JSON object the server writes, members in their documented order."""
        document = self._members_before_questionnaire()
        if self.questionnaire is not None:
            document["questionnaire"] = self.questionnaire.to_json()
        return document

    def _members_before_questionnaire(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": self.format,
            "id": self.id,
            "received": self.received,
            "language": self.language,
            "fields": dict(self.fields),
            "attachments": [asdict(attachment) for attachment in self.attachments],
        }
        if self.reply_to is not None:
            document["reply_to"] = self.reply_to
            document["thread"] = thread_id(self.reply_to)
            if self.reply_proof is not None:
                document["reply_proof"] = self.reply_proof
        elif self.reply_key is not None:
            document["reply_key"] = self.reply_key.to_json()
            document["thread"] = self.thread
        return document


# ---------------------------------------------------------------- writer


def new_manifest(
    submission_id: str,
    fields: Mapping[str, str],
    language: str,
    attachments: Iterable[Attachment],
    *,
    received: str | None = None,
    reply_to: str | None = None,
    reply_key: ReplyKey | None = None,
    questionnaire: SealedQuestionnaire | None = None,
    reply_identity: X25519Identity | None = None,
) -> Manifest:
    """A manifest for a submission being committed (version 3 with a reply key, else 2).

    `reply_identity` (a version 1 receipt's identity: its recipient is
    sealed as `reply_to`, with a proof made with it) or `reply_key` (a
    version 2 receipt's), never both. A bare `reply_to` is sealed without a
    proof: the reviewer's tools then treat it as a conversation of its own.

    `questionnaire` is what `Questionnaire.sealed()` returns: the exact
    questions the witness saw, sealed with their answers.
    """
    if reply_identity is not None:
        reply_to = str(reply_identity.recipient)
    if reply_to is not None and reply_key is not None:
        raise ManifestError("a manifest seals a reply recipient or a reply key, not both")
    if reply_key is not None:
        thread = thread_of_seed(reply_key.seed)
    elif reply_to is not None and reply_identity is not None:
        thread = thread_id(reply_to)
    else:
        thread = thread_of_one(submission_id)
    manifest = Manifest(
        id=submission_id,
        received=received or received_date(),
        language=language,
        fields=dict(fields),
        attachments=tuple(attachments),
        reply_to=reply_to,
        reply_key=reply_key,
        thread=thread,
        questionnaire=questionnaire,
        format=MANIFEST_FORMAT_V3 if reply_key is not None else MANIFEST_FORMAT,
    )
    if reply_identity is None:
        return manifest
    signature = xeddsa.sign(reply_identity, reply_proof_message(manifest.to_json()))
    return replace(manifest, reply_proof=base64.b64encode(signature).decode("ascii"))


def reply_proof_message(document: Mapping[str, Any]) -> bytes:
    """What a reply proof signs: the label, then the manifest without it, canonical."""
    rest = {k: v for k, v in document.items() if k != "reply_proof"}
    return REPLY_PROOF_LABEL + json.dumps(
        rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest's plaintext: UTF-8 JSON, padded with spaces to its size bucket."""
    head = indented_json(manifest._members_before_questionnaire()).encode("utf-8")
    sealed = manifest.questionnaire
    if sealed is None:
        pieces = [head]
    else:
        # The questionnaire is the last member and most of the bytes: its
        # text is made once per sealed questionnaire and put in place, the
        # same bytes `json.dumps` of the whole document gives (tested).
        # `head` ends with "\n}".
        pieces = [head[:-2], b',\n "questionnaire": ', sealed.json_member_bytes, b"\n}"]
    length = sum(map(len, pieces))
    # Trailing spaces after the JSON object (JSON readers and `jq` skip
    # them) fill the plaintext to its size bucket, so the ciphertext size
    # says only which bucket the testimony's length falls in.
    pieces.append(b" " * (padded_size(length) - length))
    return b"".join(pieces)


_encode_string = json.encoder.encode_basestring  # the escaping of `ensure_ascii=False`


def indented_json(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=False, indent=1)`, for the manifest's members.

    Python's `json` leaves its C encoder for a pure-Python one as soon as it
    indents; writing a manifest's members that way took about 3 % of the
    server's time for a text submission (docs/BENCHMARKS.md, issue 25 round
    6). Strings are escaped by `json`'s own C
    function, and the layout is the one `json.dumps` gives (tested against
    it). A value of any other kind than str, int, bool, None, a list or a
    dict with string keys is left to `json.dumps` itself.
    """
    try:
        return _indented(value, "\n")
    except _NotPlain:
        return json.dumps(value, ensure_ascii=False, indent=1)


class _NotPlain(Exception):
    pass


def _indented(value: Any, newline: str) -> str:
    if isinstance(value, str):
        return _encode_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    inner = newline + " "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotPlain
            items.append(_encode_string(key) + ": " + _indented(item, inner))
        return "{" + inner + ("," + inner).join(items) + newline + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return (
            "["
            + inner
            + ("," + inner).join(_indented(item, inner) for item in value)
            + newline
            + "]"
        )
    raise _NotPlain


def _returning_plaintext(make: Callable[P, Manifest]) -> Callable[P, bytes]:
    def build(*args: P.args, **kwargs: P.kwargs) -> bytes:
        return encode_manifest(make(*args, **kwargs))

    return build


# `encode_manifest(new_manifest(...))`, with new_manifest's arguments: the
# plaintext the server encrypts, and what tests write as the server would.
build_manifest = _returning_plaintext(new_manifest)


def padded_size(length: int) -> int:
    """The manifest size bucket for `length` bytes: 64 KiB, then each power of two.

    The first bucket holds the sealed questions of any path with answers of
    ordinary length (see MANIFEST_MIN_BUCKET), so these all look alike and
    a short testimony costs 64 KiB on disk; above that, the size reveals at
    most the power of two.
    """
    bucket = MANIFEST_MIN_BUCKET
    while bucket < length:
        bucket *= 2
    return bucket


# ---------------------------------------------------------------- parser


class ManifestError(Exception):
    """The manifest is not a valid submission manifest (damaged or tampered)."""


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
    questionnaire = None
    if "questionnaire" in document:
        _require(
            document["format"] != MANIFEST_FORMAT_V1,
            "a version 1 manifest cannot hold a questionnaire",
        )
        questionnaire = parse_sealed_questionnaire(document["questionnaire"])
    reply_to, reply_key, thread = _conversation(document)
    proof = _reply_proof(document, reply_to)
    if reply_to is not None and proof is None:
        # Anyone can name a recipient: without the witness's proof this
        # submission does not join their conversation.
        thread = thread_of_one(str(document["id"]))
    return Manifest(
        reply_to=reply_to,
        reply_key=reply_key,
        reply_proof=proof,
        thread=thread,
        id=document["id"],
        received=document["received"],
        language=document["language"],
        fields=dict(fields),
        attachments=_attachments(document.get("attachments")),
        questionnaire=questionnaire,
        format=document["format"],
        document=document,
    )


def _attachments(raw: Any) -> tuple[Attachment, ...]:
    _require(isinstance(raw, list), "manifest member 'attachments' is not a list")
    attachments = []
    seen_paths: set[str] = set()
    for index, item in enumerate(raw, start=1):
        where = f"manifest attachment {index}"
        _require(isinstance(item, dict), f"{where} is not an object")
        path, name, kind = item.get("path"), item.get("name"), item.get("type")
        size, digest = item.get("size"), item.get("sha256")
        _require(isinstance(path, str) and is_attachment_path(path), f"{where}: bad path")
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
        attachments.append(Attachment(path, name, kind, size, digest))
    return tuple(attachments)


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


def _reply_proof(document: dict[str, Any], reply_to: str | None) -> str | None:
    """The manifest's reply proof, checked; None when it has none.

    Raises:
        ManifestError: a proof without a reply_to, or one that does not verify.
    """
    proof = document.get("reply_proof")
    if proof is None:
        return None
    _require(reply_to is not None, "manifest has a 'reply_proof' but no 'reply_to'")
    _require(isinstance(proof, str), "manifest member 'reply_proof' is not a string")
    try:
        signature = base64.b64decode(proof.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ManifestError("manifest member 'reply_proof' is not base64") from None
    try:
        xeddsa.verify(
            X25519Recipient.parse(str(reply_to)), reply_proof_message(document), signature
        )
    except xeddsa.XEdDSAError:
        raise ManifestError(
            "manifest member 'reply_proof' is not the witness's signature of this manifest: "
            "it was forged or the manifest altered"
        ) from None
    return str(proof)


def _conversation(document: dict[str, Any]) -> tuple[str | None, ReplyKey | None, str]:
    """The reply recipient or reply key, and the thread, checked against each other.

    A manifest with neither (version 1, or no receipt) is a thread of its own.
    """
    reply_to = document.get("reply_to")
    if "reply_key" in document:
        _require(reply_to is None, "manifest has both 'reply_to' and 'reply_key'")
        _require(
            document["format"] == MANIFEST_FORMAT_V3, "only a version 3 manifest has 'reply_key'"
        )
        try:
            reply_key = ReplyKey.from_json(document["reply_key"])
        except ReplyKeyError as exc:
            raise ManifestError(f"manifest member {exc}") from None
        _require(
            document.get("thread") == thread_of_seed(reply_key.seed),
            "manifest member 'thread' does not belong to its reply key",
        )
        return None, reply_key, thread_of_seed(reply_key.seed)
    if reply_to is None:
        _require("thread" not in document, "manifest has a thread but no reply recipient")
        return None, None, thread_of_one(str(document["id"]))
    _require(isinstance(reply_to, str), "manifest member 'reply_to' is not a string")
    _require(document["format"] != MANIFEST_FORMAT_V1, "a version 1 manifest has no 'reply_to'")
    try:
        X25519Recipient.parse(reply_to)
    except KeyFormatError:
        raise ManifestError("manifest member 'reply_to' is not an X25519 age recipient") from None
    _require(
        document.get("thread") == thread_id(reply_to),
        "manifest member 'thread' does not belong to its reply recipient",
    )
    return reply_to, None, thread_id(reply_to)
