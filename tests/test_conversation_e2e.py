"""The whole conversation through a real server: receipt, reply written offline, follow-up."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from portal.review.cli import ExitStatus
from portal.server.store import SubmissionStore
from portal.testing.live import RECEIVED_MARKERS, LiveServer
from tests.conversation_support import (
    export,
    import_replies,
    open_followup,
    receipt_of,
    replies_on,
    send_followup,
)
from tests.review_support import open_args, review
from tests.support import signing_key_file

PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 400
DOCUMENT = b"%PDF-1.4\n" + b"second file " * 3000
REPLY = "증언해 주셔서 감사합니다. 그 수용소의 위치를 더 자세히 알려주실 수 있습니까?\n두 번째 줄."


def test_korean_witness_gets_a_reply_and_sends_more_in_one_thread(
    live_server: LiveServer, tmp_path: Path
) -> None:
    client = live_server.client()
    first = client.submit(
        "평양 근처 교화소에서 본 일을 증언합니다.", [("사진.jpg", PHOTO, "image/jpeg")], "ko"
    )
    assert first.status == 200 and any(m in first.body for m in RECEIVED_MARKERS)
    receipt = receipt_of(first.body)
    # What arrived is listed so the witness can prove it later.
    assert hashlib.sha256(PHOTO).hexdigest() in first.body and "사진.jpg" in first.body
    assert first.headers["cache-control"] == "no-store"

    # Export, and open on the "air-gapped" side.
    usb, out, custody = tmp_path / "usb", tmp_path / "opened", tmp_path / "custody.jsonl"
    export(live_server.data_dir, usb)
    run = review(open_args(usb, live_server.identity_file, out, custody))
    assert run.status == ExitStatus.OK, run.err
    (first_id,) = [p.name for p in out.iterdir() if p.is_dir()]

    # The reviewer writes a reply in Korean; the outbox may already exist.
    message = tmp_path / "reply.txt"
    message.write_text(REPLY, "utf-8")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    run = review(
        ["reply", first_id, "--from", out, "--message-file", message, "--out", outbox,
         "--custody", custody, "--reviewer", "Test Reviewer",
         "--signing-key", signing_key_file(Path(str(custody)).parent / "signer")]
    )  # fmt: skip
    assert run.status == ExitStatus.OK, run.err
    entries = [json.loads(line) for line in custody.read_text().splitlines()]
    assert entries[-1]["action"] == "reply" and entries[-1]["submission"] == first_id

    # The server imports it (twice: the second time stores nothing new).
    status, said, _err = import_replies(live_server.data_dir, outbox)
    assert status == 0 and said.startswith("1 reply(ies) imported")
    status, said, _err = import_replies(live_server.data_dir, outbox)
    assert status == 0 and said.startswith("0 reply(ies) imported, 1 already here")

    # The witness types the receipt (with other spacing) and reads the reply.
    page = open_followup(client, receipt.replace(" ", "-"), "ko")
    assert page.status == 200
    assert replies_on(page.body) == [REPLY]

    # ... and sends more, with another file, from the same page.
    more = send_followup(
        client,
        page.body,
        "수용소는 강 건너편에 있었습니다.",
        [("지도.pdf", DOCUMENT, "application/pdf")],
        "ko",
    )
    assert more.status == 200 and any(m in more.body for m in RECEIVED_MARKERS), more.body
    assert hashlib.sha256(DOCUMENT).hexdigest() in more.body
    assert 'id="receipt"' not in more.body  # the receipt stays the one they have

    export(live_server.data_dir, usb)
    run = review(open_args(usb, live_server.identity_file, out, custody))
    assert run.status == ExitStatus.OK, run.err
    ids = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "replies")
    assert len(ids) == 2 and first_id in ids
    manifests = [json.loads((out / sid / "testimony.json").read_text("utf-8")) for sid in ids]
    threads = {m["thread"] for m in manifests}
    assert len(threads) == 1 and all(isinstance(t, str) and t for t in threads)

    # The overview shows the conversation: both submissions and the reply, together.
    index = (out / "index.html").read_text("utf-8")
    (thread,) = threads
    start = index.index(f'id="thread-{thread[:16]}"')
    section = index[start:]
    assert "2 submission(s), 1 reply(ies) sent" in section[:300]
    assert all(sid in section for sid in ids)
    assert "그 수용소의 위치를" in section
    assert section.index("그 수용소의 위치를") < max(section.index(sid) for sid in ids)
    # The reply's custody entry and its copy do not disturb a later check.
    run = review(
        [
            "verify",
            out,
            "--custody",
            custody,
        ]
    )
    assert run.status == ExitStatus.OK, run.err


def test_another_receipt_is_another_thread_and_sees_no_reply(
    live_server: LiveServer, tmp_path: Path
) -> None:
    client = live_server.client()
    receipts = [receipt_of(client.submit(f"account {n}", [], "en").body) for n in range(2)]
    assert receipts[0] != receipts[1]
    usb, out, custody = tmp_path / "usb", tmp_path / "opened", tmp_path / "custody.jsonl"
    export(live_server.data_dir, usb)
    assert review(open_args(usb, live_server.identity_file, out, custody)).status == 0
    by_text = {}
    for folder in out.iterdir():
        if folder.is_dir():
            manifest = json.loads((folder / "testimony.json").read_text("utf-8"))
            by_text[manifest["fields"]["testimony"]] = (folder.name, manifest["thread"])
    assert by_text["account 0"][1] != by_text["account 1"][1]

    message = tmp_path / "reply.txt"
    message.write_text("Only for the first witness.", "utf-8")
    outbox = tmp_path / "outbox"
    run = review(
        ["reply", by_text["account 0"][0], "--from", out, "--message-file", message,
         "--out", outbox, "--custody", custody,
         "--signing-key", signing_key_file(Path(str(custody)).parent / "signer")]
    )  # fmt: skip
    assert run.status == 0, run.err
    assert import_replies(live_server.data_dir, outbox)[0] == 0
    assert replies_on(open_followup(client, receipts[0]).body) == ["Only for the first witness."]
    assert replies_on(open_followup(client, receipts[1]).body) == []
    shutil.rmtree(usb)
    assert SubmissionStore(live_server.data_dir).ids() == []
