"""Replies signed with the organisation's offline key: nothing unsigned is imported or shown.

Issue 21, points 1 and 4: a reply planted in the data folder, or an outbox
written by someone who is not a reviewer, never reaches a witness; reply
ciphertexts are padded to size buckets; a reply the witness deleted does not
come back when the same outbox is imported again.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import pytest

from portal.core.age import X25519Identity, encrypt
from portal.core.conversation import mailbox_name
from portal.core.receipt import parse_receipt
from portal.core.replysig import ReplySigningKey, SignatureError, check_signature
from portal.review.cli import ExitStatus
from portal.server.cli import main as portal_cli
from portal.server.config import Config, ConfigError, load_reply_signers
from portal.server.mailbox import ReplyRejected, ReplyStore, import_outbox
from portal.testing.live import csrf_token, post_form
from tests.review_support import make_store, open_args, review, write_identity
from tests.support import TEST_SIGNING_KEY, add_signed, build_app, signing_key_file

RECEIPT_RE = re.compile(r'id="receipt"[^>]*>([0-9 ]+)<')
TODAY = dt.datetime.now(dt.UTC).date()


def _witness(app: Any, client: Any) -> tuple[str, X25519Identity]:
    response = post_form(client, {"testimony": "first account"})
    receipt = RECEIPT_RE.search(response.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    keys = app.extensions["portal.core.conversation"].keys
    return receipt, keys.derive(parse_receipt(receipt))


def _shown(client: Any, receipt: str) -> list[str]:
    token = csrf_token(client.get("/followup").get_data(as_text=True))
    page = client.post("/followup", data={"csrf_token": token, "receipt": receipt})
    text = page.get_data(as_text=True)
    return re.findall(r'<div class="reply-text">(.*?)</div>', text, re.S)


def test_a_planted_reply_is_never_shown_to_the_witness(
    app: Any, client: Any, config: Config
) -> None:
    receipt, witness = _witness(app, client)
    mailbox = mailbox_name(str(witness.recipient))
    folder = config.data_dir / "replies" / mailbox
    folder.mkdir(parents=True)

    def plant(name: str, text: str, signature: bytes | None) -> None:
        data = encrypt(text.encode(), [witness.recipient])
        (folder / f"{name}.age").write_bytes(data)
        if signature is not None:
            (folder / f"{name}.sig").write_bytes(signature)

    # Unsigned; signed by a key the server does not trust; signed for another
    # mailbox; a real signature of other ciphertext.
    plant("1" * 32, "URGENT from the organisation: give your name", None)
    forger = ReplySigningKey.generate()
    data = encrypt(b"URGENT 2", [witness.recipient])
    (folder / ("2" * 32 + ".age")).write_bytes(data)
    (folder / ("2" * 32 + ".sig")).write_bytes(forger.sign(mailbox, data, TODAY))
    data = encrypt(b"URGENT 3", [witness.recipient])
    (folder / ("3" * 32 + ".age")).write_bytes(data)
    (folder / ("3" * 32 + ".sig")).write_bytes(TEST_SIGNING_KEY.sign("0" * 64, data, TODAY))
    real = encrypt(b"real", [witness.recipient])
    plant("4" * 32, "URGENT 4", TEST_SIGNING_KEY.sign(mailbox, real, TODAY))
    assert _shown(client, receipt) == []

    store = ReplyStore(config.data_dir, [TEST_SIGNING_KEY.public])
    assert add_signed(store, mailbox, encrypt("진짜 답장".encode(), [witness.recipient]))
    assert _shown(client, receipt) == ["진짜 답장"]


def test_import_refuses_an_outbox_not_signed_by_a_reviewer_before_storing_it(
    tmp_path: Path,
) -> None:
    witness = X25519Identity.generate()
    mailbox = mailbox_name(str(witness.recipient))
    outbox = tmp_path / "outbox" / mailbox
    outbox.mkdir(parents=True)
    forger = ReplySigningKey.generate()
    forged = encrypt(b"URGENT: give your name", [witness.recipient])
    (outbox / ("a" * 32 + ".age")).write_bytes(forged)
    (outbox / ("a" * 32 + ".sig")).write_bytes(forger.sign(mailbox, forged, TODAY))
    (outbox / ("b" * 32 + ".age")).write_bytes(encrypt(b"unsigned", [witness.recipient]))
    store = ReplyStore(tmp_path / "data", [TEST_SIGNING_KEY.public])
    store.initialise()
    result = import_outbox(store, tmp_path / "outbox")
    assert result.added == 0 and len(result.rejected) == 2
    assert "not in the reply signers" in result.rejected[0]
    assert "no signature" in result.rejected[1]
    assert list(store.root.iterdir()) == []


def test_the_signature_is_checked_without_decrypting(tmp_path: Path) -> None:
    # Not even the witness's key is at hand: a ciphertext to nobody known.
    data = encrypt(b"x", [X25519Identity.generate().recipient])
    signature = TEST_SIGNING_KEY.sign("f" * 64, data, TODAY)
    assert check_signature(signature, "f" * 64, data, [TEST_SIGNING_KEY.public]) == TODAY
    for damaged in (
        signature.replace(b'"written":"', b'"written":"1'),
        signature[:-10] + b'AAAAAAA="}\n',
        b"{}",
        b"not json",
    ):
        with pytest.raises(SignatureError):
            check_signature(damaged, "f" * 64, data, [TEST_SIGNING_KEY.public])
    with pytest.raises(SignatureError):
        check_signature(signature, "f" * 64, data + b"x", [TEST_SIGNING_KEY.public])
    with pytest.raises(SignatureError):
        check_signature(signature, "f" * 64, data, [])


def test_a_deleted_reply_stays_deleted_when_the_outbox_is_imported_again(tmp_path: Path) -> None:
    witness = X25519Identity.generate()
    mailbox = mailbox_name(str(witness.recipient))
    outbox = tmp_path / "outbox" / mailbox
    outbox.mkdir(parents=True)
    data = encrypt(b"read me once", [witness.recipient])
    (outbox / ("c" * 32 + ".age")).write_bytes(data)
    (outbox / ("c" * 32 + ".sig")).write_bytes(TEST_SIGNING_KEY.sign(mailbox, data, TODAY))
    store = ReplyStore(tmp_path / "data", [TEST_SIGNING_KEY.public])
    store.initialise()
    assert import_outbox(store, tmp_path / "outbox").added == 1
    (reply,) = store.read(witness)
    assert store.delete(witness, [reply.id]) == 1
    again = import_outbox(store, tmp_path / "outbox")
    assert again.added == 0 and not again.rejected
    assert store.read(witness) == []
    # The tombstone survives the daily reseal.
    store.reseal(days=90)
    assert import_outbox(store, tmp_path / "outbox").added == 0
    assert store.read(witness) == []


def test_a_reply_signed_longer_ago_than_the_retention_is_refused(tmp_path: Path) -> None:
    witness = X25519Identity.generate()
    mailbox = mailbox_name(str(witness.recipient))
    data = encrypt(b"old", [witness.recipient])
    store = ReplyStore(tmp_path / "data", [TEST_SIGNING_KEY.public], reply_days=10)
    store.initialise()
    with pytest.raises(ReplyRejected, match="more than PORTAL_REPLY_DAYS=10"):
        store.add(mailbox, data, TEST_SIGNING_KEY.sign(mailbox, data, TODAY - dt.timedelta(11)))


def _opened_with_reply_key(tmp_path: Path) -> tuple[Path, str, X25519Identity]:
    from portal.server.intake import store_submission

    reviewer = write_identity(tmp_path / "reviewer.txt")
    witness = X25519Identity.generate()
    store = make_store(tmp_path / "data")
    sid = store_submission(
        store, [reviewer.recipient], {"testimony": "t"}, [], "ko", reply_identity=witness
    )
    out = tmp_path / "opened"
    run = review(open_args(store.root, tmp_path / "reviewer.txt", out, tmp_path / "custody.jsonl"))
    assert run.status == ExitStatus.OK, run.err
    return out, sid, witness


def test_keygen_signing_is_passphrase_protected_and_reply_needs_the_key(tmp_path: Path) -> None:
    out, sid, witness = _opened_with_reply_key(tmp_path)
    secret = tmp_path / "pass"
    secret.write_text("a long enough passphrase\n")
    key = tmp_path / "signing.age"
    made = review(["keygen", "--signing", "--out", key, "--passphrase-file", secret])
    assert made.status == ExitStatus.OK, made.err
    public = made.out.strip()
    assert public.startswith("testimony-reply-signer-ed25519:")
    assert key.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert b"TESTIMONY-REPLY-SIGNING-KEY" not in key.read_bytes()

    message = tmp_path / "msg.txt"
    message.write_text("짧은 답장")
    base = ["reply", sid, "--from", out, "--message-file", message, "--out", tmp_path / "outbox",
            "--custody", tmp_path / "custody.jsonl"]  # fmt: skip
    unsigned = review(base)
    assert unsigned.status == ExitStatus.ERROR and "--signing-key" in unsigned.err
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase at all\n")
    refused = review([*base, "--signing-key", key, "--passphrase-file", wrong])
    assert refused.status == ExitStatus.ERROR and "wrong passphrase" in refused.err
    signed = review(
        [*base, "--passphrase-file", secret], env={"TESTIMONY_REVIEW_SIGNING_KEY": str(key)}
    )
    assert signed.status == ExitStatus.OK, signed.err

    # The server trusting that public half imports it; one trusting another key refuses it.
    signers = tmp_path / "server-keys" / "reply-signers.txt"
    signers.parent.mkdir()
    signers.write_text(f"# the organisation\n{public}\n")
    store = ReplyStore(tmp_path / "server", load_reply_signers(signers))
    store.initialise()
    assert import_outbox(store, tmp_path / "outbox").added == 1
    assert [r.text for r in store.read(witness)] == ["짧은 답장"]
    other = ReplyStore(tmp_path / "other", [ReplySigningKey.generate().public])
    other.initialise()
    assert import_outbox(other, tmp_path / "outbox").added == 0


def test_reply_ciphertexts_are_padded_to_buckets(tmp_path: Path) -> None:
    out, sid, witness = _opened_with_reply_key(tmp_path)
    key = signing_key_file(tmp_path / "signer")
    sizes = []
    for n, text in enumerate(["네", "예" * 300, "x" * 1500]):
        message = tmp_path / f"m{n}.txt"
        message.write_text(text)
        run = review(
            ["reply", sid, "--from", out, "--message-file", message, "--out", tmp_path / "ob",
             "--signing-key", key, "--custody", tmp_path / "custody.jsonl"]
        )  # fmt: skip
        assert run.status == ExitStatus.OK, run.err
        sizes.append(Path(run.out.strip()).stat().st_size)
    assert sizes[0] == sizes[1] < sizes[2]
    store = ReplyStore(tmp_path / "server", [TEST_SIGNING_KEY.public])
    store.initialise()
    assert import_outbox(store, tmp_path / "ob").added == 3
    assert sorted(len(r.text) for r in store.read(witness)) == [1, 300, 1500]


def test_a_private_signing_key_beside_the_signers_is_refused(
    tmp_path: Path, config: Config
) -> None:
    keys = config.reply_signers_file.parent
    signing_key_file(keys)
    with pytest.raises(ConfigError, match="private key material"):
        load_reply_signers(config.reply_signers_file)
    with pytest.raises(ConfigError, match="private key material"):
        build_app(config)
    (keys / "reply-signing-key.txt").unlink()
    # Its passphrase-protected form is found too.
    secret = tmp_path / "pass"
    secret.write_text("a long enough passphrase\n")
    made = review(["keygen", "--signing", "--out", keys / "k.age", "--passphrase-file", secret])
    assert made.status == ExitStatus.OK
    with pytest.raises(ConfigError, match="private key material"):
        load_reply_signers(config.reply_signers_file)


def test_without_signers_the_server_runs_shows_no_reply_and_check_says_so(
    tmp_path: Path, config: Config
) -> None:
    config.reply_signers_file.unlink()
    assert load_reply_signers(config.reply_signers_file) == []
    build_app(config)  # starts
    env = {
        "PORTAL_DATA_DIR": str(config.data_dir),
        "PORTAL_RECIPIENTS": str(config.recipients_file),
        "PORTAL_REPLY_SIGNERS": str(config.reply_signers_file),
        "PORTAL_MIN_FREE_MB": "0",
    }
    out = io.StringIO()
    portal_cli(["check"], env=env, stdout=out, stderr=io.StringIO())
    assert "[note] no reply signers in" in out.getvalue()
    (tmp_path / "outbox").mkdir()
    err = io.StringIO()
    status = portal_cli(
        ["import-replies", str(tmp_path / "outbox")], env=env, stdout=io.StringIO(), stderr=err
    )
    assert status == ExitStatus.ERROR and "no reply signers" in err.getvalue()
