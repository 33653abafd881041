"""Junk cannot spend the witnesses' rate budget: only submission attempts take a token."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from portal.server.store import SubmissionStore
from portal.testing.live import Client, MultipartBody

RATE_PER_MINUTE = 30
BURST = 10
JUNK_PER_SECOND = 20
SECONDS = 20
WITNESS_SUBMISSIONS = 10
# Several flooding threads, so that a slow answer does not slow the flood.
FLOODERS = 4


@pytest.fixture
def limited_server(make_server):
    return make_server(
        env={"PORTAL_RATE_PER_MINUTE": str(RATE_PER_MINUTE), "PORTAL_RATE_BURST": str(BURST)},
    )


def junk_requests(url: str) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """POSTs that can never become a submission, as a flood would send them."""
    with_session = Client(url)
    with_session.get("/ko/submit")  # a real form session, but no valid form
    cookie = {"Cookie": with_session.cookie or ""}
    form = MultipartBody({"testimony": "junk"}, [("junk.bin", b"\0" * 2000, "video/mp4")])
    body = b"".join(form)
    multipart = {"Content-Type": form.content_type}
    return [
        ("POST", "/no-such-page", b"", {}),
        ("POST", "/", b"x=1", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("POST", "/ko/submit", body, multipart),  # no session at all
        ("POST", "/submit", body, {**multipart, **cookie}),  # session, no CSRF token
    ]


@pytest.mark.slow
def test_junk_posts_do_not_lock_a_witness_out(limited_server) -> None:
    junk = junk_requests(limited_server.url)
    statuses: Counter[int] = Counter()
    stop = time.monotonic() + SECONDS

    def flood(offset: int) -> None:
        client = Client(limited_server.url, timeout=30)
        interval = FLOODERS / JUNK_PER_SECOND
        n = offset
        next_at = time.monotonic()
        while time.monotonic() < stop:
            method, path, body, headers = junk[n % len(junk)]
            statuses[client.request(method, path, body=body, headers=headers).status] += 1
            n += FLOODERS
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    flooders = [threading.Thread(target=flood, args=(k,)) for k in range(FLOODERS)]
    for thread in flooders:
        thread.start()
    results = []
    try:
        time.sleep(1)  # the flood is under way before the witness comes
        for n in range(WITNESS_SUBMISSIONS):
            witness = limited_server.client()
            results.append(witness.submit(f"witness testimony {n}", lang="ko").status)
            time.sleep((SECONDS - 2) / WITNESS_SUBMISSIONS)
    finally:
        for thread in flooders:
            thread.join()
    assert results == [200] * WITNESS_SUBMISSIONS, (results, statuses)
    assert len(SubmissionStore(limited_server.data_dir).ids()) == WITNESS_SUBMISSIONS
    # The flood really ran, and every junk request got its own answer, never 429.
    assert sum(statuses.values()) >= JUNK_PER_SECOND * SECONDS * 0.8, statuses
    assert set(statuses) <= {400, 404, 405}, statuses
