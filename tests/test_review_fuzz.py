"""Structure-aware fuzzing of the reviewer's manifest parser and HTML writer (issue 9, item 1).

The manifest is attacker-controlled: anyone with the public key can write
one. Whatever its bytes, `parse_manifest` either returns a Manifest or raises
ManifestError, and whatever it accepts, the pages render as escaped text
that encodes to UTF-8. The inputs are built from the manifest's own shape:
valid JSON of wrong shapes, members swapped for hostile values, huge numbers,
lone surrogates, deep nesting, huge strings and duplicate keys. Runs are
derandomized and bounded, so the suite stays reproducible and quick.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.core.manifest import MANIFEST_FORMAT, Manifest, ManifestError, parse_manifest
from portal.review.record import OpenedAttachment, OpenedRecord, RecordedManifest
from portal.review.report import render_index, render_submission_page

pytestmark = pytest.mark.slow

FUZZ = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SHA = "ab" * 32

# Text with the characters that break naive code: markup, quotes, controls,
# bidirectional overrides, astral characters and (as JSON escapes) surrogates.
hostile_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("<>&\"'`/\\\x00\n\r\t\u202e\u2066\ufeff한中😀")),
        st.characters(codec="utf-8"),
    ),
    max_size=40,
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=12,
)


def _attachment(n: int, name: str, kind: str, size: int) -> dict[str, Any]:
    return {"path": f"files/{n}.age", "name": name, "type": kind, "size": size, "sha256": SHA}


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    """A manifest of the right shape with hostile strings, sometimes one member broken."""
    count = draw(st.integers(0, 3))
    document: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "id": draw(st.text(alphabet="abcXYZ019_-", min_size=22, max_size=30)),
        "received": draw(hostile_text),
        "language": draw(hostile_text),
        "fields": draw(st.dictionaries(hostile_text, hostile_text, max_size=4)),
        "attachments": [
            _attachment(n, draw(hostile_text), draw(hostile_text), draw(st.integers(0, 10**12)))
            for n in range(1, count + 1)
        ],
    }
    if draw(st.booleans()):
        # Swap one member (or one attachment member) for any JSON value.
        target: dict[str, Any] = document
        if document["attachments"] and draw(st.booleans()):
            target = document["attachments"][0]
        target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
    return document


def _serialise(document: dict[str, Any], style: str) -> bytes:
    if style == "ascii":
        return json.dumps(document, ensure_ascii=True).encode()
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8", "surrogatepass")


def _with_surrogate(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """Put a lone surrogate where the pages show text: a field, a name, the language."""
    lone = chr(draw(st.integers(0xD800, 0xDFFF)))
    where = draw(st.sampled_from(["field value", "field name", "attachment name", "language"]))
    if where == "attachment name" and document["attachments"]:
        document["attachments"][0]["name"] = f"photo{lone}.jpg"
    elif where == "language":
        document["language"] = f"ko{lone}"
    elif isinstance(document["fields"], dict) and where == "field name":
        document["fields"][f"con{lone}tact"] = "x"
    else:
        document["fields"] = {"testimony": f"before{lone}after"}
    return document


@st.composite
def raw_manifests(draw: st.DrawFn) -> bytes:
    """Manifest bytes, then a hostile edit of the text the JSON writer could not make."""
    document = draw(manifests())
    edit = draw(
        st.sampled_from(
            ["none", "huge-number", "surrogate", "nesting", "huge-string", "duplicate-key",
             "trailing", "padding", "truncate", "nan"]
        )
    )  # fmt: skip
    if edit == "surrogate":
        return _serialise(_with_surrogate(draw, document), "ascii")
    text = _serialise(document, draw(st.sampled_from(["ascii", "utf8"])))
    body = text.rstrip()[:-1]  # without the final "}"
    if edit == "huge-number":
        # Around Python's own 4,300-digit limit for int(), and far beyond.
        digits = draw(st.sampled_from([21, 400, 4300, 4301, 5000, 100_000]))
        return body + b', "n": ' + b"9" * digits + b"}"
    if edit == "nesting":
        depth = draw(st.sampled_from([9, 100, 1000, 5000, 200_000]))
        return body + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    if edit == "huge-string":
        return body + b', "big": "' + b"x" * draw(st.sampled_from([1, 70_000, 2_000_000])) + b'"}'
    if edit == "duplicate-key":
        key = draw(st.sampled_from(["format", "id", "fields", "attachments", "x"]))
        return body + b', "' + key.encode() + b'": ' + json.dumps(draw(json_values)).encode() + b"}"
    if edit == "trailing":
        return text + draw(st.binary(min_size=1, max_size=20))
    if edit == "padding":
        return text + b" " * draw(st.integers(1, 5000))
    if edit == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    if edit == "nan":
        return body + b', "x": ' + draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])) + b"}"
    return text


def _parse(data: bytes) -> Manifest | None:
    try:
        return parse_manifest(data)
    except ManifestError:
        return None


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _value in attrs)


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "tr", "th",
    "td", "code", "div", "ul", "li", "a", "span", "br", "bdi",
}  # fmt: skip


def _check_pages(manifest: Manifest) -> None:
    record = OpenedRecord(
        id=manifest.id,
        opened="2026-11-29T00:00:00+00:00",
        received=manifest.received,
        preview=None,
        language=manifest.language,
        thread=manifest.thread,
        manifest=RecordedManifest("testimony.json", SHA, SHA),
        attachments=tuple(
            OpenedAttachment(
                path=a.path, name=a.name, type=a.type, file=a.name, size=a.size,
                sha256=a.sha256, ciphertext_sha256=SHA, view=None, view_reason=a.type,
            )
            for a in manifest.attachments
        ),
    )  # fmt: skip
    pages = [
        render_submission_page(record, manifest.document),
        render_index([(record, manifest.document)], {manifest.id: manifest.testimony[:50]}),
    ]
    for page in pages:
        page.encode("utf-8")  # no lone surrogate reaches the page
        parser = _Tags()
        parser.feed(page)
        assert parser.tags <= ALLOWED_TAGS
        assert not any(name.startswith("on") for name in parser.attributes)


@FUZZ
@given(raw_manifests())
def test_the_parser_accepts_or_raises_manifest_error_whatever_the_bytes(data: bytes) -> None:
    manifest = _parse(data)
    if manifest is not None:
        # What it accepts is exactly the documented shape.
        assert isinstance(manifest.fields, dict)
        assert all(isinstance(v, str) for v in manifest.fields.values())
        assert all(isinstance(a.size, int) and a.size >= 0 for a in manifest.attachments)
        _check_pages(manifest)


@FUZZ
@given(json_values)
def test_valid_json_of_any_other_shape_is_refused(value: Any) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(json.dumps(value).encode())


@FUZZ
@given(manifests())
def test_the_html_writer_escapes_every_accepted_manifest(document: dict[str, Any]) -> None:
    manifest = _parse(_serialise(document, "utf8"))
    if manifest is not None:
        _check_pages(manifest)


@pytest.mark.parametrize(
    "data",
    [
        b'{"format": 1' + b"0" * 5000 + b"}",
        b'{"a": "\\ud800"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"format": NaN}',
        b"\xff\xfe{}",
        b"",
    ],
)
def test_known_crashers_are_manifest_errors(data: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(data)
