"""HTTP hardening, through the Flask app: headers, cookies, CSRF window, hosts, no script."""

from __future__ import annotations

import io
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from portal.server.config import Config
from portal.server.store import SubmissionStore
from portal.testing.live import form_fields

REQUIRED_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Every kind of page a witness can see, as (method, path).
PAGES = [
    ("GET", "/"),
    ("GET", "/ko/"),
    ("GET", "/zh/submit"),
    ("GET", "/submit"),
    ("GET", "/robots.txt"),
    ("GET", "/no/such/page"),
    ("POST", "/submit"),  # no CSRF token: the error page
    ("PUT", "/submit"),  # 405
]


def csp_directives(header: str) -> dict[str, str]:
    return {
        part.strip().split(" ", 1)[0]: part.strip().partition(" ")[2]
        for part in header.split(";")
        if part.strip()
    }


def hidden_fields(client: FlaskClient, path: str = "/submit") -> dict[str, str]:
    """Open the form: its CSRF token and one-time value."""
    return form_fields(client.get(path).get_data(as_text=True))


@pytest.mark.parametrize(("method", "path"), PAGES)
def test_every_response_carries_the_security_headers(client, method, path) -> None:
    response = client.open(path, method=method)
    for name, value in REQUIRED_HEADERS.items():
        assert response.headers.get(name) == value, name
    permissions = response.headers["Permissions-Policy"]
    for feature in ("camera", "microphone", "geolocation"):
        assert f"{feature}=()" in permissions
    csp = csp_directives(response.headers["Content-Security-Policy"])
    assert csp["default-src"] == "'none'"
    assert csp["style-src"] == "'self'"
    assert csp["img-src"] == "'self'"
    assert csp["form-action"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert "script-src" not in csp  # falls back to default-src 'none'
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in response.headers
    assert "Server" not in response.headers


def test_static_files_carry_the_headers_but_may_be_cached(client) -> None:
    response = client.get("/static/style.css")
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" not in response.headers.get("Cache-Control", "")


def test_static_files_do_not_date_the_install(client) -> None:
    path = "/static/style.css"
    response = client.get(path)
    assert response.status_code == 200 and response.data
    assert "ETag" not in response.headers
    assert "Last-Modified" not in response.headers
    # Nor can the date be probed with conditional requests: always the whole file.
    for header in (
        {"If-Modified-Since": "Sun, 01 Jan 2040 00:00:00 GMT"},
        {"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"},
        {"If-None-Match": "*"},
        {"Range": "bytes=0-0"},
    ):
        again = client.get(path, headers=header)
        assert again.status_code == 200, header
        assert again.data == response.data


def test_a_missing_static_file_is_a_404_page(client) -> None:
    response = client.get("/static/no-such-file.css")
    assert response.status_code == 404
    assert "<h1>" in response.get_data(as_text=True)


def test_hsts_only_when_tls_is_configured(make_app) -> None:
    plain = make_app().test_client().get("/")
    assert "Strict-Transport-Security" not in plain.headers
    tls = make_app(tls=True).test_client().get("/")
    assert tls.headers["Strict-Transport-Security"].startswith("max-age=")
    assert int(tls.headers["Strict-Transport-Security"].split("=")[1]) >= 31536000


def session_cookie(response) -> str:
    [cookie] = [v for v in response.headers.getlist("Set-Cookie") if v.startswith("session=")]
    return cookie


def test_session_cookie_is_httponly_strict_and_not_persistent(client) -> None:
    cookie = session_cookie(client.get("/submit"))
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert "httponly" in attributes
    assert "samesite=strict" in cookie.lower()
    assert "secure" not in attributes  # plain HTTP over Tor: Secure would drop it
    assert "expires" not in attributes and "max-age" not in attributes


def test_session_cookie_is_secure_under_tls(make_app) -> None:
    cookie = session_cookie(make_app(tls=True).test_client().get("/submit"))
    assert "secure" in {a.strip().lower() for a in cookie.split(";")[1:]}


def test_session_holds_only_the_csrf_token(app, client) -> None:
    client.get("/submit", headers={"User-Agent": "MarkerAgent/1", "X-Forwarded-For": "203.0.113.9"})
    with client.session_transaction() as session:
        assert set(session) == {"csrf_token"}
        assert re.fullmatch(r"[0-9a-f]{40}", session["csrf_token"])


def test_no_cookie_on_pages_without_a_form(client) -> None:
    for path in ("/", "/ko/", "/robots.txt", "/static/style.css"):
        assert "Set-Cookie" not in client.get(path).headers, path


def test_csrf_window_covers_a_slow_upload_over_tor(app, client, config, monkeypatch) -> None:
    assert app.config["WTF_CSRF_TIME_LIMIT"] >= 6 * 3600
    fields = hidden_fields(client)
    # Eight hours later, as after a very slow upload, the form is still accepted.
    later = time.time() + 8 * 3600
    monkeypatch.setattr(time, "time", lambda: later)
    response = client.post(
        "/submit",
        data={**fields, "testimony": "slow but safe"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(SubmissionStore(config.data_dir).ids()) == 1


def test_csrf_token_expires_eventually(client, config, monkeypatch) -> None:
    fields = hidden_fields(client)
    later = time.time() + 3 * 24 * 3600
    monkeypatch.setattr(time, "time", lambda: later)
    response = client.post(
        "/submit",
        data={**fields, "testimony": "stale"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert "NOT saved" in response.get_data(as_text=True)
    assert SubmissionStore(config.data_dir).ids() == []


def test_unknown_host_gets_a_clear_400_page(make_app) -> None:
    client = make_app(allowed_hosts=("abcdef.onion",)).test_client()
    foreign = client.get("/", headers={"Host": "evil.example"})
    assert foreign.status_code == 400
    assert "<h1>" in foreign.get_data(as_text=True)
    assert foreign.headers["X-Frame-Options"] == "DENY"
    assert client.get("/", headers={"Host": "abcdef.onion"}).status_code == 200
    assert client.get("/", headers={"Host": "abcdef.onion:8080"}).status_code == 200
    assert client.get("/", headers={"Host": "ABCDEF.Onion"}).status_code == 200


def test_unknown_host_cannot_submit(config, make_app) -> None:
    client = make_app(allowed_hosts=("abcdef.onion",)).test_client()
    page = client.get("/submit", headers={"Host": "abcdef.onion"}).get_data(as_text=True)
    response = client.post(
        "/submit",
        data={
            **form_fields(page),
            "testimony": "x",
            "attachments": (io.BytesIO(b"x"), "a.txt"),
        },
        headers={"Host": "evil.example"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert SubmissionStore(config.data_dir).ids() == []
    assert list(SubmissionStore(config.data_dir).staging_dir.iterdir()) == []


def test_onion_location_is_sent_and_cannot_be_injected(make_app) -> None:
    onion = "http://" + "a" * 56 + ".onion"
    client = make_app(onion_location=onion, allowed_hosts=("localhost",)).test_client()
    assert client.get("/ko/submit").headers["Onion-Location"] == onion + "/ko/submit"
    for path in ("/%0d%0aX-Injected:%201", "/%ED%95%9C", "/a%00b"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "X-Injected" not in response.headers
        value = response.headers["Onion-Location"]
        assert value.startswith(onion + "/") and value.isascii()
        assert "\r" not in value and "\n" not in value
    assert "Onion-Location" not in make_app().test_client().get("/").headers


def test_robots_txt_disallows_everything(client) -> None:
    response = client.get("/robots.txt")
    assert response.status_code == 200
    lines = response.get_data(as_text=True).splitlines()
    assert "User-agent: *" in lines and "Disallow: /" in lines


class ScriptFinder(HTMLParser):
    """Collects anything in a page that could run script."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "iframe", "object", "embed", "frame"):
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"{tag} {name}=")
            if value and value.strip().lower().startswith(("javascript:", "data:")):
                self.found.append(f"{tag} {name}={value[:20]}")
            if name in ("src", "href", "action") and value and "//" in value:
                self.found.append(f"outside resource {value}")


def witness_pages(client: FlaskClient, config: Config) -> dict[str, str]:
    pages = {}
    for lang in ("", "/ko", "/zh"):
        for path in (f"{lang}/", f"{lang}/submit", f"{lang}/nowhere"):
            pages[path] = client.get(path).get_data(as_text=True)
        post = f"{lang}/submit"
        pages[post + " (invalid)"] = client.post(
            post,
            data={**hidden_fields(client, post), "testimony": "", "website": "bot"},
            content_type="multipart/form-data",
        ).get_data(as_text=True)
        pages[post + " (csrf)"] = client.post(post, data={}).get_data(as_text=True)
        pages[post + " (received)"] = client.post(
            post,
            data={**hidden_fields(client, post), "testimony": "<script>alert(1)</script>"},
            content_type="multipart/form-data",
        ).get_data(as_text=True)
    return pages


def test_witness_pages_contain_no_script_at_all(client, config) -> None:
    pages = witness_pages(client, config)
    assert any("notice ok" in page for page in pages.values())
    for name, page in pages.items():
        finder = ScriptFinder()
        finder.feed(page)
        assert finder.found == [], name
        assert "<script" not in page.lower(), name


def test_template_folder_has_no_script_tags() -> None:
    templates = Path(__file__).resolve().parents[1] / "templates"
    for template in templates.glob("*.html"):
        text = template.read_text("utf-8").lower()
        assert "<script" not in text and "javascript:" not in text, template.name


@pytest.mark.parametrize("host", ["h" * 64 + ".onion", "a..b", "a." + "b" * 300])
def test_unparseable_host_gets_a_clear_400_not_a_500(client, host) -> None:
    response = client.get("/submit", headers={"Host": host})
    assert response.status_code == 400
    assert "<h1>" in response.get_data(as_text=True)
    assert response.headers["X-Frame-Options"] == "DENY"


def test_security_headers_replace_what_a_view_set_and_are_never_doubled(app) -> None:
    from flask import Response

    from portal.server.web.security import STATIC_HEADERS, add_security_headers

    with app.test_request_context("/"):
        plain = add_security_headers(Response("x"))
        preset = Response(
            "x", headers={"X-Frame-Options": "SAMEORIGIN", "x-content-type-options": "x"}
        )
        preset = add_security_headers(preset)
    for response in (plain, preset):
        for name, value in STATIC_HEADERS.items():
            assert response.headers.getlist(name) == [value], name


def test_hosts_that_bind_are_remembered_and_bad_ones_never_are(app, client) -> None:
    from portal.server.web.security import _MAX_GOOD_HOSTS, HostGuard

    guard = app.wsgi_app
    while not isinstance(guard, HostGuard):
        guard = guard.wsgi_app
    for n in range(_MAX_GOOD_HOSTS + 5):
        assert client.get("/", headers={"Host": f"good{n}.example"}).status_code == 200
    assert len(guard._good) == _MAX_GOOD_HOSTS  # capped; the rest are bound each time
    for _ in range(2):  # a bad name is refused every time, after any number of good ones
        assert client.get("/", headers={"Host": "h" * 64}).status_code == 400
    assert all("h" * 64 not in key for key in guard._good)
    assert client.get("/", headers={"Host": "good1.example"}).status_code == 200


def test_the_session_serializer_is_kept_and_made_again_for_a_new_key(app) -> None:
    interface = app.session_interface
    first = interface.get_signing_serializer(app)
    assert first is not None and interface.get_signing_serializer(app) is first
    app.secret_key = b"another key, as after a restart with a new PORTAL_SECRET_KEY"
    second = interface.get_signing_serializer(app)
    assert second is not first
    assert second.loads(second.dumps({"a": 1})) == {"a": 1}
    assert first.loads(first.dumps({"a": 1})) == {"a": 1}
    with pytest.raises(Exception, match="(?i)signature"):
        second.loads(first.dumps({"a": 1}))
