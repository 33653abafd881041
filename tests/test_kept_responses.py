"""The landing page's answer is kept and replayed byte for byte, and never for another request.

`portal/server/web/kept.py` answers a repeated plain GET of the landing page
without running the app. What must hold: the replayed answer is the app's
own (status, every header, body), the app still runs for anything that is
not the same plain GET (so the host check, the session and every hook run
for those), an answer that sets a cookie or varies is never kept, and the
number kept is bounded.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, request_started, session
from flask.testing import FlaskClient

from portal.server.web.kept import MAX_KEPT, keep_response
from portal.testing.live import LiveServer

ONION = "http://abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvw.onion"


class RunsOfTheApp:
    """Counts the requests that reached Flask (a replayed answer never does)."""

    def __init__(self, app: Flask) -> None:
        self.count = 0
        request_started.connect(self._started, app)

    def _started(self, sender: Flask, **extra: Any) -> None:
        self.count += 1


Answer = tuple[str, list[tuple[str, str]], bytes]


def answer(client: FlaskClient, path: str, **kwargs: Any) -> Answer:
    response = client.open(path, **kwargs)
    return response.status, list(response.headers.items()), response.get_data()


@pytest.mark.parametrize(
    "settings",
    [{}, {"tls": True, "onion_location": ONION, "allowed_hosts": ("localhost",)}],
    ids=["default", "tls-onion-hosts"],
)
@pytest.mark.parametrize("path", ["/", "/ko/", "/zh/"])
def test_a_kept_answer_is_the_apps_own_byte_for_byte(
    make_app: Callable[..., Flask], settings: dict[str, Any], path: str
) -> None:
    app = make_app(**settings)
    runs = RunsOfTheApp(app)
    first = answer(app.test_client(), path)
    replays = [answer(app.test_client(), path) for _ in range(3)]
    assert runs.count == 1, "the app ran again for the same plain GET"
    assert all(replay == first for replay in replays)
    status, headers, body = first
    assert status == "200 OK" and body.startswith(b"<!doctype html>")
    names = {name for name, _value in headers}
    assert {"Content-Security-Policy", "Cache-Control", "Content-Length"} <= names
    if settings:
        assert dict(headers)["Onion-Location"] == ONION + path
        assert "Strict-Transport-Security" in names


@pytest.mark.parametrize(
    "variant",
    [
        {"query_string": "a=1"},
        {"cookie": "x"},
        {"method": "HEAD"},
        {"method": "POST"},
        {"method": "GET", "data": b"x"},
        {"headers": {"Transfer-Encoding": "chunked"}, "data": b""},
    ],
    ids=["query", "cookie", "head", "post", "body", "chunked"],
)
def test_only_a_plain_get_is_answered_with_a_kept_answer(
    make_app: Callable[..., Flask], variant: dict[str, Any]
) -> None:
    app = make_app()
    runs = RunsOfTheApp(app)
    client = app.test_client()
    answer(client, "/")
    before = runs.count
    for _ in range(2):
        options = dict(variant)
        if "cookie" in options:
            # Werkzeug's client sends only the cookies of its jar.
            client.set_cookie("session", options.pop("cookie"))
        client.open("/", **options)
        client.delete_cookie("session")
    assert runs.count == before + 2


def test_another_page_is_never_kept(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    runs = RunsOfTheApp(app)
    for _ in range(2):
        app.test_client().get("/submit")
        app.test_client().get("/robots.txt")
        app.test_client().get("/missing")
    assert runs.count == 6


def test_each_host_name_has_its_own_answer_and_a_refused_one_stays_refused(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(allowed_hosts=("abcdef.onion", "portal.example"))
    runs = RunsOfTheApp(app)
    client = app.test_client()
    assert client.get("/", headers={"Host": "abcdef.onion"}).status_code == 200
    assert client.get("/", headers={"Host": "abcdef.onion"}).status_code == 200
    assert runs.count == 1
    assert client.get("/", headers={"Host": "portal.example"}).status_code == 200
    assert runs.count == 2
    for _ in range(2):
        refused = client.get("/", headers={"Host": "evil.example"})
        assert refused.status_code == 400
    assert runs.count == 4
    # A Host Werkzeug cannot parse is swapped for a placeholder by the host
    # guard after the key was taken; it is refused every time too.
    for _ in range(2):
        assert client.get("/", headers={"Host": "h" * 64}).status_code == 400
    assert runs.count == 6


@pytest.mark.parametrize("kind", ["sets-cookie", "reads-session", "not-200"])
def test_an_answer_that_sets_a_cookie_varies_or_fails_is_not_kept(
    make_app: Callable[..., Flask], kind: str
) -> None:
    app = make_app()

    def view() -> Any:
        keep_response()
        if kind == "sets-cookie":
            session["seen"] = True
        elif kind == "reads-session":
            session.get("seen")
        else:
            return "made", 201
        return "page"

    app.add_url_rule("/kept-test", "kept_test", view)
    runs = RunsOfTheApp(app)
    for _ in range(3):
        app.test_client().get("/kept-test")
    assert runs.count == 3


def test_kept_answers_are_bounded(make_app: Callable[..., Flask]) -> None:
    # Where any host is allowed, each made-up Host header is a new key.
    app = make_app(allowed_hosts=())
    runs = RunsOfTheApp(app)
    client = app.test_client()
    hosts = [f"h{index}.example" for index in range(MAX_KEPT + 4)]
    for host in hosts:
        client.get("/", headers={"Host": host})
    assert runs.count == len(hosts)
    for host in hosts:
        client.get("/", headers={"Host": host})
    # The first MAX_KEPT were kept; the rest run the app every time.
    assert runs.count == len(hosts) + 4


@pytest.mark.slow
def test_the_real_server_replays_the_same_bytes_but_for_its_date(live_server: LiveServer) -> None:
    request = b"GET /ko/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answers = []

    def receive(sock: socket.socket) -> bytes:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-answer"
        return chunk

    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += receive(sock)
            head, body = data.split(b"\r\n\r\n", 1)
            length = int(next(
                line.split(b":", 1)[1] for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ))  # fmt: skip
            while len(body) < length:
                body += receive(sock)
            lines = [line for line in head.split(b"\r\n") if not line.startswith(b"Date:")]
            answers.append((lines, body))
    assert answers[0] == answers[1] == answers[2]
    lines, body = answers[0]
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert any(line.startswith(b"Content-Security-Policy: default-src 'none'") for line in lines)
    assert b'lang="ko"' in body
