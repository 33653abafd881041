"""Property-based fuzzing of the submit endpoint through the real Flask/Werkzeug stack.

Whatever arrives (malformed or truncated multipart, wrong content types,
invalid UTF-8, huge fields and headers, missing or stale CSRF tokens, hostile
file names, NUL bytes, thousands of parts), the answer is never a 5xx, always
a clear HTML page with the security headers; nothing is left in staging, a
200 means a complete submission that opens, and the app stays healthy.

The runs are deterministic (`derandomize=True`, no example database): the
same 2,000 cases on every CI run.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

from portal.core.age import X25519Identity
from portal.server.store import SubmissionStore
from portal.testing.live import form_fields, open_submission
from tests.support import app_config, build_app

BOUNDARY = "fuzzb0undary"
MAX_FILES = 4
MAX_CHARS = 2000
MAX_UPLOAD_MB = 1

# Thousands of cases through the whole stack: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,
        ],
    )


@dataclasses.dataclass
class Portal:
    app: Flask
    identity: X25519Identity
    store: SubmissionStore
    committed: int = 0


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    root = tmp_path_factory.mktemp("fuzz")
    identity = X25519Identity.generate()
    config = app_config(
        root,
        str(identity.recipient),
        max_upload_mb=MAX_UPLOAD_MB,
        max_files=MAX_FILES,
        max_testimony_chars=MAX_CHARS,
        rate_per_minute=10**9,
        rate_burst=10**9,
        onion_location="http://" + "a" * 56 + ".onion",
        allowed_hosts=("localhost",),
    )
    app = build_app(config)
    portal = Portal(app, identity, SubmissionStore(config.data_dir))
    yield portal
    # Still healthy after everything: a normal submission goes through and opens.
    assert_healthy(portal)


# --- strategies -------------------------------------------------------------

HOSTILE_NAMES = [
    "../../../etc/passwd",
    "..\\..\\windows\\system32\\config",
    "/absolute/path.txt",
    "name\x00.jpg",
    "CON",
    "a" * 5000,
    "<script>alert(1)</script>.html",
    '"; filename="other.txt',
    "\u202etxt.exe",
    "증언.mp4",
    "",
    ".",
    "..",
    "dir/",
    "\r\nX-Injected: 1",
]
names = st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(max_size=40))
field_names = st.one_of(
    st.sampled_from(["testimony", "attachments", "website", "csrf_token", "", "testimony[]"]),
    st.text(max_size=20),
)
contents = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [b"\x00" * 100, b"\xff\xfe\xfd", b"\xc3\x28", b"\xed\xa0\x80", b"--" + BOUNDARY.encode()]
    ),
    st.integers(0, 3 << 20).map(lambda n: b"x" * n),  # up to beyond every limit
)


@st.composite
def parts(draw: st.DrawFn) -> bytes:
    name = draw(field_names).encode("utf-8", "surrogatepass")
    head = b'Content-Disposition: form-data; name="' + name + b'"'
    if draw(st.booleans()):
        head += b'; filename="' + draw(names).encode("utf-8", "surrogatepass") + b'"'
    if draw(st.booleans()):
        head += b"\r\nContent-Type: " + draw(
            st.sampled_from([b"text/plain", b"", b"\x00", b"a" * 9000])
        )
    if draw(st.integers(0, 9)) == 0:
        head = draw(st.binary(max_size=200))  # a part head that is not a head at all
    return head + b"\r\n\r\n" + draw(contents)


@st.composite
def multipart_bodies(draw: st.DrawFn, csrf: bytes, form_id: bytes = b"") -> bytes:
    chunks = [b'Content-Disposition: form-data; name="csrf_token"\r\n\r\n' + csrf]
    if form_id:
        chunks.append(b'Content-Disposition: form-data; name="form_id"\r\n\r\n' + form_id)
    if draw(st.booleans()):
        chunks.append(b'Content-Disposition: form-data; name="testimony"\r\n\r\n' + draw(contents))
    chunks += draw(st.lists(parts(), max_size=6))
    repeat = draw(st.sampled_from([0, 0, 0, 5, 50, 3000]))
    chunks += [b'Content-Disposition: form-data; name="f"; filename="f"\r\n\r\nx'] * repeat
    chunks = draw(st.permutations(chunks)) if draw(st.booleans()) else chunks
    delimiter = b"--" + BOUNDARY.encode()
    body = b"".join(delimiter + b"\r\n" + c + b"\r\n" for c in chunks) + delimiter + b"--\r\n"
    mutation = draw(st.sampled_from(["none", "none", "truncate", "lf", "flip", "nul", "no-end"]))
    if mutation == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif mutation == "lf":
        body = body.replace(b"\r\n", b"\n")
    elif mutation == "flip" and body:
        i = draw(st.integers(0, len(body) - 1))
        body = body[:i] + bytes([body[i] ^ draw(st.integers(1, 255))]) + body[i + 1 :]
    elif mutation == "nul":
        i = draw(st.integers(0, len(body)))
        body = body[:i] + b"\x00" * draw(st.integers(1, 64)) + body[i:]
    elif mutation == "no-end":
        body = body[: -len(delimiter) - 4]
    return body


CONTENT_TYPES = [
    f"multipart/form-data; boundary={BOUNDARY}",
    f'multipart/form-data; boundary="{BOUNDARY}"',
    f"multipart/form-data; boundary={BOUNDARY}; charset=latin-1",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=" + "b" * 5000,
    f"multipart/mixed; boundary={BOUNDARY}",
    "application/x-www-form-urlencoded",
    "application/json",
    "text/plain; charset=utf-8",
    "",
    "\x00",
]
CSRF_KINDS = ["valid", "valid", "valid", "missing", "garbage", "other-session", "expired", "empty"]


# --- helpers ----------------------------------------------------------------


def fresh_token(client: FlaskClient, path: str = "/submit") -> str:
    """Open the form: its CSRF token; its one-time value is kept for `form_value`."""
    fields = form_fields(client.get(path).get_data(as_text=True))
    client.form_id = fields["form_id"]  # type: ignore[attr-defined]
    return fields["csrf_token"]


def form_value(client: FlaskClient) -> bytes:
    """The one-time value of the form `client` opened last (empty if none)."""
    return str(getattr(client, "form_id", "")).encode()


def token_of_kind(portal: Portal, client: FlaskClient, kind: str) -> bytes:
    if kind == "missing":
        return b""
    if kind == "empty":
        return b""
    if kind == "garbage":
        return b"IjAwMDAi.Zm9v.YmFy\xff"
    if kind == "other-session":
        return fresh_token(portal.app.test_client()).encode()
    if kind == "expired":
        fresh_token(client)
        with client.session_transaction() as stored:
            raw = stored["csrf_token"]
        assert portal.app.secret_key is not None
        signer = URLSafeTimedSerializer(portal.app.secret_key, salt="wtf-csrf-token")
        with mock.patch("time.time", return_value=time.time() - 3 * 24 * 3600):
            return signer.dumps(raw).encode()
    return fresh_token(client).encode()


def post_raw(
    client: FlaskClient,
    path: str,
    body: bytes,
    content_type: str,
    *,
    framing: str = "length",
    headers: dict[str, str] | None = None,
):
    environ: dict[str, Any] = {}
    request_headers = dict(headers or {})
    if framing == "chunked":
        # What gunicorn hands over for a chunked body: no length, terminated input.
        environ["wsgi.input_terminated"] = True
        return client.post(
            path,
            input_stream=io.BytesIO(body),
            content_type=content_type,
            headers=request_headers,
            environ_overrides=environ,
        )
    if framing in ("short", "long"):
        delta = -min(len(body), 17) if framing == "short" else 4096
        environ["CONTENT_LENGTH"] = str(len(body) + delta)
    return client.post(
        path,
        data=body,
        content_type=content_type,
        headers=request_headers,
        environ_overrides=environ,
    )


def check_answer(portal: Portal, response: Any) -> None:
    assert response.status_code < 500, response.status_code
    assert response.status_code in (200, 400, 404, 405, 413), response.status_code
    page = response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    assert "<h1>" in page, "not a clear page"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert list(portal.store.staging_dir.iterdir()) == [], "staging was left behind"
    ids = portal.store.ids()
    if response.status_code == 200:
        assert 'class="notice ok"' in page
        assert len(ids) == portal.committed + 1, "a 200 without a committed submission"
        new = max(ids, key=lambda i: portal.store.path(i).stat().st_ino)
        open_submission(portal.store.path(new), [portal.identity])
        portal.committed += 1
    else:
        # The "not saved" notice, in whichever language the page speaks.
        assert 'class="notice error"' in page or response.status_code in (404, 405)
        assert len(ids) == portal.committed, "a refused request left a submission"


def assert_healthy(portal: Portal) -> None:
    client = portal.app.test_client()
    assert client.get("/").status_code == 200
    response = client.post(
        "/submit",
        data={
            "csrf_token": fresh_token(client),
            "form_id": form_value(client).decode(),
            "consent": "yes",
            "testimony": "still here",
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 200
    portal.committed += 1


# --- the properties ---------------------------------------------------------


@fuzz_settings(1000)
@given(data=st.data())
def test_fuzz_multipart_bodies(portal: Portal, data: st.DataObject) -> None:
    client = portal.app.test_client()
    kind = data.draw(st.sampled_from(CSRF_KINDS), label="csrf")
    token = token_of_kind(portal, client, kind)
    body = data.draw(multipart_bodies(token, form_value(client)), label="body")
    path = data.draw(st.sampled_from(["/submit", "/ko/submit", "/zh/submit"]), label="path")
    framing = data.draw(st.sampled_from(["length", "length", "chunked", "short", "long"]))
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    check_answer(portal, post_raw(client, path, body, content_type, framing=framing))


@fuzz_settings(400)
@given(
    content_type=st.one_of(st.sampled_from(CONTENT_TYPES), st.text(max_size=80)),
    body=st.one_of(st.binary(max_size=2000), st.text(max_size=500).map(str.encode)),
    header_name=st.sampled_from(
        ["User-Agent", "Referer", "X-Forwarded-For", "Cookie", "Accept-Language", "Host"]
    ),
    header_value=st.one_of(st.text(max_size=50), st.integers(0, 70000).map(lambda n: "h" * n)),
    path=st.sampled_from(["/submit", "/ko/submit", "/submit?lang=ko&x=%00", "/zh/submit/", "/"]),
)
def test_fuzz_content_types_headers_and_raw_bytes(
    portal: Portal, content_type: str, body: bytes, header_name: str, header_value: str, path: str
) -> None:
    client = portal.app.test_client()
    fresh_token(client)
    safe_value = header_value.encode("latin-1", "replace").decode("latin-1")
    safe_value = safe_value.replace("\r", " ").replace("\n", " ")
    if header_name == "Host" and not safe_value:
        safe_value = "localhost"
    safe_type = content_type.replace("\r", " ").replace("\n", " ")
    safe_type = safe_type.encode("latin-1", "replace").decode("latin-1")
    response = post_raw(client, path, body, safe_type, headers={header_name: safe_value})
    check_answer(portal, response)


@fuzz_settings(400)
@given(
    kind=st.sampled_from(CSRF_KINDS),
    testimony=st.one_of(
        st.text(max_size=300),
        st.integers(MAX_CHARS - 2, MAX_CHARS + 2).map(lambda n: "가" * n),
        st.sampled_from(
            ["", " ", "\x00", "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace")]
        ),
    ),
    website=st.one_of(st.just(""), st.text(max_size=20)),
    files=st.lists(st.tuples(names, st.binary(max_size=2000)), max_size=MAX_FILES + 2),
    lang=st.sampled_from(["", "/ko", "/zh"]),
)
def test_fuzz_well_formed_forms(
    portal: Portal,
    kind: str,
    testimony: str,
    website: str,
    files: list[tuple[str, bytes]],
    lang: str,
) -> None:
    client = portal.app.test_client()
    token = token_of_kind(portal, client, kind)
    fields = [
        ("csrf_token", token),
        ("form_id", form_value(client)),
        ("consent", b"yes"),
        ("testimony", testimony.encode("utf-8", "replace")),
    ]
    if website:
        fields.append(("website", website.encode("utf-8", "replace")))
    delimiter = b"--" + BOUNDARY.encode()
    chunks = [
        delimiter
        + b'\r\nContent-Disposition: form-data; name="'
        + n.encode()
        + b'"\r\n\r\n'
        + v
        + b"\r\n"
        for n, v in fields
        if not (n == "csrf_token" and kind == "missing")
    ]
    for name, content in files:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")
        chunks.append(
            delimiter
            + b'\r\nContent-Disposition: form-data; name="attachments"; filename="'
            + quoted.encode("utf-8", "replace")
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
            + content
            + b"\r\n"
        )
    body = b"".join(chunks) + delimiter + b"--\r\n"
    response = post_raw(client, f"{lang}/submit", body, f"multipart/form-data; boundary={BOUNDARY}")
    check_answer(portal, response)
    valid = (
        kind == "valid"
        and not website
        and len(files) <= MAX_FILES
        # Line breaks count once, as the browser counts them.
        and len(testimony.replace("\r\n", "\n")) <= MAX_CHARS
        and (testimony.strip() or any(name or content for name, content in files))
    )
    if response.status_code == 200:
        assert valid or not testimony.strip(), "an invalid form was accepted"


@fuzz_settings(200)
@given(
    size=st.integers(0, (MAX_UPLOAD_MB << 20) + 200_000),
    framing=st.sampled_from(["length", "chunked"]),
)
def test_fuzz_upload_sizes_around_the_limit(portal: Portal, size: int, framing: str) -> None:
    client = portal.app.test_client()
    token = fresh_token(client).encode()
    delimiter = b"--" + BOUNDARY.encode()
    body = (
        delimiter
        + b'\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
        + token
        + b"\r\n"
        + delimiter
        + b'\r\nContent-Disposition: form-data; name="form_id"\r\n\r\n'
        + form_value(client)
        + b"\r\n"
        + delimiter
        + b'\r\nContent-Disposition: form-data; name="consent"\r\n\r\nyes\r\n'
        + delimiter
        + b'\r\nContent-Disposition: form-data; name="attachments"; filename="v.mp4"\r\n\r\n'
        + b"v" * size
        + b"\r\n"
        + delimiter
        + b"--\r\n"
    )
    response = post_raw(
        client, "/submit", body, f"multipart/form-data; boundary={BOUNDARY}", framing=framing
    )
    check_answer(portal, response)
    if len(body) > MAX_UPLOAD_MB << 20:
        assert response.status_code == 413
    elif size > 0:
        assert response.status_code == 200


# --- cases the fuzzer found, kept as fixed regressions ------------------------


def _part(head: str, content: bytes = b"") -> bytes:
    return b"--" + BOUNDARY.encode() + b"\r\n" + head.encode() + b"\r\n\r\n" + content + b"\r\n"


FOUND = {
    # Flask-WTF mixes files into the form: `testimony` as a file was a 500.
    "testimony-as-file": _part(
        'Content-Disposition: form-data; name="testimony"; filename="../../../etc/passwd"', b"x"
    ),
    "website-as-file": _part('Content-Disposition: form-data; name="website"; filename="w"', b"w"),
    # A part name Werkzeug cannot read becomes None; Flask-WTF crashed on it.
    "unreadable-name": _part('Content-Disposition: form-data; name="\r"'),
    "no-name": _part("Content-Disposition: form-data"),
}


@pytest.mark.parametrize("csrf", ["valid", "missing"])
@pytest.mark.parametrize("case", sorted(FOUND))
def test_fuzzer_findings_stay_fixed(portal: Portal, case: str, csrf: str) -> None:
    client = portal.app.test_client()
    token = token_of_kind(portal, client, csrf)
    body = (
        _part('Content-Disposition: form-data; name="csrf_token"', token)
        + _part('Content-Disposition: form-data; name="form_id"', form_value(client))
        + FOUND[case]
        + b"--"
        + BOUNDARY.encode()
        + b"--\r\n"
    )
    response = post_raw(client, "/submit", body, f"multipart/form-data; boundary={BOUNDARY}")
    check_answer(portal, response)
