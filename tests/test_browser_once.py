"""One submission per form, in a real browser: reloading "received" re-posts, and stores nothing.

Debian's Chromium, headless, JavaScript off, as in tests/test_browser.py.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Request

from portal.server.store import SubmissionStore
from portal.testing.live import open_submission

pytestmark = pytest.mark.browser


def test_reloading_the_received_page_stores_nothing_more(live_server, identity, browser) -> None:
    server = live_server
    posts: list[str] = []

    def count(request: Request) -> None:
        if request.method == "POST":
            posts.append(request.url)

    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.on("request", count)
    page.goto(f"{server.url}/ko/submit")
    page.locator("input[name=role][value=saw]").check()
    with page.expect_navigation():
        page.get_by_role("button", name="계속").click()  # to the form's last page
    posts.clear()
    page.locator("textarea[name=testimony]").fill("한 번만 저장되어야 합니다")
    page.locator("#q-consent-yes").check()  # the one required answer
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="안전하게 보내기").click()
    assert navigation.value is not None and navigation.value.status == 200
    received = page.locator("h1").inner_text()
    for _ in range(2):  # the witness reloads the page, twice
        response = page.reload()
        assert response is not None and response.status == 200
        assert page.locator("h1").inner_text() == received
    context.close()
    assert len(posts) == 3, "the browser did not re-post the form on reload"
    store = SubmissionStore(server.data_dir)
    [submission_id] = store.ids()
    manifest, _ = open_submission(store.path(submission_id), [identity])
    assert manifest["fields"]["testimony"] == "한 번만 저장되어야 합니다"
