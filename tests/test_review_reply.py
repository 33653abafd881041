"""`testimony-review reply`: a reply encrypted to the witness alone, logged, put in an outbox."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from portal.core.age import X25519Identity, decrypt
from portal.core.conversation import mailbox_name, thread_id
from portal.core.manifest import ManifestError, build_manifest, parse_manifest
from portal.review.cli import ExitStatus
from tests.review_support import craft, make_store, open_args, review, write_identity


def _opened(tmp_path: Path, reply_to: str | None) -> tuple[Path, str, Path]:
    reviewer = write_identity(tmp_path / "reviewer.txt")
    store = make_store(tmp_path / "data")
    if reply_to is None:
        # Before the conversation: a format 1 manifest, with no reply recipient.
        def v1(sid: str, attachments: list) -> bytes:
            document = json.loads(build_manifest(sid, {"testimony": "old"}, "en", attachments))
            document["format"] = "testimony-portal/submission/1"
            return json.dumps(document).encode()

        sid = craft(store, reviewer.recipient, v1)
    else:
        from portal.server.intake import store_submission

        sid = store_submission(
            store, [reviewer.recipient], {"testimony": "t"}, [], "ko", reply_to=reply_to
        )
    out = tmp_path / "opened"
    custody = tmp_path / "custody.jsonl"
    run = review(open_args(store.root, tmp_path / "reviewer.txt", out, custody))
    assert run.status == ExitStatus.OK, run.err
    return out, sid, custody


def _reply(out: Path, sid: str, message: Path, outbox: Path, custody: Path):
    return review(
        ["reply", sid, "--from", out, "--message-file", message, "--out", outbox,
         "--custody", custody, "--reviewer", "Test Reviewer"]
    )  # fmt: skip


def test_a_reply_opens_with_the_stock_age_cli_and_only_with_the_witness_key(
    tmp_path: Path,
) -> None:
    witness = X25519Identity.generate()
    out, sid, custody = _opened(tmp_path, str(witness.recipient))
    message = tmp_path / "msg.txt"
    text = "안녕하세요.\n追加の質問があります。 Спасибо."
    message.write_text(text, "utf-8")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "README").write_text("an outbox that exists already")
    for _ in range(2):
        run = _reply(out, sid, message, outbox, custody)
        assert run.status == ExitStatus.OK, run.err
    files = sorted((outbox / mailbox_name(str(witness.recipient))).iterdir())
    assert len(files) == 2 and files[0].read_bytes() != files[1].read_bytes()
    key = tmp_path / "witness.txt"
    key.write_text(f"{witness}\n")
    plain = subprocess.run(
        ["age", "-d", "-i", str(key), str(files[0])], capture_output=True, check=True, timeout=60
    ).stdout
    assert plain.decode("utf-8") == text
    with pytest.raises(Exception):
        decrypt(files[0].read_bytes(), [X25519Identity.generate()])
    with pytest.raises(Exception):  # the organisation's key does not open it either
        decrypt(
            files[0].read_bytes(),
            [X25519Identity.parse((tmp_path / "reviewer.txt").read_text().split()[-1])],
        )
    entry = json.loads(custody.read_text().splitlines()[-1])
    assert entry["action"] == "reply" and entry["submission"] == sid
    assert entry["thread"] == thread_id(str(witness.recipient))
    assert entry["reply"]["file"] == str(files[0]) or entry["reply"]["file"] == str(files[1])
    copies = list((out / "replies").iterdir())
    assert len(copies) == 2
    assert json.loads(copies[0].read_text("utf-8"))["message"] == text


def test_a_submission_from_before_receipts_cannot_be_answered(tmp_path: Path) -> None:
    out, sid, custody = _opened(tmp_path, None)
    message = tmp_path / "msg.txt"
    message.write_text("hello")
    run = _reply(out, sid, message, tmp_path / "outbox", custody)
    assert run.status == ExitStatus.ERROR
    assert "no way to reply to its witness" in run.err and "Traceback" not in run.err
    assert not (tmp_path / "outbox").exists()


@pytest.mark.parametrize(
    ("content", "said"),
    [(b"", "is empty"), (b"\xff\xfe bad", "not UTF-8"), (b"x" * 70_000, "at most")],
)
def test_a_bad_message_file_is_refused_in_one_line(
    tmp_path: Path, content: bytes, said: str
) -> None:
    out, sid, custody = _opened(tmp_path, str(X25519Identity.generate().recipient))
    message = tmp_path / "msg.txt"
    message.write_bytes(content)
    run = _reply(out, sid, message, tmp_path / "outbox", custody)
    assert run.status == ExitStatus.ERROR and said in run.err
    assert len(run.err.strip().splitlines()) == 1
    assert not (tmp_path / "outbox").exists()


def test_an_opened_submission_changed_since_is_not_answered(tmp_path: Path) -> None:
    out, sid, custody = _opened(tmp_path, str(X25519Identity.generate().recipient))
    manifest = out / sid / "testimony.json"
    manifest.chmod(0o600)
    manifest.write_text(manifest.read_text().replace('"t"', '"T"'))
    message = tmp_path / "msg.txt"
    message.write_text("hello")
    run = _reply(out, sid, message, tmp_path / "outbox", custody)
    assert run.status == ExitStatus.INTEGRITY and "Nothing was written" in run.err
    assert not (tmp_path / "outbox").exists()


def test_an_unknown_submission_is_named(tmp_path: Path) -> None:
    out, _sid, custody = _opened(tmp_path, str(X25519Identity.generate().recipient))
    message = tmp_path / "msg.txt"
    message.write_text("hello")
    run = _reply(out, "A" * 24, message, tmp_path / "outbox", custody)
    assert run.status == ExitStatus.ERROR and "open it first" in run.err


def _manifest(**changes: object) -> bytes:
    recipient = str(X25519Identity.generate().recipient)
    document = json.loads(
        build_manifest("A" * 24, {"testimony": "t"}, "en", [], reply_to=recipient)
    )
    document.update(changes)
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


@pytest.mark.parametrize(
    "changes",
    [
        {"thread": "0" * 64},
        {"thread": None},
        {"reply_to": "age1notarecipient"},
        {"reply_to": 5},
        {"format": "testimony-portal/submission/1"},
        {"reply_to": None},
    ],
)
def test_the_reviewer_refuses_a_thread_that_does_not_match_its_recipient(
    changes: dict[str, object],
) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(_manifest(**changes))


def test_the_reviewer_reads_both_manifest_versions() -> None:
    manifest = parse_manifest(_manifest())
    assert manifest.reply_to is not None and manifest.thread == thread_id(manifest.reply_to)
    old = json.loads(_manifest(reply_to=None, thread=None))
    old["format"] = "testimony-portal/submission/1"
    v1 = parse_manifest(json.dumps(old).encode())
    assert v1.reply_to is None and len(v1.thread) == 64
