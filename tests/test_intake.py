"""Intake without the web layer: streaming, hashing, manifest, discard on failure."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from portal.core.age import X25519Identity, decrypt
from portal.core.manifest import MANIFEST_FORMAT
from portal.server.intake import Submission, store_submission
from portal.server.store import StoreError, SubmissionStore


def read_manifest(store: SubmissionStore, submission_id: str, identity: X25519Identity) -> dict:
    data = (store.path(submission_id) / "testimony.age").read_bytes()
    return json.loads(decrypt(data, [identity]))


def test_attachment_streamed_in_pieces_is_hashed_and_encrypted(store, identity) -> None:
    payload = bytes(range(251)) * 4099
    submission_id = store_submission(
        store,
        [identity.recipient],
        {"testimony": "t"},
        [("a.bin", "application/octet-stream", io.BytesIO(payload))],
        chunk_size=7919,
    )
    manifest = read_manifest(store, submission_id, identity)
    assert manifest["format"] == MANIFEST_FORMAT
    [entry] = manifest["attachments"]
    assert entry == {
        "path": "files/1.age",
        "name": "a.bin",
        "type": "application/octet-stream",
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    stored = (store.path(submission_id) / "files" / "1.age").read_bytes()
    assert decrypt(stored, [identity]) == payload


def test_every_recipient_can_open_it(store) -> None:
    old, new = X25519Identity.generate(), X25519Identity.generate()
    submission_id = store_submission(store, [old.recipient, new.recipient], {"testimony": "t"}, [])
    assert read_manifest(store, submission_id, old) == read_manifest(store, submission_id, new)


def test_hostile_names_are_kept_as_data_without_control_characters(store, identity) -> None:
    name = "../../etc/passwd\0\x1b[31m\u202etxt.exe" + "x" * 5000
    submission_id = store_submission(
        store, [identity.recipient], {}, [(name, "text/html\r\nX-Evil: 1", b"<script>")]
    )
    [entry] = read_manifest(store, submission_id, identity)["attachments"]
    # Control characters go; the rest (even U+202E) is data for the reviewer tool to defuse.
    assert entry["name"].startswith("../../etc/passwd[31m\u202etxt.exe")
    assert "\0" not in entry["name"] and "\x1b" not in entry["name"]
    assert len(entry["name"]) == 1024
    assert "\r" not in entry["type"] and "\n" not in entry["type"]
    assert entry["path"] == "files/1.age"
    assert [p.name for p in (store.path(submission_id) / "files").iterdir()] == ["1.age"]


def test_failure_mid_stream_keeps_nothing(store, identity) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 3:
                raise ConnectionResetError("client went away")
            return b"x" * 1000

    with pytest.raises(ConnectionResetError):
        store_submission(store, [identity.recipient], {}, [("a", "b", Broken())])  # type: ignore[list-item]  # a file object that fails
    assert store.ids() == []
    assert list(store.staging_dir.iterdir()) == []


def test_discard_after_commit_keeps_the_submission(store, identity) -> None:
    submission = Submission(store, [identity.recipient])
    sink = submission.open_attachment("a.txt", "text/plain")
    sink.write(b"hello")
    submission_id = submission.commit({"testimony": ""}, "en")
    submission.discard()
    assert store.ids() == [submission_id]


def test_unfinished_attachment_cannot_be_committed_twice(store, identity) -> None:
    submission = Submission(store, [identity.recipient])
    submission.commit({"testimony": "once"}, "en")
    with pytest.raises(StoreError):
        submission.commit({"testimony": "twice"}, "en")


def _counting_store(tmp_path: Path) -> tuple[SubmissionStore, list[int]]:
    opened: list[int] = []

    def opener(fd: int):
        opened.append(fd)
        return open(fd, "wb", buffering=0)  # noqa: SIM115 - closed by StagedFile

    store = SubmissionStore(tmp_path / "data", opener=opener)
    store.initialise()
    return store, opened


def test_empty_unnamed_file_part_makes_no_file_at_all(tmp_path: Path, identity) -> None:
    # What a browser sends when the witness chose no file.
    store, opened = _counting_store(tmp_path)
    submission = Submission(store, [identity.recipient])
    sink = submission.open_attachment("", "application/octet-stream")
    sink.write(b"")
    sink.seek(0)
    submission_id = submission.commit({"testimony": "text only"}, "en")
    assert len(opened) == 1  # the manifest, nothing else
    assert not (store.path(submission_id) / "files").exists()
    assert read_manifest(store, submission_id, identity)["attachments"] == []


def test_named_empty_file_is_kept_and_numbering_follows_stored_files(
    tmp_path: Path, identity
) -> None:
    store, _opened = _counting_store(tmp_path)
    submission = Submission(store, [identity.recipient])
    submission.open_attachment("", "application/octet-stream").seek(0)
    submission.open_attachment("empty.txt", "text/plain").seek(0)
    submission_id = submission.commit({"testimony": ""}, "en")
    [entry] = read_manifest(store, submission_id, identity)["attachments"]
    assert entry["name"] == "empty.txt" and entry["size"] == 0
    assert entry["sha256"] == hashlib.sha256(b"").hexdigest()
    stored = (store.path(submission_id) / entry["path"]).read_bytes()
    assert decrypt(stored, [identity]) == b""
    assert entry["path"] == "files/1.age"
