"""Conversation invariants through a real server: nothing derived from a receipt at rest,
no link between two submissions of one witness, replies kept safely and then deleted."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import zlib
from pathlib import Path

from portal.core.age import X25519Identity, encrypt
from portal.core.conversation import mailbox_name, thread_id, thread_of_seed
from portal.core.receipt import parse_receipt
from portal.server.store import SubmissionStore
from portal.testing.live import LiveServer
from tests.conversation_support import (
    export,
    identity_of,
    import_replies,
    open_followup,
    receipt_of,
    replies_on,
    send_followup,
)
from tests.review_support import open_args, review

AGE_CONSTANTS = (b"age-encryption.org/v1\n", b"-> X25519 ", b"\n--- ")


def _files(*roots: Path) -> list[Path]:
    return [
        Path(dirpath) / name
        for root in roots
        for dirpath, _dirs, names in os.walk(root)
        for name in names
    ]


def _session_payload(cookie: str | None) -> bytes:
    if not cookie:
        return b""
    value = cookie.split("=", 1)[1]
    compressed = value.startswith(".")
    payload = value.lstrip(".").split(".")[0]
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return zlib.decompress(data) if compressed else data


def test_nothing_derived_from_a_receipt_is_written_or_logged(live_server: LiveServer) -> None:
    client = live_server.client()
    first = client.submit("first account", [("a.txt", b"alpha", "text/plain")], "ko")
    receipt = receipt_of(first.body)
    page = open_followup(client, receipt, "ko")
    assert page.status == 200 and page.headers["cache-control"] == "no-store"
    assert (
        send_followup(client, page.body, "more", [("b.txt", b"beta", "text/plain")], "ko").status
        == 200
    )
    # A wrong-but-well-formed receipt walks the same path.
    open_followup(client, receipt, "zh")
    assert client.cookie is not None
    live_server.stop()

    identity = identity_of(live_server, receipt)
    recipient = str(identity.recipient)
    digits = parse_receipt(receipt).digits
    secrets_ = {
        "receipt digits": digits.encode(),
        "receipt as shown": receipt.encode(),
        "receipt group": parse_receipt(receipt).groups[2].encode()
        + parse_receipt(receipt).groups[3].encode(),
        "identity": str(identity).encode(),
        "identity (lower case)": str(identity).lower().encode(),
        "recipient": recipient.encode(),
        "mailbox": mailbox_name(recipient).encode(),
        "thread": thread_id(recipient).encode(),
        # Version 2 receipts: the seed and its thread are sealed, never in the clear.
        "seed": parse_receipt(receipt).seed().hex().encode(),
        "seed (raw)": parse_receipt(receipt).seed(),
        "thread of the seed": thread_of_seed(parse_receipt(receipt).seed()).encode(),
    }
    for path in _files(live_server.data_dir, live_server.tmp_dir) + [live_server.log_path]:
        data = path.read_bytes()
        for what, value in secrets_.items():
            assert value not in data, f"{what} found in {path}"
    # No mailbox exists until a reply is imported.
    assert list((live_server.data_dir / "replies").iterdir()) == []
    # The session cookie carries the CSRF token only.
    session = _session_payload(client.cookie)
    assert digits.encode() not in session and b"receipt" not in session
    assert set(json.loads(session)) == {"csrf_token"}


def _shingles(data: bytes, size: int = 12) -> set[bytes]:
    for constant in AGE_CONSTANTS:
        data = data.replace(constant, b"\x00")
    return {data[i : i + size] for i in range(len(data) - size + 1)} - {b"\x00" * size}


def test_two_submissions_of_one_receipt_share_nothing_visible_at_rest(
    live_server: LiveServer,
) -> None:
    client = live_server.client()
    receipt = receipt_of(client.submit("one", [("same.jpg", b"x" * 5000, "image/jpeg")]).body)
    page = open_followup(client, receipt)
    assert (
        send_followup(client, page.body, "two", [("same.jpg", b"x" * 5000, "image/jpeg")]).status
        == 200
    )
    store = SubmissionStore(live_server.data_dir)
    first, second = (store.path(i) for i in store.ids())
    assert first.name != second.name
    names = [sorted(p.relative_to(d).as_posix() for p in _files(d)) for d in (first, second)]
    assert names[0] == names[1] == ["files/1.age", "testimony.age"]
    for rel in names[0]:
        a, b = (d / rel for d in (first, second))
        assert not (_shingles(a.read_bytes()) & _shingles(b.read_bytes())), rel
        assert a.stat().st_mtime == b.stat().st_mtime  # the day, like every submission's
        assert a.stat().st_mtime % 86400 == 0


def _reply_setup(live_server: LiveServer, tmp_path: Path) -> tuple[str, Path, Path]:
    client = live_server.client()
    receipt = receipt_of(client.submit("account", []).body)
    usb, out, custody = tmp_path / "usb", tmp_path / "opened", tmp_path / "custody.jsonl"
    export(live_server.data_dir, usb)
    assert review(open_args(usb, live_server.identity_file, out, custody)).status == 0
    (sid,) = [p.name for p in out.iterdir() if p.is_dir()]
    message = tmp_path / "reply.txt"
    message.write_text("回复：谢谢。", "utf-8")
    outbox = tmp_path / "outbox"
    run = review(
        ["reply", sid, "--from", out, "--message-file", message, "--out", outbox,
         "--custody", custody]
    )  # fmt: skip
    assert run.status == 0, run.err
    return receipt, outbox, out


def test_replies_survive_export_and_import_round_trips(
    live_server: LiveServer, tmp_path: Path
) -> None:
    receipt, outbox, _out = _reply_setup(live_server, tmp_path)
    (sent,) = _files(outbox)
    assert import_replies(live_server.data_dir, outbox)[0] == 0
    (stored,) = _files(live_server.data_dir / "replies")
    assert stored.read_bytes() == sent.read_bytes()
    assert stored.stat().st_mtime % 86400 == 0 and stored.stat().st_mode & 0o777 == 0o600
    # The outbox can be carried again (a copy of a copy): nothing doubles.
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(outbox, copy)
    assert import_replies(live_server.data_dir, copy)[1].startswith("0 reply(ies) imported")
    # Exporting and purging submissions leaves the replies where witnesses read them.
    client = live_server.client()
    client.submit("another account", [])
    export(live_server.data_dir, tmp_path / "usb2")
    assert _files(live_server.data_dir / "replies") == [stored]
    assert replies_on(open_followup(client, receipt).body) == ["回复：谢谢。"]


def test_replies_older_than_the_retention_period_are_deleted(
    live_server: LiveServer, tmp_path: Path
) -> None:
    receipt, outbox, _out = _reply_setup(live_server, tmp_path)
    assert import_replies(live_server.data_dir, outbox, PORTAL_REPLY_DAYS="10")[0] == 0
    (stored,) = _files(live_server.data_dir / "replies")
    nine_days = (dt.datetime.now(dt.UTC) - dt.timedelta(days=9)).timestamp()
    os.utime(stored, (nine_days, nine_days))
    assert (
        "0 older than PORTAL_REPLY_DAYS=10 deleted"
        in import_replies(live_server.data_dir, outbox, PORTAL_REPLY_DAYS="10")[1]
    )
    assert stored.exists()
    eleven_days = (dt.datetime.now(dt.UTC) - dt.timedelta(days=11)).timestamp()
    os.utime(stored, (eleven_days, eleven_days))
    empty = tmp_path / "empty-outbox"
    empty.mkdir()
    status, said, _ = import_replies(live_server.data_dir, empty, PORTAL_REPLY_DAYS="10")
    assert status == 0 and "1 older than PORTAL_REPLY_DAYS=10 deleted" in said
    assert not stored.exists()
    assert replies_on(open_followup(live_server.client(), receipt).body) == []


def test_import_refuses_what_is_not_a_reply_and_keeps_the_rest(
    live_server: LiveServer, tmp_path: Path
) -> None:
    _receipt, outbox, _out = _reply_setup(live_server, tmp_path)
    box = next(outbox.iterdir())
    (box / "junk.age").write_bytes(b"not age at all")
    (box / "big.age").write_bytes(b"age-encryption.org/v1\n" + bytes(300 * 1024))
    two = [X25519Identity.generate().recipient for _ in range(2)]
    (box / "two.age").write_bytes(encrypt(b"to two", two))
    (outbox / "not-a-mailbox").mkdir()
    (outbox / "loose.age").write_bytes(b"x")
    status, said, err = import_replies(live_server.data_dir, outbox)
    assert status == 1 and said.startswith("1 reply(ies) imported, 0 already here, 5 refused")
    for name in ("junk.age: not an age file", "big.age: larger than", "two.age: not addressed",
                 "not-a-mailbox: not a mailbox", "loose.age: not a mailbox"):  # fmt: skip
        assert name in err, err
    assert "Traceback" not in err
    assert len(_files(live_server.data_dir / "replies")) == 1
    status, _said, err = import_replies(live_server.data_dir, tmp_path / "nowhere")
    assert status == 1 and "no outbox folder" in err
