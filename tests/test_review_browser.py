"""The reviewer's pages in Debian's Chromium with JavaScript ON: no attachment link runs script.

A link in `index.html` is a `file://` URL that Chromium renders by the file's
extension, and many extensions besides `.html` make it a document with
script (`.shtm`, `.xhtm`, `.rss`, `.atom`, `.svg`, ...). Every extension in
the system MIME table (Debian's `media-types`, /etc/mime.types) is tried
here: each gets an attachment holding a script payload that runs as HTML,
XHTML or SVG, and each extension the tool may link also gets a polyglot
that starts with real media magic bytes followed by the same payload. The
test opens them with the tool, follows every link on every page it wrote
with JavaScript enabled, and watches for the payload's console message and
title change. A control navigation to an unlinked `.html` attachment proves
the detector sees the payload when it does run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from playwright.sync_api import Browser, Dialog, Error, Page

from portal.review import inert
from portal.review.cli import ExitStatus
from tests.review_support import make_store, open_args, review, submit, write_identity

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MIME_TYPES = Path("/etc/mime.types")
MARKER = "PWNED-4f1c"
PAYLOAD = f"""<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>payload</title></head><body>
<script>document.title = "{MARKER}"; console.log("{MARKER}");</script>
<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"
  onload="console.log('{MARKER}')"><rect width="1" height="1"/></svg>
</body></html>
""".encode()
# The first bytes of each medium the tool may link; the payload follows them.
MAGIC = {
    "png": b"\x89PNG\r\n\x1a\n",
    "jpg": b"\xff\xd8\xff\xe0",
    "jpeg": b"\xff\xd8\xff\xe0",
    "gif": b"GIF89a",
    "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    "bmp": b"BM",
    "mp3": b"ID3\x04\x00\x00",
    "ogg": b"OggS\x00",
    "oga": b"OggS\x00",
    "opus": b"OggS\x00",
    "ogv": b"OggS\x00",
    "wav": b"RIFF\x00\x10\x00\x00WAVEfmt ",
    "flac": b"fLaC",
    "m4a": b"\x00\x00\x00\x18ftypM4A ",
    "mp4": b"\x00\x00\x00\x18ftypmp42",
    "m4v": b"\x00\x00\x00\x18ftypM4V ",
    "webm": b"\x1a\x45\xdf\xa3",
}
PER_SUBMISSION = 250


def mime_table_extensions() -> list[str]:
    if not MIME_TYPES.is_file():
        pytest.fail(f"{MIME_TYPES} is missing: install Debian's media-types (make system-deps)")
    extensions = set()
    for line in MIME_TYPES.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        extensions.update(words[1:])
    return sorted(extensions)


def _watch(page: Page, seen: list[str]) -> None:
    page.on("console", lambda message: seen.append(f"console: {message.text}"))

    def dismiss(dialog: Dialog) -> None:
        seen.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", dismiss)


def _visit(page: Page, url: str) -> None:
    try:
        page.goto(url, wait_until="load", timeout=20_000)
    except Error as exc:
        # A type Chromium does not show is downloaded, which runs nothing.
        if "Download is starting" not in str(exc):
            raise


def test_every_mime_table_extension_is_linked_only_if_inert_and_no_link_runs_script(
    tmp_path: Path, browser: Browser
) -> None:
    table = mime_table_extensions()
    assert len(table) > 1000  # the whole table, not a sample
    # The ones the issue found linked, whether or not this table lists them.
    extensions = sorted({*table, "shtm", "xhtm", "rss", "atom", "svg", "html"})
    identity = write_identity(tmp_path / "id.txt")
    store = make_store(tmp_path / "data")
    files = [(f"p.{ext}", PAYLOAD) for ext in extensions]
    files += [(f"m.{ext}", magic + b"\n" + PAYLOAD) for ext, magic in MAGIC.items()]
    files += [("notes.txt", b"plain <script>console.log('" + MARKER.encode() + b"')</script>")]
    ids = [
        submit(store, [identity], f"batch {n}", files[start : start + PER_SUBMISSION])
        for n, start in enumerate(range(0, len(files), PER_SUBMISSION))
    ]
    out = tmp_path / "out"
    run = review(open_args(store.root, tmp_path / "id.txt", out, tmp_path / "custody.jsonl"))
    assert run.status == ExitStatus.OK, run.err

    context = browser.new_context(java_script_enabled=True)
    page = context.new_page()
    seen: list[str] = []
    _watch(page, seen)
    context.on("page", lambda popup: seen.append(f"popup: {popup.url}"))
    pages = [out / "index.html", *(out / sid / "testimony.html" for sid in ids)]
    links: set[str] = set()
    for our_page in pages:
        _visit(page, our_page.as_uri())
        links.update(page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"))
    attachment_links = {
        url for url in links if not re.search(r"/(index|testimony)\.html(#.*)?$", url)
    }
    linked_names = {Path(unquote(urlparse(url).path)).name for url in attachment_links}

    # Only the real media are linked; every payload-only file, whatever its
    # name, is listed as not linked, and the text file is shown on its page.
    assert linked_names == {f"m.{ext}" for ext in MAGIC}
    shown = "".join((out / sid / "testimony.html").read_text("utf-8") for sid in ids)
    assert "plain &lt;script&gt;console.log(" in shown
    index = (out / "index.html").read_text("utf-8")
    listed = index.count("not linked:") + index.count("(text, shown on the page)")
    assert listed == len(files) - len(MAGIC)
    assert (
        any(
            url.endswith(
                "testimony.html#file-" + str(len(files) % PER_SUBMISSION or PER_SUBMISSION)
            )
            for url in links
        )
        or "notes.txt" in index
    )

    for url in sorted(attachment_links | links):
        _visit(page, url)
        assert page.title() != MARKER, url
    assert seen == [], seen

    # The control: the same payload does run when opened by hand as .html,
    # so the silence above is the tool's doing, not a blind detector.
    html = next((out / sid / "p.html") for sid in ids if (out / sid / "p.html").exists())
    _visit(page, html.as_uri())
    assert page.title() == MARKER and f"console: {MARKER}" in seen
    context.close()


def test_the_media_table_is_what_the_browser_test_covers() -> None:
    # Every medium the tool links has a polyglot in the browser test above.
    assert set(json.loads(json.dumps(sorted(MAGIC)))) == {
        suffix.lstrip(".") for suffix in inert._MEDIA
    }
