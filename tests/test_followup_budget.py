"""The follow-up door cannot close the submission door (issue 19: N1, N2, N3, N3b).

Follow-up logins spend a budget of their own, a typo'd receipt spends
nothing, and no request that stores nothing moves the submissions' budget,
so an observer cannot date other witnesses' submissions from it. No POST
without the form's session has its body read, the follow-up login and
deletion take small bodies only, and files are staged only by the routes
that store submissions.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from portal.core.receipt import new_receipt
from portal.server.store import SubmissionStore
from portal.server.web.admission import SMALL_BODY_BYTES
from portal.testing.live import csrf_token, post_form


def _login(client: Any, receipt: str, path: str = "/ko/followup") -> Any:
    token = csrf_token(client.get("/ko/followup").get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, "receipt": receipt})


def _typo(receipt: str) -> str:
    digits = receipt.replace(" ", "")
    return digits[:3] + str((int(digits[3]) + 1) % 10) + digits[4:]


def _tokens(app: Any) -> float:
    """The submissions' bucket as a witness would find it now (refilled to this moment)."""
    bucket = app.extensions["portal"].bucket
    with bucket._lock:
        bucket._take()  # refills, then takes one...
    bucket.give_back()  # ...which goes back at once
    return float(bucket._state[0])


def test_follow_up_logins_spend_their_own_budget_never_the_submissions(make_app: Any) -> None:
    app = make_app(rate_burst=1, rate_per_minute=1, login_burst=2, login_per_minute=1)
    client = app.test_client()
    keys = app.extensions["portal.core.conversation"].keys
    statuses = [_login(client, new_receipt().display()).status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    assert keys.derivations == 2
    # The one submission the bucket allows still goes through, and is stored.
    response = post_form(client, {"testimony": "after many logins"}, path="/ko/submit")
    assert response.status_code == 200, response.status_code
    assert len(SubmissionStore(app.extensions["portal"].config.data_dir).ids()) == 1


def test_a_typod_receipt_spends_nothing_anywhere(make_app: Any) -> None:
    app = make_app(rate_burst=2, rate_per_minute=1, login_burst=1, login_per_minute=1)
    client = app.test_client()
    keys = app.extensions["portal.core.conversation"].keys
    before = _tokens(app)
    receipt = new_receipt().display()
    assert [_login(client, _typo(receipt)).status_code for _ in range(20)] == [400] * 20
    token = csrf_token(client.get("/ko/followup").get_data(as_text=True))
    deleted = client.post(
        "/ko/followup/delete", data={"csrf_token": token, "receipt": _typo(receipt)}
    )
    assert deleted.status_code == 400
    assert keys.derivations == 0
    assert _tokens(app) == before
    # The login budget's one token is still there for the receipt typed right.
    assert _login(client, receipt).status_code == 200
    assert keys.derivations == 1


def test_requests_that_store_nothing_leave_the_submissions_budget_as_it_was(
    make_app: Any,
) -> None:
    """N2: what an observer can send without storing cannot drain or probe the bucket.

    The observer sends logins (right and typo'd), deletions and submission
    attempts that fail; the bucket is full before and after, so none of them
    can find it empty and none can learn that a witness took a token.
    """
    app = make_app(rate_burst=3, rate_per_minute=1, login_burst=1000, login_per_minute=1)
    client = app.test_client()
    full = _tokens(app)
    for _ in range(30):
        receipt = new_receipt().display()
        assert _login(client, receipt).status_code == 200
        assert _login(client, _typo(receipt)).status_code == 400
        # A form that cannot be stored: the honeypot is filled.
        refused = post_form(client, {"testimony": "x", "website": "bot"}, path="/ko/submit")
        assert refused.status_code == 400
    assert _tokens(app) == full
    # Every witness submission the burst allows is stored.
    for n in range(3):
        assert post_form(client, {"testimony": f"w{n}"}, path="/ko/submit").status_code == 200


@pytest.mark.parametrize("path", ["/ko/followup", "/ko/followup/delete", "/ko/followup/send"])
def test_a_post_without_the_session_is_refused_before_its_body_is_read(app: Any, path: str) -> None:
    class Unreadable(io.BytesIO):
        read_from = False

        def read(self, *args: Any) -> bytes:
            Unreadable.read_from = True
            return super().read(*args)

        def readinto(self, *args: Any) -> int:
            Unreadable.read_from = True
            return super().readinto(*args)

        def readline(self, *args: Any) -> bytes:
            Unreadable.read_from = True
            return super().readline(*args)

    client = app.test_client()
    response = client.post(
        path,
        input_stream=Unreadable(b"--x\r\n" + b"a" * 100_000),
        content_type="multipart/form-data; boundary=x",
    )
    assert response.status_code == 400
    assert not Unreadable.read_from


@pytest.mark.parametrize("path", ["/ko/followup", "/ko/followup/delete"])
def test_a_login_body_is_small_and_stages_no_file(app: Any, path: str) -> None:
    client = app.test_client()
    token = csrf_token(client.get("/ko/followup").get_data(as_text=True))
    big = client.post(
        path,
        data={"csrf_token": token, "receipt": "1" * (SMALL_BODY_BYTES + 10)},
        content_type="multipart/form-data",
    )
    assert big.status_code == 413
    staged: list[Any] = []
    store = app.extensions["portal"].store
    original = store.begin

    def begin() -> Any:
        staged.append(1)
        return original()

    store.begin = begin
    with_file = client.post(
        path,
        data={
            "csrf_token": token,
            "receipt": new_receipt().display(),
            "attachments": (io.BytesIO(b"x" * 5000), "photo.jpg"),
        },
        content_type="multipart/form-data",
    )
    assert with_file.status_code == 413
    assert staged == []
    assert not any(SubmissionStore(store.root).staging_dir.iterdir())
