"""Limits and abuse: sizes, file counts, text length, honeypot, rate limit, disk floor."""

from __future__ import annotations

import http.client
import io
import os
import re
import signal
import socket
import threading

import pytest

from portal.server.store import SubmissionStore
from portal.server.web.ratelimit import TokenBucket
from portal.testing.live import MultipartBody, csrf_token, hidden_fields
from portal.testing.live import post_form as post
from tests.support import assert_nothing_kept

NOT_SAVED = "NOT saved"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_too_many_files_get_a_clear_page_and_nothing_is_kept(config, make_app) -> None:
    client = make_app(max_files=3).test_client()

    def files(count: int) -> list[tuple[io.BytesIO, str]]:
        return [(io.BytesIO(b"x" * 100), f"{n}.txt") for n in range(count)]

    response = post(client, {"testimony": "four files", "attachments": files(4)})
    assert response.status_code == 413
    page = response.get_data(as_text=True)
    assert "more files than one submission can take" in page and NOT_SAVED in page
    assert_nothing_kept(config.data_dir)
    ok = post(client, {"testimony": "three", "attachments": files(3)})
    assert ok.status_code == 200


def test_too_long_testimony_is_refused_with_the_limit_named(config, make_app) -> None:
    client = make_app(max_testimony_chars=500).test_client()
    response = post(client, {"testimony": "가" * 501, "attachments": (io.BytesIO(b"doc"), "a.txt")})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "longer than 500 characters" in page and NOT_SAVED in page
    assert_nothing_kept(config.data_dir)
    assert post(client, {"testimony": "가" * 500}).status_code == 200


def test_a_text_field_beyond_the_memory_bound_gets_413(config, make_app) -> None:
    client = make_app(max_testimony_chars=100).test_client()
    response = post(client, {"testimony": "x" * (3 << 20)})
    assert response.status_code == 413
    assert NOT_SAVED in response.get_data(as_text=True)
    assert_nothing_kept(config.data_dir)


def test_thousands_of_parts_get_413(config, client) -> None:
    token = csrf_token(client.get("/submit").get_data(as_text=True))
    fields = {"csrf_token": token, "consent": "yes", "testimony": "parts"}
    fields.update({f"f{n}": "" for n in range(3000)})
    body = MultipartBody(fields, [])
    response = client.post("/submit", data=b"".join(body), content_type=body.content_type)
    assert response.status_code == 413
    assert_nothing_kept(config.data_dir)


def test_honeypot_filled_in_is_refused_and_nothing_kept(client, config) -> None:
    first = client.get("/submit").get_data(as_text=True)
    fields = {**hidden_fields(first), "go": "next", "role": "saw"}
    page = client.post("/submit/page", data=fields).get_data(as_text=True)
    assert 'name="website"' in page  # on the last page of the form, the one that stores
    assert re.search(r'class="hp" aria-hidden="true"', page)
    response = post(
        client,
        {
            "testimony": "buy cheap",
            "website": "http://spam.example",
            "attachments": (io.BytesIO(b"spam"), "spam.txt"),
        },
    )
    assert response.status_code == 400
    assert NOT_SAVED in response.get_data(as_text=True)
    assert_nothing_kept(config.data_dir)
    assert post(client, {"testimony": "real", "website": ""}).status_code == 200


