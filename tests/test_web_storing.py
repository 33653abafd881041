"""Both forms that store a submission share one claim/commit/release sequence."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from portal.server.intake import Submission
from portal.server.store import StorageFullError, SubmissionStore
from portal.testing.live import csrf_token, form_fields, post_form

RECEIPT_RE = re.compile(r'id="receipt"[^>]*>([0-9 ]+)<')


def _follow_up_form(client: Any) -> dict[str, str]:
    response = post_form(client, {"testimony": "first account"})
    receipt = RECEIPT_RE.search(response.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    token = csrf_token(client.get("/followup").get_data(as_text=True))
    page = client.post("/followup", data={"csrf_token": token, "receipt": receipt})
    html = page.get_data(as_text=True)
    form = html[html.index('action="/followup/send"') :]
    return {**form_fields(form), "receipt": receipt, "testimony": "more, after a failure"}


def _fail_first_commit(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    commit = Submission.commit

    def failing_once(self: Submission, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise StorageFullError("the disk filled up")
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(Submission, "commit", failing_once)
    return calls


def test_a_follow_up_that_failed_to_store_can_be_sent_again_and_is_stored_once(
    client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _follow_up_form(client)
    calls = _fail_first_commit(monkeypatch)

    def send() -> int:
        return int(
            client.post(
                "/followup/send", data=dict(data), content_type="multipart/form-data"
            ).status_code
        )

    assert send() == 503
    assert len(SubmissionStore(data_dir).ids()) == 1  # only the first account
    assert [send(), send()] == [200, 200]
    assert len(calls) == 2  # the repeat committed nothing
    assert len(SubmissionStore(data_dir).ids()) == 2


@pytest.fixture
def data_dir(app: Any) -> Path:
    return Path(app.extensions["portal"].config.data_dir)
