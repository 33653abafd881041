"""A follow-up proves it belongs to its conversation (issue 21, point 5).

A witness's reply recipient (`reply_to`, sealed by version 1 receipts'
follow-ups) is not secret. Before this issue a crafted submission that named
it appeared in the witness's thread ("I RETRACT everything") and a reply to
it went to the witness's mailbox. Now the server, holding the witness's key
while they are logged in, signs the follow-up's manifest with it (XEdDSA),
and the reviewer's tools let only a proven `reply_to` join a conversation
or receive a reply.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest

from portal.core import xeddsa
from portal.core.age import X25519Identity
from portal.core.conversation import thread_id
from portal.core.manifest import ManifestError, build_manifest, parse_manifest
from portal.core.receipt import new_receipt, parse_receipt
from portal.review.cli import ExitStatus
from portal.server.config import Config
from portal.server.store import SubmissionStore
from portal.testing.live import csrf_token, form_fields, open_submission
from tests.review_support import craft, make_store, open_args, review, submit, write_identity
from tests.support import signing_key_file


def test_xeddsa_signs_with_an_x25519_key_and_verifies_against_its_recipient() -> None:
    for n in range(64):
        identity = X25519Identity.generate()
        message = os.urandom(n)
        signature = xeddsa.sign(identity, message)
        xeddsa.verify(identity.recipient, message, signature)
        # The Edwards key is the one libsodium maps back to the same u-coordinate.
        edwards = xeddsa.edwards_public_key(identity.recipient)
        assert nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(edwards) == (
            identity.recipient.public_key
        )
        with pytest.raises(xeddsa.XEdDSAError):
            xeddsa.verify(identity.recipient, message + b"x", signature)
        with pytest.raises(xeddsa.XEdDSAError):
            xeddsa.verify(X25519Identity.generate().recipient, message, signature)
        flipped = bytearray(signature)
        flipped[n % 64] ^= 1
        with pytest.raises(xeddsa.XEdDSAError):
            xeddsa.verify(identity.recipient, message, bytes(flipped))


def test_a_manifest_that_only_names_a_recipient_does_not_join_its_thread() -> None:
    witness = X25519Identity.generate()
    genuine = parse_manifest(
        build_manifest("A" * 24, {"testimony": "t"}, "ko", [], reply_identity=witness)
    )
    assert genuine.reply_proven and genuine.thread == thread_id(str(witness.recipient))
    assert genuine.reply_recipient() == str(witness.recipient)
    forged = parse_manifest(
        build_manifest(
            "B" * 24, {"testimony": "I RETRACT"}, "ko", [], reply_to=str(witness.recipient)
        )
    )
    assert not forged.reply_proven and forged.thread != genuine.thread
    assert forged.reply_recipient() is None
    # The genuine proof copied into another manifest does not verify.
    document = json.loads(build_manifest("B" * 24, {"testimony": "I RETRACT"}, "ko", []))
    document.update(
        reply_to=str(witness.recipient),
        thread=thread_id(str(witness.recipient)),
        reply_proof=genuine.reply_proof,
    )
    with pytest.raises(ManifestError, match="reply_proof"):
        parse_manifest(json.dumps(document).encode())


def test_the_forged_thread_is_shown_apart_and_gets_no_reply(tmp_path: Path) -> None:
    reviewer = write_identity(tmp_path / "id.txt")
    witness = X25519Identity.generate()
    store = make_store(tmp_path / "data")
    genuine = submit(store, [reviewer], "제가 본 일입니다.", reply_identity=witness)
    forged = craft(
        store,
        reviewer.recipient,
        lambda sid, atts: build_manifest(
            sid, {"testimony": "I RETRACT everything"}, "ko", atts, reply_to=str(witness.recipient)
        ),
    )
    out, custody = tmp_path / "out", tmp_path / "custody.jsonl"
    run = review(open_args(store.root, tmp_path / "id.txt", out, custody))
    assert run.status == ExitStatus.OK, run.err
    records = {
        sid: json.loads((out / sid / "opened.json").read_text()) for sid in (genuine, forged)
    }
    assert records[genuine]["thread"] == thread_id(str(witness.recipient))
    assert records[forged]["thread"] != records[genuine]["thread"]

    message = tmp_path / "m.txt"
    message.write_text("철회하신다는 말씀입니까?")
    key = signing_key_file(tmp_path / "signer")

    def reply(sid: str) -> Any:
        return review(
            ["reply", sid, "--from", out, "--message-file", message, "--out", tmp_path / "outbox",
             "--custody", custody, "--signing-key", key]
        )  # fmt: skip

    refused = reply(forged)
    assert refused.status == ExitStatus.INTEGRITY and refused.err.count("\n") == 1
    assert "without the witness's proof" in refused.err
    assert not (tmp_path / "outbox").exists()
    assert reply(genuine).status == ExitStatus.OK


def test_a_version_1_follow_up_carries_the_witness_proof(
    app: Any, client: Any, config: Config, identity: X25519Identity
) -> None:
    receipt = new_receipt(version=1).display()
    token = csrf_token(client.get("/followup").get_data(as_text=True))
    page = client.post("/followup", data={"csrf_token": token, "receipt": receipt})
    form = page.get_data(as_text=True)
    form = form[form.index('action="/followup/send"') :]
    response = client.post(
        "/followup/send",
        data={**form_fields(form), "receipt": receipt, "testimony": "more", "attachments": []},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    store = SubmissionStore(config.data_dir)
    (sid,) = store.ids()
    document, _files = open_submission(store.path(sid), [identity])
    manifest = parse_manifest(json.dumps(document).encode())
    assert manifest.reply_proven and "reply_proof" in document
    keys = app.extensions["portal.core.conversation"].keys
    assert manifest.reply_to == str(keys.derive(parse_receipt(receipt)).recipient)
