"""portal.testing.live, which tests and benchmarks rely on: its form helpers do what they say."""

from __future__ import annotations

from typing import Any

import pytest

from portal.core.age import X25519Identity
from portal.server.config import Config
from portal.server.store import SubmissionStore
from portal.testing.live import (
    RECEIVED_MARKERS,
    LiveServer,
    csrf_token,
    form_fields,
    hidden_fields,
    open_submission,
    post_form,
)


def test_hidden_fields_are_every_hidden_input_by_name_unescaped() -> None:
    page = (
        '<form><input id="csrf_token" name="csrf_token" type="hidden" value="a&amp;b">'
        '<input type="hidden" name="form_id" value="f1"><input name="testimony" value="x">'
        '<input type="hidden" name="form_id" value="second form"></form>'
    )
    assert hidden_fields(page) == {"csrf_token": "a&b", "form_id": "f1"}
    assert csrf_token(page) == "a&b"
    assert form_fields(page) == {"csrf_token": "a&b", "form_id": "f1", "consent": "yes"}
    with pytest.raises(AssertionError, match="no CSRF token"):
        csrf_token('<input type="hidden" name="form_id" value="f1">')


def test_post_form_stores_through_flask_and_through_a_live_server(
    client: Any, config: Config, live_server: LiveServer, identity: X25519Identity
) -> None:
    assert post_form(client, {"testimony": "through Flask"}).status_code == 200
    assert len(SubmissionStore(config.data_dir).ids()) == 1

    response = post_form(
        live_server.client(),
        {"testimony": "증언"},
        path="/ko/submit",
        files=[("a.txt", b"attached", "text/plain")],
    )
    assert response.status == 200 and RECEIVED_MARKERS[0] in response.body
    store = SubmissionStore(live_server.data_dir)
    [submission_id] = store.ids()
    manifest, files = open_submission(store.path(submission_id), [identity])
    assert manifest["fields"]["testimony"] == "증언" and manifest["fields"]["consent"] == "yes"
    assert list(files.values()) == [b"attached"]


def test_post_form_without_a_form_on_the_page_says_so(client: Any) -> None:
    with pytest.raises(AssertionError, match="no CSRF token"):
        post_form(client, {"testimony": "x"}, path="/")


def test_a_connection_reset_before_any_socket_is_an_os_error(monkeypatch) -> None:
    # A node being killed resets the connection while it is made: the client
    # has no socket and no answer to read, and says so as an OSError (the
    # load loops count those) rather than failing on the missing socket.
    import http.client

    from portal.testing.live import Client

    def reset(self: http.client.HTTPConnection) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(http.client.HTTPConnection, "connect", reset)
    with pytest.raises(ConnectionResetError):
        Client("http://127.0.0.1:9").request("POST", "/submit", body=b"x")
