"""The follow-up page and the receipt's keys, in process: typo check, no oracle, costs."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import pytest

from portal.core.age import X25519Identity, encrypt
from portal.core.conversation import mailbox_name
from portal.core.receipt import new_receipt, parse_receipt
from portal.core.replykey import KdfCost, ReplyKey
from portal.server import mailbox
from portal.server.config import Config
from portal.server.mailbox import (
    DEFAULT_COST,
    MailboxError,
    ReceiptKeys,
    ReplyStore,
    configured_cost,
    derive_identity,
    ensure_salt,
)
from portal.testing.live import csrf_token, form_fields, post_form

RECEIPT_RE = re.compile(r'id="receipt"[^>]*>([0-9 ]+)<')


def _keys(app: Any) -> ReceiptKeys:
    keys: ReceiptKeys = app.extensions["portal.core.conversation"].keys
    return keys


def _submit(client: Any, text: str = "first account") -> str:
    response = post_form(client, {"testimony": text})
    assert response.status_code == 200
    match = RECEIPT_RE.search(response.get_data(as_text=True))
    assert match is not None, "no receipt on the page"
    return match.group(1)


def _followup(client: Any, receipt: str, lang: str = "en") -> Any:
    path = "/followup" if lang == "en" else f"/{lang}/followup"
    token = csrf_token(client.get(path).get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, "receipt": receipt})


def _structure(page: str) -> str:
    """The page with every value that differs per request or per receipt blanked."""
    page = re.sub(r'value="[^"]*"', 'value=""', page)
    return page


def test_a_typo_is_caught_before_any_key_derivation(app: Any, client: Any) -> None:
    receipt = _submit(client)
    keys = _keys(app)
    before = keys.derivations
    digits = receipt.replace(" ", "")
    typos = [digits[:7] + str((int(digits[7]) + 1) % 10) + digits[8:]]
    swap = next(i for i in range(29) if digits[i] != digits[i + 1])
    typos.append(digits[:swap] + digits[swap + 1] + digits[swap] + digits[swap + 2 :])
    typos.append(digits[:-1])
    for lang in ("en", "ko", "zh"):
        for typo in typos:
            response = _followup(client, typo, lang)
            page = response.get_data(as_text=True)
            assert response.status_code == 400
            assert 'role="alert"' in page and 'aria-invalid="true"' in page
            assert 'class="reply"' not in page and "followup/send" not in page
    assert keys.derivations == before
    # The real receipt does reach the derivation.
    assert _followup(client, receipt).status_code == 200
    assert keys.derivations == before + 1


def test_a_wrong_receipt_gets_the_same_page_as_an_empty_mailbox(app: Any, client: Any) -> None:
    real = _submit(client)
    guessed = new_receipt().display()
    real_page = _followup(client, real).get_data(as_text=True)
    guessed_page = _followup(client, guessed).get_data(as_text=True)
    assert real in real_page and guessed in guessed_page
    assert _structure(real_page) == _structure(guessed_page)
    assert 'class="reply"' not in real_page


def test_the_follow_up_page_needs_csrf_and_post(client: Any) -> None:
    receipt = new_receipt().display()
    assert client.post("/followup", data={"receipt": receipt}).status_code == 400
    digits = receipt.replace(" ", "")
    page = client.get("/followup?receipt=" + digits)
    assert page.status_code == 200 and digits not in page.get_data(as_text=True)
    page = client.get("/ko/followup").get_data(as_text=True)
    assert 'name="receipt"' in page and 'method="post"' in page


def test_replies_are_shown_deleted_on_request_and_only_to_their_witness(
    app: Any, client: Any, config: Config
) -> None:
    receipt = _submit(client)
    identity = _keys(app).derive(parse_receipt(receipt))
    store = ReplyStore(config.data_dir)
    text = "<b>답장</b> 回复"
    assert store.add(
        mailbox_name(str(identity.recipient)), encrypt(text.encode(), [identity.recipient])
    )
    page = _followup(client, receipt, "zh").get_data(as_text=True)
    assert page.count('class="reply"') == 1
    assert "&lt;b&gt;답장&lt;/b&gt; 回复" in page
    # A file planted in the mailbox that does not decrypt is not shown.
    planted = store.root / mailbox_name(str(identity.recipient)) / ("0" * 32 + ".age")
    planted.write_bytes(encrypt(b"forged", [X25519Identity.generate().recipient]))
    assert _followup(client, receipt).get_data(as_text=True).count('class="reply"') == 1

    form = page[page.index('action="/zh/followup/delete"') :]
    token = csrf_token(form)
    ids_match = re.search(r'name="replies" value="([^"]*)"', form)
    receipt_match = re.search(r'name="receipt" value="([^"]*)"', form)
    assert ids_match is not None and receipt_match is not None
    ids, hidden_receipt = ids_match.group(1), receipt_match.group(1)
    deleted = client.post(
        "/zh/followup/delete",
        data={"csrf_token": token, "receipt": hidden_receipt, "replies": ids},
    )
    assert deleted.status_code == 200
    assert 'class="reply"' not in deleted.get_data(as_text=True)
    assert [p.name for p in planted.parent.iterdir()] == [planted.name]


def test_a_follow_up_is_an_independent_submission_carrying_the_same_recipient(
    app: Any, client: Any, config: Config, identity: X25519Identity
) -> None:
    from portal.server.store import SubmissionStore
    from portal.testing.live import open_submission

    receipt = _submit(client)
    page = _followup(client, receipt).get_data(as_text=True)
    form = page[page.index('action="/followup/send"') :]
    response = client.post(
        "/followup/send",
        data={
            **form_fields(form),
            "receipt": receipt,
            "testimony": "more",
            "attachments": [(io.BytesIO(b"second file"), "b.txt", "text/plain")],
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    store = SubmissionStore(config.data_dir)
    manifests = [open_submission(store.path(i), [identity])[0] for i in store.ids()]
    assert len(manifests) == 2
    assert manifests[0]["id"] != manifests[1]["id"]
    # A version 2 receipt: both seal its seed, salt and cost, and no recipient.
    assert "reply_to" not in manifests[0] and "reply_to" not in manifests[1]
    assert manifests[0]["reply_key"] == manifests[1]["reply_key"]
    assert manifests[0]["thread"] == manifests[1]["thread"]
    # The sealed key derives the identity the witness's login derives.
    expected = str(_keys(app).derive(parse_receipt(receipt)).recipient)
    assert ReplyKey.from_json(manifests[0]["reply_key"]).recipient() == expected


def test_a_submission_runs_no_key_derivation(app: Any, client: Any) -> None:
    # Issue 25: argon2id is off the submission path; the follow-up login still runs it.
    keys = _keys(app)
    receipt = _submit(client)
    assert keys.derivations == 0
    _followup(client, receipt)
    assert keys.derivations == 1


def test_a_version_1_receipt_keeps_its_identity_and_its_conversation(
    app: Any, client: Any, config: Config, identity: X25519Identity
) -> None:
    # Receipts issued before version 2 derive the same identity as before
    # (argon2id over the digits), and their follow-ups seal that recipient.
    from portal.server.store import SubmissionStore
    from portal.testing.live import open_submission

    old = new_receipt(version=1)
    assert parse_receipt(old.display()) == old
    keys = _keys(app)
    salt = ensure_salt(config.data_dir)
    before = argon2id.kdf(
        32,
        b"testimony-portal/receipt-identity/1\x00" + old.digits.encode(),
        salt,
        opslimit=keys.cost.opslimit,
        memlimit=keys.cost.memlimit,
    )
    assert str(keys.derive(old)) == str(X25519Identity(before))
    page = _followup(client, old.display()).get_data(as_text=True)
    form = page[page.index('action="/followup/send"') :]
    response = client.post(
        "/followup/send",
        data={**form_fields(form), "receipt": old.display(), "testimony": "more"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    store = SubmissionStore(config.data_dir)
    [manifest] = [open_submission(store.path(i), [identity])[0] for i in store.ids()]
    assert manifest["reply_to"] == str(X25519Identity(before).recipient)
    assert "reply_key" not in manifest


def test_a_follow_up_with_a_bad_receipt_stores_nothing(client: Any, config: Config) -> None:
    from tests.support import assert_nothing_kept

    page = _followup(client, new_receipt().display()).get_data(as_text=True)
    response = client.post(
        "/followup/send",
        data={
            **form_fields(page),
            "receipt": "123",
            "testimony": "more",
            "attachments": [(io.BytesIO(b"file"), "b.txt", "text/plain")],
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert_nothing_kept(config.data_dir)


@pytest.mark.production_kdf
def test_production_cost_is_the_measured_one_and_derives_the_documented_identity(
    tmp_path: Path,
) -> None:
    assert KdfCost(opslimit=2, memlimit=19 * 1024 * 1024) == DEFAULT_COST
    config = Config.from_env({"PORTAL_DATA_DIR": str(tmp_path)})
    assert configured_cost(config.receipt_kdf_ops, config.receipt_kdf_memory_kib) == DEFAULT_COST
    receipt = new_receipt(version=1)
    salt = bytes(range(16))
    expected = argon2id.kdf(
        32,
        b"testimony-portal/receipt-identity/1\x00" + receipt.digits.encode(),
        salt,
        opslimit=2,
        memlimit=19 * 1024 * 1024,
    )
    assert str(derive_identity(receipt, salt, DEFAULT_COST)) == str(X25519Identity(expected))
    # Version 2: argon2id over the seed, one SHA-256 of the digits.
    current = new_receipt()
    seed = hashlib.sha256(b"testimony-portal/receipt-seed/2\x00" + current.digits.encode()).digest()
    expected = argon2id.kdf(
        32, b"testimony-portal/receipt-identity/1\x00" + seed, salt, opslimit=2, memlimit=19 << 20
    )
    assert str(derive_identity(current, salt, DEFAULT_COST)) == str(X25519Identity(expected))
    assert str(ReplyKey(seed, salt, DEFAULT_COST).identity()) == str(X25519Identity(expected))


def test_lowered_costs_are_refused_below_argon2id_minimums() -> None:
    with pytest.raises(MailboxError, match="PORTAL_RECEIPT_KDF"):
        configured_cost(1, 4)
    assert configured_cost(2, 1024) == KdfCost(2, 1024 * 1024)


def test_the_salt_is_made_once_kept_private_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    salt = ensure_salt(tmp_path)
    path = tmp_path / mailbox.SALT_NAME
    assert len(salt) == 16 and path.stat().st_mode & 0o777 == 0o600
    assert ensure_salt(tmp_path) == salt
    receipt = new_receipt()
    cost = KdfCost(1, 8 * 1024)
    assert str(derive_identity(receipt, salt, cost)) != str(
        derive_identity(receipt, bytes(16), cost)
    )
    path.write_text("not hex\n")
    with pytest.raises(MailboxError, match="Restore it from your backup"):
        ensure_salt(tmp_path)


def test_concurrent_derivations_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    real = mailbox.derive_identity

    def counting(*args: Any) -> X25519Identity:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        try:
            return real(*args)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(mailbox, "derive_identity", counting)
    keys = ReceiptKeys(bytes(16), KdfCost(1, 8 * 1024), concurrency=2)
    threads = [threading.Thread(target=keys.derive, args=(new_receipt(),)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert keys.derivations == 8 and peak == 2


def test_a_damaged_salt_stops_the_server_with_the_fix(config: Config) -> None:
    from portal.server.config import ConfigError
    from portal.server.web import create_app

    create_app(config)
    (config.data_dir / mailbox.SALT_NAME).write_text("damaged\n")
    with pytest.raises(ConfigError, match="Restore it from your backup"):
        create_app(config)


def test_a_repeated_follow_up_form_is_stored_once(client: Any, config: Config) -> None:
    from portal.server.store import SubmissionStore

    receipt = _submit(client)
    page = _followup(client, receipt).get_data(as_text=True)
    form = page[page.index('action="/followup/send"') :]
    data = {**form_fields(form), "receipt": receipt, "testimony": "more, once"}
    answers = [
        client.post("/followup/send", data=dict(data), content_type="multipart/form-data")
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert "What arrived" in answers[0].get_data(as_text=True)
    assert "What arrived" not in answers[1].get_data(as_text=True)
    assert len(SubmissionStore(config.data_dir).ids()) == 2  # the first one and this one


@pytest.mark.production_kdf
def test_check_names_the_salt_to_back_up_and_the_memory_receipts_need(
    app: Any, config: Config
) -> None:
    from portal.server.cli import main as portal_cli

    out = io.StringIO()
    portal_cli(
        ["check"],
        env={
            "PORTAL_DATA_DIR": str(config.data_dir),
            "PORTAL_RECIPIENTS": str(config.recipients_file),
            "PORTAL_MIN_FREE_MB": "0",
            "PORTAL_RECEIPT_KDF_CONCURRENCY": "3",
        },
        stdout=out,
        stderr=io.StringIO(),
    )
    text = out.getvalue()
    assert f"[ok] receipt salt {config.data_dir / mailbox.SALT_NAME} present: back it up" in text
    assert f"up to {3 * mailbox.DEFAULT_COST.memlimit // 2**20} MiB per worker" in text
