"""Helpers for the conversation tests: receipts, the follow-up page, the reviewer's reply."""

from __future__ import annotations

import html
import io
import os
import re
from pathlib import Path
from urllib.parse import urlencode

from portal.core.age import X25519Identity
from portal.server.cli import main as portal_cli
from portal.testing.live import Client, LiveServer, MultipartBody, Response, csrf_token, form_fields

RECEIPT_RE = re.compile(r'<p class="receipt" id="receipt"[^>]*>([0-9 ]+)</p>')
REPLY_RE = re.compile(r'<article class="reply"[^>]*>.*?<div class="reply-text">(.*?)</div>', re.S)


def receipt_of(page: str) -> str:
    match = RECEIPT_RE.search(page)
    assert match, "no receipt on the page"
    return match.group(1)


def replies_on(page: str) -> list[str]:
    return [html.unescape(text) for text in REPLY_RE.findall(page)]


def followup_path(lang: str, action: str = "") -> str:
    base = "/followup" if lang == "en" else f"/{lang}/followup"
    return base + (f"/{action}" if action else "")


def open_followup(client: Client, receipt: str, lang: str = "en") -> Response:
    page = client.get(followup_path(lang))
    assert page.status == 200, f"no follow-up form ({page.status})"
    body = urlencode({"csrf_token": csrf_token(page.body), "receipt": receipt}).encode()
    return client.request(
        "POST",
        followup_path(lang),
        body=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(len(body)),
        },
    )


def hidden(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no hidden field {name}"
    return html.unescape(match.group(1))


def send_followup(
    client: Client,
    mailbox_page: str,
    text: str,
    files: list[tuple[str, bytes, str]],
    lang: str = "en",
    **answers: str,
) -> Response:
    """Send more testimony from the follow-up page, as its form does (consent `yes` unless
    `answers` says otherwise)."""
    form = mailbox_page[mailbox_page.index('action="' + followup_path(lang, "send")) :]
    fields = {
        **form_fields(form),
        "receipt": hidden(form, "receipt"),
        "testimony": text,
        **answers,
    }
    body = MultipartBody(fields, list(files))
    return client.request(
        "POST",
        followup_path(lang, "send"),
        body=iter(body),
        headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
    )


def delete_replies(client: Client, mailbox_page: str, lang: str = "en") -> Response:
    form = mailbox_page[mailbox_page.index('action="' + followup_path(lang, "delete")) :]
    body = urlencode(
        {
            "csrf_token": csrf_token(form),
            "receipt": hidden(form, "receipt"),
            "replies": hidden(form, "replies"),
        }
    ).encode()
    return client.request(
        "POST",
        followup_path(lang, "delete"),
        body=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(len(body)),
        },
    )


def import_replies(data_dir: Path, outbox: Path, **env: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = portal_cli(
        ["import-replies", str(outbox)],
        env={
            "PORTAL_DATA_DIR": str(data_dir),
            # Where start_server writes the signers it trusts (root/keys beside root/data).
            "PORTAL_REPLY_SIGNERS": str(data_dir.parent / "keys" / "reply-signers.txt"),
            **env,
        },
        stdout=out,
        stderr=err,
    )
    return status, out.getvalue(), err.getvalue()


def export(data_dir: Path, dest: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    status = portal_cli(
        ["export", str(dest), "--purge", "--same-disk"],
        env={"PORTAL_DATA_DIR": str(data_dir)},
        stdout=out,
        stderr=err,
    )
    assert status == 0, err.getvalue()


def identity_of(server: LiveServer, receipt: str) -> X25519Identity:
    """The witness key the server derives from `receipt` (at the tests' low argon2id cost)."""
    from portal.core.receipt import parse_receipt
    from portal.server.mailbox import SALT_NAME, configured_cost, derive_identity

    salt = bytes.fromhex((server.data_dir / SALT_NAME).read_text().strip())
    cost = configured_cost(
        int(os.environ["PORTAL_RECEIPT_KDF_OPS"]), int(os.environ["PORTAL_RECEIPT_KDF_MEMORY_KIB"])
    )
    return derive_identity(parse_receipt(receipt), salt, cost)
