"""Helpers for the desk's tests: real opened folders, a desk on loopback, raw HTTP requests."""

from __future__ import annotations

import contextlib
import http.client
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from portal.core.age import X25519Identity
from portal.core.manifest import SealedQuestionnaire
from portal.review.cli import ExitStatus, main
from portal.review.cli.context import SIGNING_KEY_ENV
from portal.review.desk.server import DeskServer, build_state
from portal.review.desk.settings import DeskSettings
from portal.server.intake import store_submission
from tests.review_support import (
    default_questionnaire,
    make_store,
    open_args,
    review,
    write_identity,
)
from tests.support import signing_key_file

REVIEWER = "김검토"


@dataclass
class Witness:
    """One submission to make: its text, files, language, other fields, and a receipt or not."""

    text: str
    files: Sequence[tuple[str, bytes]] = ()
    language: str = "ko"
    fields: Mapping[str, str] | None = None
    reply_key: X25519Identity | None = None
    questionnaire: SealedQuestionnaire | None = None


@dataclass
class Opened:
    root: Path
    custody: Path
    ids: list[str]


def open_submissions(tmp_path: Path, witnesses: Sequence[Witness]) -> Opened:
    """Store each submission as the server does, then `testimony-review open` them all."""
    identity = write_identity(tmp_path / "reviewer-id.txt")
    store = make_store(tmp_path / "data")
    ids = []
    for witness in witnesses:
        ids.append(
            store_submission(
                store,
                [identity.recipient],
                {"testimony": witness.text, **(witness.fields or {})},
                [(name, "application/octet-stream", data) for name, data in witness.files],
                witness.language,
                reply_identity=witness.reply_key,
                # Consent is trusted only under a known questionnaire (issue 21).
                questionnaire=(
                    witness.questionnaire
                    or (
                        default_questionnaire().sealed(witness.language)
                        if "consent" in (witness.fields or {})
                        else None
                    )
                ),
            )
        )
    opened, custody = tmp_path / "opened", tmp_path / "custody.jsonl"
    run = review(open_args(store.root, tmp_path / "reviewer-id.txt", opened, custody))
    assert run.status == ExitStatus.OK, run.err
    return Opened(opened, custody, ids)


@contextlib.contextmanager
def running_desk(
    opened: Opened, settings: DeskSettings | None = None, env: Mapping[str, str] | None = None
) -> Iterator[DeskServer]:
    # Replies are signed (issue 21): the desk's `reply` finds the tests' key here.
    key = signing_key_file(opened.root.parent / "signer")
    env = {SIGNING_KEY_ENV: str(key), **(env or {})}
    state = build_state(
        opened.root, opened.custody, REVIEWER, settings or DeskSettings(), env, main
    )
    server = DeskServer(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=10)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def request(
    server: DeskServer,
    path: str,
    *,
    method: str = "GET",
    form: Mapping[str, str | Sequence[str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """One raw request to the desk; `path` is taken as is (secret and all)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = urlencode(form, doseq=True).encode() if form is not None else None
    sent = {"Host": server.state.host}
    if body is not None:
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    sent.update(headers or {})
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in sent.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read().decode("utf-8", "replace"),
        )
    finally:
        connection.close()


def base_path(server: DeskServer, lang: str | None = None) -> str:
    path = urlsplit(server.url).path
    return path if lang is None else path.rsplit("/", 2)[0] + f"/{lang}/"


def found_ids(page: str) -> set[str]:
    """The submissions a list page shows."""
    return set(re.findall(r'class="hit" data-id="([^"]+)"', page))


def post(server: DeskServer, path: str, form: Mapping[str, str | Sequence[str]]) -> Answer:
    """A form post as the desk's own page makes it (same origin, this run's token)."""
    return request(
        server,
        path,
        method="POST",
        form={"csrf_token": server.state.csrf, **form},
        headers={"Origin": f"http://{server.state.host}", "Sec-Fetch-Site": "same-origin"},
    )