def test_token_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=0.5, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(2.0)
    clock.now += 1
    assert bucket.take() == pytest.approx(1.0)
    clock.now += 1
    assert bucket.take() == 0.0
    clock.now += 3600  # a long quiet spell refills only up to the burst
    assert [bucket.take() for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert bucket.take() > 0


def test_token_bucket_is_shared_by_forked_workers() -> None:
    bucket = TokenBucket(rate_per_second=1e-6, burst=5, clock=FakeClock())
    pid = os.fork()
    if pid == 0:  # the child takes three tokens, as another worker would
        code = 0 if all(bucket.take() == 0 for _ in range(3)) else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [bucket.take() == 0 for _ in range(3)] == [True, True, False]


def test_a_worker_killed_inside_the_bucket_does_not_block_the_others() -> None:
    parent = os.getpid()

    def clock() -> float:
        # Runs while the bucket is locked: the child dies right there, as a
        # worker killed by gunicorn's timeout or the OOM killer would.
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return 1000.0

    bucket = TokenBucket(rate_per_second=1.0, burst=5, clock=clock)
    pid = os.fork()
    if pid == 0:
        bucket.take()
        os._exit(0)  # never reached
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    result: list[float] = []
    taker = threading.Thread(target=lambda: result.append(bucket.take()), daemon=True)
    taker.start()
    taker.join(timeout=5)
    assert result == [0.0], "the bucket stayed locked after its holder died"


def test_rate_limit_answers_429_with_retry_after_and_stores_nothing(config, make_app) -> None:
    app = make_app(rate_per_minute=6, rate_burst=2)
    clock = FakeClock()
    app.extensions["portal"].bucket = TokenBucket(rate_per_second=0.1, burst=2, clock=clock)
    client = app.test_client()
    assert post(client, {"testimony": "one"}).status_code == 200
    assert post(client, {"testimony": "two"}).status_code == 200
    refused = post(client, {"testimony": "three", "attachments": (io.BytesIO(b"f"), "f.txt")})
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "10"
    page = refused.get_data(as_text=True)
    assert NOT_SAVED in page and "Many people are sending testimony" in page
    store = SubmissionStore(config.data_dir)
    assert len(store.ids()) == 2
    assert list(store.staging_dir.iterdir()) == []
    # Reading pages is never limited; submitting works again once a token is back.
    assert client.get("/submit").status_code == 200
    clock.now += 10
    assert post(client, {"testimony": "four"}).status_code == 200
    assert len(store.ids()) == 3


def test_rate_limit_is_checked_before_csrf_so_floods_cost_nothing(make_app) -> None:
    app = make_app()
    app.extensions["portal"].bucket = TokenBucket(rate_per_second=1e-3, burst=0, clock=FakeClock())
    client = app.test_client()
    client.get("/submit")  # the form's session
    response = client.post("/submit", data={"testimony": "no token"})
    assert response.status_code == 429


def test_junk_posts_never_spend_the_rate_budget(config, make_app) -> None:
    app = make_app()
    bucket = TokenBucket(rate_per_second=1e-6, burst=1, clock=FakeClock())
    app.extensions["portal"].bucket = bucket
    client = app.test_client()
    junk = [
        ("/nowhere", {}, 404),  # not a submit route
        ("/", {}, 405),
        ("/robots.txt", {}, 405),
        ("/ko/submit", {"testimony": "no session"}, 400),  # no form session: refused unread
    ]
    for path, junk_data, status in junk:
        response = client.post(path, data=junk_data)
        assert response.status_code == status, path
    assert client.get_cookie("session") is None
    # With the form's session, refused forms give their token back.
    refused: list[dict[str, object]] = [
        {"testimony": ""},  # empty
        {"testimony": "bot", "website": "filled"},  # honeypot
        {"testimony": "forged", "form_id": "x.y.z"},  # forged one-time value
    ]
    for data in refused:
        assert post(client, data).status_code == 400
    bad_csrf = client.post("/submit", data={"csrf_token": "bad", "testimony": "x"})
    assert bad_csrf.status_code == 400
    assert_nothing_kept(config.data_dir)
    # The one token is still there for the witness; after that, the bucket is empty.
    assert post(client, {"testimony": "the witness"}).status_code == 200
    assert post(client, {"testimony": "one too many"}).status_code == 429


def test_a_refused_upload_gives_its_token_back(make_app) -> None:
    app = make_app(max_files=1)
    app.extensions["portal"].bucket = TokenBucket(rate_per_second=1e-6, burst=1, clock=FakeClock())
    client = app.test_client()
    files = [(io.BytesIO(b"a"), "a"), (io.BytesIO(b"b"), "b")]
    assert post(client, {"testimony": "two files", "attachments": files}).status_code == 413
    assert post(client, {"testimony": "the witness"}).status_code == 200


def test_low_disk_space_refuses_before_any_byte_is_stored(config, monkeypatch, make_app) -> None:
    app = make_app(min_free_mb=1024)
    store = app.extensions["portal"].store
    monkeypatch.setattr(store, "free_bytes", lambda: 1023 * 1024 * 1024)

    def no_staging() -> None:
        raise AssertionError("a submission was staged although the disk is below the floor")

    monkeypatch.setattr(store, "begin", no_staging)
    client = app.test_client()
    response = post(client, {"testimony": "x", "attachments": (io.BytesIO(b"y" * 1000), "y")})
    assert response.status_code == 503
    page = response.get_data(as_text=True)
    assert "short of storage space" in page and NOT_SAVED in page
    assert client.get("/submit").status_code == 200  # reading still works
    assert_nothing_kept(config.data_dir)


def test_disk_floor_is_checked_again_for_each_file(config, monkeypatch, make_app) -> None:
    app = make_app(min_free_mb=1)
    store = app.extensions["portal"].store
    free = iter([10 << 20, 10 << 20, 0, 0, 0])  # before the request, file 1, file 2
    monkeypatch.setattr(store, "free_bytes", lambda: next(free, 0))
    client = app.test_client()
    response = post(
        client,
        {
            "testimony": "two files",
            "attachments": [(io.BytesIO(b"a" * 1000), "a"), (io.BytesIO(b"b" * 1000), "b")],
        },
    )
    assert response.status_code == 503
    assert_nothing_kept(config.data_dir)


# --- against the real gunicorn server -------------------------------------


@pytest.fixture
def small_server(make_server):
    return make_server(
        env={"PORTAL_MAX_UPLOAD_MB": "1", "PORTAL_RATE_PER_MINUTE": "1", "PORTAL_RATE_BURST": "4"},
    )


def test_live_oversized_uploads_are_refused_also_when_chunked(small_server) -> None:
    big = os.urandom(1536 * 1024)
    for chunked in (False, True):
        client = small_server.client()
        response = client.submit("too big", [("big.bin", big, "application/octet-stream")],
                                 chunked=chunked)  # fmt: skip
        assert response.status == 413, (chunked, response.status)
        assert "larger than this portal accepts" in response.body
        assert NOT_SAVED in response.body
    assert_nothing_kept(small_server.data_dir)


def test_live_rate_limit_is_global_across_workers(small_server) -> None:
    # Two gunicorn workers, burst 4: however requests are spread over the
    # workers, exactly four are accepted (the 413 test above is separate).
    statuses = []
    for n in range(8):
        client = small_server.client()
        response = client.submit(f"flood {n}")
        statuses.append(response.status)
        if response.status == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert NOT_SAVED in response.body
    assert statuses.count(200) == 4 and statuses.count(429) == 4, statuses
    assert len(SubmissionStore(small_server.data_dir).ids()) == 4


def test_live_huge_headers_get_a_4xx(small_server) -> None:
    for request in (
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(500))
        + b"\r\n",
    ):  # fmt: skip
        with socket.create_connection(("127.0.0.1", small_server.port), timeout=10) as sock:
            sock.sendall(request)
            status = sock.recv(64).split(b" ", 2)[1]
        assert status.startswith(b"4"), status
    assert small_server.client().get("/").status == 200


def test_live_malformed_chunked_body_gets_a_clear_400(small_server) -> None:
    client = small_server.client()
    token = client.csrf_token()
    head = (
        f"POST /submit HTTP/1.1\r\nHost: x\r\nCookie: {client.cookie}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    part = f'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'.encode()
    for broken in (b"zz\r\n", b"5\r\n--b\r\rXXXX\r\n", b"%x\r\n%sXX" % (len(part), part)):
        with socket.create_connection(("127.0.0.1", small_server.port), timeout=10) as sock:
            sock.sendall(head + b"%x\r\n%s\r\n" % (len(part), part) + broken)
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            assert answer.status == 400, (broken, answer.status)
            assert NOT_SAVED in answer.read().decode("utf-8")
    assert_nothing_kept(small_server.data_dir)
