"""portal/core/manifest.py: what the one writer writes, the one parser reads back unchanged."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.pwhash.argon2id import MEMLIMIT_MIN, OPSLIMIT_MIN

from portal.core.age import X25519Identity
from portal.core.layout import is_attachment_path
from portal.core.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_FORMAT_V3,
    Attachment,
    Manifest,
    ManifestError,
    SealedChoice,
    SealedQuestion,
    SealedQuestionnaire,
    build_manifest,
    encode_manifest,
    indented_json,
    new_manifest,
    padded_size,
    parse_manifest,
)
from portal.core.questionnaire import DEFAULT_QUESTIONNAIRE, load_questionnaire
from portal.core.replykey import (
    MAX_MEMLIMIT,
    MAX_OPSLIMIT,
    SALT_BYTES,
    SEED_BYTES,
    KdfCost,
    ReplyKey,
)

# Any text a browser can send, less lone surrogates (which no UTF-8 request holds).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
SHA256 = st.text("0123456789abcdef", min_size=64, max_size=64)
RECIPIENT = str(X25519Identity.generate().recipient)

ATTACHMENTS = st.lists(
    st.builds(
        Attachment,
        path=st.integers(1, 999_999).map(lambda n: f"files/{n}.age"),
        name=TEXT,
        type=TEXT,
        size=st.integers(0, 2**63),
        sha256=SHA256,
    ),
    max_size=4,
    unique_by=lambda a: a.path,
)
QUESTIONS = st.lists(
    st.builds(
        SealedQuestion,
        id=TEXT,
        type=st.sampled_from(["text", "choice", "choices"]),
        required=st.booleans(),
        identifying=st.booleans(),
        label=TEXT,
        label_en=TEXT,
        help=TEXT,
        choices=st.lists(st.builds(SealedChoice, TEXT, TEXT, TEXT), max_size=3).map(tuple),
    ),
    max_size=4,
    unique_by=lambda q: q.id,
).map(tuple)
QUESTIONNAIRES = st.none() | st.builds(
    SealedQuestionnaire, id=TEXT, version=TEXT, sha256=SHA256, language=TEXT, questions=QUESTIONS
)
REPLY_KEYS = st.builds(
    ReplyKey,
    seed=st.binary(min_size=SEED_BYTES, max_size=SEED_BYTES),
    salt=st.binary(min_size=SALT_BYTES, max_size=SALT_BYTES),
    cost=st.builds(
        KdfCost,
        opslimit=st.integers(OPSLIMIT_MIN, MAX_OPSLIMIT),
        memlimit=st.integers(MEMLIMIT_MIN, MAX_MEMLIMIT),
    ),
)


@given(
    submission_id=st.text("ABCdef0123_-", min_size=22, max_size=24),
    fields=st.dictionaries(TEXT, TEXT, max_size=4),
    language=st.sampled_from(["en", "ko", "zh"]),
    attachments=ATTACHMENTS,
    reply=st.sampled_from([None, RECIPIENT]) | REPLY_KEYS,
    questionnaire=QUESTIONNAIRES,
)
@settings(max_examples=150, deadline=None)
def test_writer_output_parses_back_to_an_equal_manifest(
    submission_id: str,
    fields: dict[str, str],
    language: str,
    attachments: list[Attachment],
    reply: str | ReplyKey | None,
    questionnaire: SealedQuestionnaire | None,
) -> None:
    written = new_manifest(
        submission_id,
        fields,
        language,
        attachments,
        received="2026-11-29",
        reply_to=reply if isinstance(reply, str) else None,
        reply_key=reply if isinstance(reply, ReplyKey) else None,
        questionnaire=questionnaire,
    )
    plaintext = encode_manifest(written)
    # The questionnaire's text is made once and put in place: the same bytes
    # as serialising the whole document.
    whole = json.dumps(written.to_json(), ensure_ascii=False, indent=1).encode()
    assert plaintext.rstrip(b" ") == whole
    parsed = parse_manifest(plaintext)
    assert parsed == written
    assert parsed.format == (MANIFEST_FORMAT if written.reply_key is None else MANIFEST_FORMAT_V3)
    # Written again, the parsed manifest is the same bytes: nothing is lost or reordered.
    assert encode_manifest(parsed) == plaintext
    assert len(plaintext) == padded_size(len(plaintext.rstrip(b" ")))


# Every JSON value, and what JSON has no place for in a manifest (floats,
# lone surrogates, tuples and keys that are not strings) for the fallback.
JSON_LEAVES = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(), max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        | st.dictionaries(st.integers() | st.booleans() | st.none(), inner, max_size=2)
    ),
    max_leaves=30,
)


@given(JSON_VALUES)
@settings(max_examples=400, deadline=None)
def test_the_manifest_members_are_written_as_json_dumps_writes_them(value: object) -> None:
    assert indented_json(value) == json.dumps(value, ensure_ascii=False, indent=1)


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        {"a": {}, "b": [], "c": [{}], "d": [[]]},
        {"quote": '"', "backslash": "\\", "controls": "\x00\x1f\x7f\n\t\r", "line": "\u2028"},
        {"한국어": "증언 😀", "rtl": "\u202eevil"},
        {"n": [0, -1, 2**63, -(2**200)], "b": [True, False, None]},
        {"float": 1.5},
        {1: "not a string key"},
        ("a", "tuple"),
    ],
)
def test_edge_values_are_written_as_json_dumps_writes_them(value: object) -> None:
    assert indented_json(value) == json.dumps(value, ensure_ascii=False, indent=1)


def test_a_real_sealed_questionnaire_is_written_exactly_as_sealed() -> None:
    questionnaire = load_questionnaire(DEFAULT_QUESTIONNAIRE, ("en", "ko", "zh"))
    sealed = questionnaire.sealed("ko")
    plaintext = build_manifest(
        "Q" * 24, {"testimony": "증언"}, "ko", [], received="2026-11-29", questionnaire=sealed
    )
    assert json.loads(plaintext)["questionnaire"] == sealed.to_json()
    parsed = parse_manifest(plaintext)
    assert parsed.questionnaire == sealed


def test_a_path_is_sealed_once_and_only_from_its_own_questions() -> None:
    questionnaire = load_questionnaire(DEFAULT_QUESTIONNAIRE, ("en", "ko", "zh"))
    path = [q for q in questionnaire.questions if q.page == 1]
    first = questionnaire.sealed("ko", path)
    assert questionnaire.sealed("ko", list(path)) is first
    assert questionnaire.sealed("zh", path) is not first
    assert questionnaire.sealed("zh", path).questions[0].label != first.questions[0].label
    # A question of the same id that is not this file's own is sealed as it is.
    relabelled = [replace(path[0], label={**path[0].label, "ko": "다른 질문"}), *path[1:]]
    assert questionnaire.sealed("ko", relabelled).questions[0].label == "다른 질문"
    assert questionnaire.sealed("ko", path) is first


def test_the_writer_keeps_its_member_order() -> None:
    # The on-disk bytes are part of the format: an export made before and
    # after this module existed must hash the same for the same input.
    plaintext = build_manifest(
        "A" * 24,
        {"testimony": "t"},
        "en",
        [Attachment("files/1.age", "a.txt", "text/plain", 1, "0" * 64)],
        received="2026-11-29",
        reply_to=RECIPIENT,
    )
    document = json.loads(plaintext)
    assert list(document) == [
        "format",
        "id",
        "received",
        "language",
        "fields",
        "attachments",
        "reply_to",
        "thread",
    ]
    assert list(document["attachments"][0]) == ["path", "name", "type", "size", "sha256"]
    assert plaintext.startswith(b'{\n "format": "testimony-portal/submission/2",\n "id": ')


def test_one_grammar_for_attachment_paths() -> None:
    assert is_attachment_path("files/1.age")
    assert is_attachment_path("files/999999.age")
    for bad in (
        "files/0.age",
        "files/01.age",
        "files/1000000.age",
        "files/1.age\n",
        "files/1.age/x",
        "files//1.age",
        "other/1.age",
        "/files/1.age",
        "files/1.AGE",
        "testimony.age",
    ):
        assert not is_attachment_path(bad), bad


def test_the_parser_rejects_a_path_outside_the_grammar() -> None:
    document = json.loads(build_manifest("B" * 24, {}, "en", [], received="2026-11-29"))
    document["attachments"] = [
        {"path": "files/../1.age", "name": "x", "type": "t", "size": 0, "sha256": "0" * 64}
    ]
    with pytest.raises(ManifestError, match="bad path"):
        parse_manifest(json.dumps(document).encode())


def test_manifest_equality_ignores_the_kept_document() -> None:
    a = Manifest("i", "r", "en", {}, ())
    b = Manifest("i", "r", "en", {}, (), document={"extra": 1})
    assert a == b
