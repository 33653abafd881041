"""Everything that answers a witness answers right: limits at their edge, honest headings.

Each against the real server (gunicorn on loopback): the exact upload limit
only shows there, where Werkzeug reads the body through gunicorn's stream.
"""

from __future__ import annotations

import re

import pytest

from portal.server.store import SubmissionStore
from portal.server.web.i18n import LANGUAGES
from portal.testing.live import MultipartBody, open_submission
from portal.testing.live import lang_prefix as prefix
from tests.support import translate

MAX_CHARS = 10


@pytest.fixture
def edge_server(make_server):
    return make_server(
        env={
            "PORTAL_MAX_UPLOAD_MB": "1",
            "PORTAL_MAX_FILES": "2",
            "PORTAL_MAX_TESTIMONY_CHARS": str(MAX_CHARS),
        },
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_live_upload_of_exactly_the_limit_is_accepted(edge_server, chunked: bool) -> None:
    limit = 1 << 20  # PORTAL_MAX_UPLOAD_MB=1
    for extra, expected in ((0, 200), (1, 413)):
        client = edge_server.client()
        fields = {**client.form_fields(), "testimony": "edge"}
        empty = MultipartBody(fields, [("f.bin", b"", "application/octet-stream")])
        size = limit - empty.length + extra
        body = MultipartBody(fields, [("f.bin", b"f" * size, "application/octet-stream")])
        assert body.length == limit + extra
        headers = {"Content-Type": body.content_type}
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(body.length)
        response = client.request("POST", "/submit", body=iter(body), headers=headers)
        assert response.status == expected, (extra, response.status)
    assert len(SubmissionStore(edge_server.data_dir).ids()) == 1


def test_live_line_breaks_count_once_and_are_stored_as_lf(edge_server, identity) -> None:
    page = edge_server.client().last_page("ko")
    [textarea] = re.findall(r"<textarea[^>]*name=\"testimony\"[^>]*>", page)
    assert f'maxlength="{MAX_CHARS}"' in textarea
    # Ten characters as the browser counts them (line breaks as one), sent as CRLF.
    text = "ab\r\ncd\r\nef\rg"
    assert len(text.replace("\r\n", "\n")) == MAX_CHARS < len(text)
    assert edge_server.client().submit(text, lang="ko").status == 200
    assert edge_server.client().submit(text + "x", lang="ko").status == 400
    store = SubmissionStore(edge_server.data_dir)
    [submission_id] = store.ids()
    manifest, _ = open_submission(store.path(submission_id), [identity])
    assert manifest["fields"]["testimony"] == "ab\ncd\nef\ng"


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_live_too_many_files_page_says_too_many_files(edge_server, lang: str) -> None:
    files = [(f"{n}.jpg", b"photo", "image/jpeg") for n in range(3)]
    response = edge_server.client().submit("three photos", files, lang=lang)
    assert response.status == 413
    assert f"<h1>{translate(lang, 'Too many files')}</h1>" in response.body
    assert translate(lang, "Too large") not in response.body
    assert translate(lang, "Your testimony was NOT saved.") in response.body
    # A file that is too large still gets the "too large" page.
    big = [("video.mp4", b"\0" * (2 << 20), "video/mp4")]
    too_large = edge_server.client().submit("video", big, lang=lang)
    assert too_large.status == 413
    assert f"<h1>{translate(lang, 'Too large')}</h1>" in too_large.body
    assert prefix(lang) + "/submit" in response.body  # the link back to the form


def test_live_static_files_do_not_date_the_install(edge_server) -> None:
    client = edge_server.client()
    response = client.get("/static/style.css")
    assert response.status == 200 and response.body
    assert "etag" not in response.headers and "last-modified" not in response.headers
    probe = client.request(
        "GET", "/static/style.css", headers={"If-Modified-Since": "Sun, 01 Jan 2040 00:00:00 GMT"}
    )
    assert probe.status == 200 and probe.body == response.body
