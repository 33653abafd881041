"""Decisions rest on what was sealed: edited files and appended custody entries are refused.

Issue 21, points 6, 7 and 8. Someone with write access to the reviewer's
opened folder edits `testimony.json` and `opened.json` so that they agree
with each other; before this issue `forward` then sent a `no` submission
without an override and the custody log recorded `yes`. Now every decision
is checked against the first `open` entry of the custody log, which a
later, appended entry cannot replace, and every member of `opened.json`
is covered by a hash in that entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from portal.core.age import X25519Identity
from portal.core.questionnaire import DEFAULT_QUESTIONNAIRE, load_questionnaire
from portal.review.cli import ExitStatus
from portal.review.custody import Action, CustodyLog
from portal.server.intake import Submission
from tests.review_support import make_store, open_args, review, write_identity
from tests.support import signing_key_file

QUESTIONNAIRE = load_questionnaire(DEFAULT_QUESTIONNAIRE, ("en", "ko", "zh"))


class Desk:
    """One submission with consent `no`, opened with a custody log."""

    def __init__(self, tmp_path: Path, consent: str = "no") -> None:
        self.tmp = tmp_path
        identity = write_identity(tmp_path / "id.txt")
        store = make_store(tmp_path / "data")
        self.witness = X25519Identity.generate()
        submission = Submission(store, [identity.recipient])
        submission.open_attachment("map.txt", "text/plain").write(b"the camp is here")
        self.sid = submission.commit(
            {"testimony": "청진에서 본 일입니다.", "consent": consent},
            "ko",
            reply_identity=self.witness,
            questionnaire=QUESTIONNAIRE.sealed("ko"),
        )
        self.out = tmp_path / "out"
        self.custody = tmp_path / "custody.jsonl"
        run = review(open_args(store.root, tmp_path / "id.txt", self.out, self.custody))
        assert run.status == ExitStatus.OK, run.err
        self.folder = self.out / self.sid
        self.head = CustodyLog(self.custody).verify().head

    def edit_manifest(self, change: Callable[[dict[str, Any]], None]) -> str:
        """Edit testimony.json and make opened.json agree with it; return the new hash."""
        path = self.folder / "testimony.json"
        document = json.loads(path.read_bytes())
        # A careful forger drops the witness's proof, which no longer verifies.
        document.pop("reply_proof", None)
        change(document)
        data = json.dumps(document, ensure_ascii=False, indent=1).encode()
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        self.edit_record(lambda record: record["manifest"].__setitem__("sha256", digest))
        return digest

    def edit_record(self, change: Callable[[dict[str, Any]], None]) -> None:
        path = self.folder / "opened.json"
        record = json.loads(path.read_bytes())
        change(record)
        path.write_text(json.dumps(record, indent=1))

    def forward(self, *extra: str) -> Any:
        return review(
            ["forward", self.sid, "--from", self.out,
             "--to", str(X25519Identity.generate().recipient),
             "--out", self.tmp / "bundle.age", "--custody", self.custody, *extra]
        )  # fmt: skip

    def verify(self, *extra: str) -> Any:
        return review(["verify", self.out, "--custody", self.custody, *extra])


def _one_line(text: str) -> bool:
    return text.count("\n") == 1 and text.startswith("testimony-review: INTEGRITY FAILURE: ")


@pytest.fixture
def desk(tmp_path: Path) -> Desk:
    return Desk(tmp_path)


def _consent_yes(document: dict[str, Any]) -> None:
    document["fields"]["consent"] = "yes"


def test_an_edited_consent_is_refused_by_forward_table_and_verify(desk: Desk) -> None:
    before = desk.custody.read_bytes()
    desk.edit_manifest(_consent_yes)
    run = desk.forward()
    assert run.status == ExitStatus.INTEGRITY and _one_line(run.err), run.err
    assert "testimony.json and opened.json were edited" in run.err
    assert not (desk.tmp / "bundle.age").exists()
    assert desk.custody.read_bytes() == before  # nothing recorded, certainly not `yes`
    table = review(
        ["table", "--from", desk.out, "--out", desk.tmp / "t.csv", "--custody", desk.custody]
    )
    assert table.status == ExitStatus.INTEGRITY and not (desk.tmp / "t.csv").exists()
    verify = desk.verify()
    assert verify.status == ExitStatus.INTEGRITY and f"CHANGED {desk.sid}" in verify.out


def test_an_edited_reply_key_is_refused_by_reply(desk: Desk) -> None:
    attacker = X25519Identity.generate()

    def redirect(document: dict[str, Any]) -> None:
        from portal.core.conversation import thread_id

        document["reply_to"] = str(attacker.recipient)
        document["thread"] = thread_id(str(attacker.recipient))

    desk.edit_manifest(redirect)
    message = desk.tmp / "m.txt"
    message.write_text("답장")
    run = review(
        ["reply", desk.sid, "--from", desk.out, "--message-file", message, "--out",
         desk.tmp / "outbox", "--custody", desk.custody,
         "--signing-key", signing_key_file(desk.tmp / "signer")]
    )  # fmt: skip
    assert run.status == ExitStatus.INTEGRITY and _one_line(run.err), run.err
    assert not (desk.tmp / "outbox").exists()


def test_an_appended_open_entry_does_not_replace_the_first(desk: Desk) -> None:
    digest = desk.edit_manifest(_consent_yes)
    log = CustodyLog(desk.custody)
    (first,) = [e for e in log.entries() if e.entry.opening is not None]
    details = dict(first.entry.details)
    details["manifest"] = {**details["manifest"], "sha256": digest}
    details.pop("record_sha256")
    # Correctly chained, and the head file rewritten by the same append.
    log.append(Action.OPEN, "Someone", **details)

    verify = desk.verify()
    assert verify.status == ExitStatus.INTEGRITY
    assert f"CHANGED {desk.sid}: custody log line 2 records other hashes" in verify.out
    run = review(["custody", "verify", "--custody", desk.custody, "--expect-head", desk.head])
    assert run.status == ExitStatus.INTEGRITY and _one_line(run.err), run.err
    assert "line 2 records other hashes" in run.err
    forward = desk.forward()
    assert forward.status == ExitStatus.INTEGRITY and _one_line(forward.err), forward.err


@pytest.mark.parametrize(
    "member",
    ["received", "preview", "thread", "language", "name", "type", "status", "view"],
)
def test_every_member_of_the_opened_record_is_covered(desk: Desk, member: str) -> None:
    def change(record: dict[str, Any]) -> None:
        if member in ("name", "type", "status", "view"):
            record["attachments"][0][member] = "image/png" if member != "status" else "failed"
        else:
            record[member] = "2001-01-01" if member == "received" else "ja"

    desk.edit_record(change)
    verify = desk.verify()
    assert verify.status == ExitStatus.INTEGRITY, verify.out
    assert "opened.json differs from the one the custody log recorded" in verify.out
    forward = desk.forward("--override-consent", "test")
    assert forward.status == ExitStatus.INTEGRITY and _one_line(forward.err), forward.err


def test_the_index_never_shows_an_edited_record(desk: Desk) -> None:
    desk.edit_record(lambda record: record.__setitem__("preview", "I RETRACT everything"))
    run = review(open_args(desk.tmp / "data", desk.tmp / "id.txt", desk.out, desk.custody))
    assert run.status == ExitStatus.INTEGRITY
    index = (desk.out / "index.html").read_text("utf-8")
    assert "I RETRACT" not in index


def test_opening_other_ciphertext_of_the_same_submission_is_refused(desk: Desk) -> None:
    # Another export whose manifest decrypts to other contents under the same id.
    from tests.review_support import honest_manifest

    identity = X25519Identity.parse((desk.tmp / "id.txt").read_text().split()[-1])
    other = make_store(desk.tmp / "other")
    staging = other.begin()
    sid = staging.submission_id
    manifest = honest_manifest({"testimony": "다른 내용", "consent": "yes"})(desk.sid, [])
    from portal.core.age import encrypt

    staged = staging.create_manifest()
    staged.write(encrypt(manifest, [identity.recipient]))
    staged.finish()
    other.commit(staging)
    (other.root / "submissions" / sid).rename(other.root / "submissions" / desk.sid)
    run = review(open_args(other.root, desk.tmp / "id.txt", desk.tmp / "out2", desk.custody))
    assert run.status == ExitStatus.INTEGRITY
    assert "decrypts to other contents than when it was first opened" in run.err
    assert not (desk.tmp / "out2" / desk.sid).exists()
    assert CustodyLog(desk.custody).verify().count == 1


def test_the_desk_shows_no_edited_submission(tmp_path: Path) -> None:
    from tests.desk_support import (
        Witness,
        base_path,
        found_ids,
        open_submissions,
        request,
        running_desk,
    )

    opened = open_submissions(tmp_path, [Witness("원래 증언", fields={"consent": "no"})])
    (sid,) = opened.ids
    folder = opened.root / sid
    document = json.loads((folder / "testimony.json").read_bytes())
    document["fields"]["testimony"] = "I RETRACT everything"
    data = json.dumps(document, ensure_ascii=False, indent=1).encode()
    (folder / "testimony.json").write_bytes(data)
    record = json.loads((folder / "opened.json").read_bytes())
    record["manifest"]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "opened.json").write_text(json.dumps(record, indent=1))
    with running_desk(opened) as desk:
        case = request(desk, base_path(desk, "en") + f"case/{sid}")
        assert case.status == 409 and "I RETRACT" not in case.body
        found = request(desk, base_path(desk, "en") + "?q=RETRACT").body
        assert sid not in found_ids(found)
        # It is listed as refused, with the reason.
        assert "testimony.json and opened.json were edited" in found
