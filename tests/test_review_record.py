"""The opened record (`opened.json`) as one type, and opening outcomes as typed failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portal.core.age import X25519Identity
from portal.core.layout import MANIFEST_NAME
from portal.review.opening import Opener
from portal.review.outcomes import Changed, Conflict, NoKey, OpenFailure, Status, Tampered
from portal.review.record import (
    OPENED_FORMAT,
    RECORD_NAME,
    OpenedRecord,
    RecordError,
    read_record,
)
from tests.review_support import flip_byte, make_store, submit


@pytest.fixture
def opened(tmp_path: Path) -> tuple[X25519Identity, Path, Path, str]:
    identity = X25519Identity.generate()
    store = make_store(tmp_path / "data")
    sid = submit(
        store, [identity], "증언 " * 70_000, [("a.txt", b"hello\n"), ("b.bin", b"\x00\x01")]
    )
    out = tmp_path / "out"
    report = Opener(out, [identity]).open_all(store.root)
    assert [o.status for o in report.outcomes] == [Status.OPENED]
    return identity, store.root, out, sid


def test_the_written_record_reads_back_to_the_same_bytes(
    opened: tuple[X25519Identity, Path, Path, str],
) -> None:
    _identity, _src, out, sid = opened
    raw = (out / sid / RECORD_NAME).read_bytes()
    record = read_record(out / sid)
    assert record is not None and record.id == sid
    assert record.to_bytes() == raw
    assert OpenedRecord.from_json(json.loads(raw)) == record
    assert [a.file for a in record.attachments] == ["a.txt", "b.bin"]
    assert record.long_fields and record.long_fields[0].field == "testimony"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("id"), "no member 'id'"),
        (lambda r: r.update(attachments={}), "'attachments' is not a list"),
        (lambda r: r["attachments"][0].update(file="../../id.txt"), "not a plain file name"),
        (lambda r: r["attachments"][0].update(file=".hidden"), "not a plain file name"),
        (lambda r: r["attachments"][0].update(size=True), "'size' is not a size"),
        (lambda r: r["attachments"][0].update(size=-1), "'size' is not a size"),
        (lambda r: r["manifest"].update(sha256=None), "'sha256' is not a string"),
        (lambda r: r["long_fields"][0].update(file="a/b"), "not a plain file name"),
        (lambda r: r.update(ciphertext_sizes=[]), "not a map of sizes"),
    ],
)
def test_a_damaged_record_is_a_record_error_naming_the_member(
    opened: tuple[X25519Identity, Path, Path, str], change: object, message: str
) -> None:
    _identity, _src, out, sid = opened
    document = json.loads((out / sid / RECORD_NAME).read_text())
    change(document)  # type: ignore[operator]
    with pytest.raises(RecordError, match=message):
        OpenedRecord.from_json(document)
    (out / sid / RECORD_NAME).write_text(json.dumps(document))
    with pytest.raises(RecordError):
        read_record(out / sid)


def test_a_record_of_another_format_is_not_ours(tmp_path: Path) -> None:
    (tmp_path / RECORD_NAME).write_text(json.dumps({"format": "something/else"}))
    assert read_record(tmp_path) is None
    with pytest.raises(RecordError, match=OPENED_FORMAT):
        OpenedRecord.from_json({"format": "something/else"})


def test_a_damaged_record_on_a_rerun_is_changed_not_overwritten(
    opened: tuple[X25519Identity, Path, Path, str],
) -> None:
    identity, src, out, sid = opened
    path = out / sid / RECORD_NAME
    document = json.loads(path.read_text())
    document["attachments"][0]["file"] = "../../id.txt"
    path.write_text(json.dumps(document))
    [outcome] = Opener(out, [identity]).open_all(src).outcomes
    assert outcome.status == Status.FAILED
    assert isinstance(outcome.failure, Changed) and outcome.failure.integrity
    assert outcome.kind == "changed since opened"


def test_each_kind_of_failure_is_its_own_type(tmp_path: Path) -> None:
    identity, stranger = X25519Identity.generate(), X25519Identity.generate()
    store = make_store(tmp_path / "data")
    tampered = submit(store, [identity], "one", [("a.txt", b"a")])
    not_ours = submit(store, [stranger], "two")
    in_the_way = submit(store, [identity], "three")
    flip_byte(store.root / "submissions" / tampered / MANIFEST_NAME, -5)
    out = tmp_path / "out"
    (out / in_the_way).mkdir(parents=True)
    outcomes = {o.submission_id: o for o in Opener(out, [identity]).open_all(store.root).outcomes}
    expected = {tampered: Tampered, not_ours: NoKey, in_the_way: Conflict}
    for sid, kind in expected.items():
        failure = outcomes[sid].failure
        assert isinstance(failure, OpenFailure) and type(failure) is kind, (sid, failure)
        assert outcomes[sid].kind == kind.label
    assert outcomes[tampered].failure.integrity  # type: ignore[union-attr]
    assert not outcomes[not_ours].failure.integrity  # type: ignore[union-attr]
    assert not outcomes[in_the_way].failure.integrity  # type: ignore[union-attr]


def test_an_edited_opened_file_is_changed_on_the_next_run(
    opened: tuple[X25519Identity, Path, Path, str],
) -> None:
    identity, src, out, sid = opened
    (out / sid / "a.txt").write_bytes(b"HELLO\n")
    [outcome] = Opener(out, [identity]).open_all(src).outcomes
    assert isinstance(outcome.failure, Changed), outcome
