"""`testimony-review open`: decrypt, verify every hash, write safely, skip what is damaged."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path

import pytest

from portal.core.age import X25519Identity, encrypt
from portal.core.manifest import Attachment, build_manifest
from portal.review.cli import ExitStatus
from portal.review.custody import CustodyLog
from portal.review.opening import Opener
from portal.review.record import OpenedRecord
from portal.server.store import SubmissionStore
from tests.review_support import (
    flip_byte,
    open_args,
    open_into,
    review,
    submit,
    write_identity,
)


def test_open_writes_manifest_and_every_attachment_with_its_hash(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    files = [("photo.jpg", b"\xff\xd8" + bytes(range(256)) * 500), ("증언.txt", "안녕".encode())]
    sid = submit(store, [identity], "평양에서 본 것", files, language="ko")

    run = open_into(tmp_path, store.root, key)

    assert run.status == ExitStatus.OK, run.err
    folder = tmp_path / "out" / sid
    manifest = json.loads((folder / "testimony.json").read_text("utf-8"))
    assert manifest["id"] == sid
    assert manifest["fields"]["testimony"] == "평양에서 본 것"
    assert manifest["language"] == "ko"
    for (name, content), entry in zip(files, manifest["attachments"], strict=True):
        assert (folder / name).read_bytes() == content
        assert entry["sha256"] == hashlib.sha256(content).hexdigest()
    assert (tmp_path / "out" / "index.html").is_file()
    assert (folder / "testimony.html").is_file()
    assert oct((folder / "photo.jpg").stat().st_mode & 0o777) == "0o600"


def test_open_writes_to_a_drive_that_refuses_to_fsync_folders(
    tmp_path: Path,
    store: SubmissionStore,
    reviewer: tuple[X25519Identity, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # vfat and exFAT, the usual file systems of a USB drive, answer EINVAL to
    # a folder's fsync; `open --out` onto one once failed after writing.
    identity, key = reviewer
    sid = submit(store, [identity], "text", [("a.txt", b"a" * 70_000)])
    real_fsync = os.fsync
    refused: list[int] = []

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            refused.append(fd)
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run = open_into(tmp_path, store.root, key)

    assert run.status == ExitStatus.OK, run.err
    assert (tmp_path / "out" / sid / "a.txt").read_bytes() == b"a" * 70_000
    assert refused


@pytest.mark.parametrize("layout", ["data-dir", "submissions-copy", "one-submission"])
def test_open_accepts_a_data_dir_a_submissions_copy_or_one_folder(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path], layout: str
) -> None:
    identity, key = reviewer
    sid = submit(store, [identity], "text", [("a.txt", b"a")])
    copy = tmp_path / "usb"
    shutil.copytree(store.submissions_dir, copy / "submissions")
    src = {
        "data-dir": store.root,
        "submissions-copy": copy / "submissions",
        "one-submission": copy / "submissions" / sid,
    }[layout]

    run = open_into(tmp_path, src, key)

    assert run.status == ExitStatus.OK, run.err
    assert (tmp_path / "out" / sid / "a.txt").read_bytes() == b"a"


def test_open_names_the_problem_when_src_holds_no_submissions(
    tmp_path: Path, reviewer: tuple[X25519Identity, Path]
) -> None:
    (tmp_path / "empty").mkdir()
    run = open_into(tmp_path, tmp_path / "empty", reviewer[1])
    assert run.status == ExitStatus.ERROR
    assert "no submissions found" in run.err
    assert "Traceback" not in run.err


HOSTILE_NAMES = [
    "../../escape.txt",
    "/etc/passwd",
    "nul\x00byte.txt",
    "a" * 1000 + ".txt",
    "invoice\u202egpj.exe",
    "Report.txt",
    "report.TXT",
    "cafe\u0301.txt",  # NFD "café"
    "caf\u00e9.txt",  # NFC "café"
    ".",
    "..",
    "",
    "CON",
    "aux.txt",
    "same.txt",
    "same.txt",
    "testimony.json",
    "OPENED.json",
    "testimony.html",
    "..\\..\\windows.txt",
    ".hidden",
    "trailing dot. ",
    "line\nbreak.txt",
    "\u200bzero-width.txt",
]


def test_hostile_names_never_escape_the_folder_or_overwrite_anything(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    files = [(name, f"content {i}".encode()) for i, name in enumerate(HOSTILE_NAMES)]
    sid = submit(store, [identity], "hostile names", files)
    outside_before = sorted(p.name for p in tmp_path.iterdir())

    run = open_into(tmp_path, store.root, key)

    assert run.status == ExitStatus.OK, run.err
    folder = tmp_path / "out" / sid
    record = json.loads((folder / "opened.json").read_text())
    written = [entry["file"] for entry in record["attachments"]]
    # Every attachment got its own file, directly inside the folder.
    assert len(set(written)) == len(files)
    for (_name, content), entry in zip(files, record["attachments"], strict=True):
        path = folder / entry["file"]
        assert path.parent == folder and path.read_bytes() == content
        assert len(entry["file"].encode()) <= 200
        assert not entry["file"].startswith(".")
        assert all(ch not in entry["file"] for ch in "/\\\x00\n\u202e\u200b")
    # Names that collide when case or normalisation is folded got numbers.
    folded = {name.casefold() for name in written}
    assert len(folded) == len(written)
    assert "CON" not in written and "aux.txt" not in written
    # The tool's own files were not overwritten by attachments named like them.
    assert json.loads((folder / "testimony.json").read_text())["id"] == sid
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*outside_before, "out", "custody.jsonl", "custody.jsonl.head"]
    )
    assert not (tmp_path / "escape.txt").exists()
    assert {p.name for p in (tmp_path / "out").iterdir()} == {sid, "index.html"}


def _two_submissions(store: SubmissionStore, identity: X25519Identity) -> tuple[str, str]:
    good = submit(store, [identity], "good one", [("good.txt", b"good" * 1000)])
    bad = submit(store, [identity], "bad one", [("bad.bin", bytes(200_000)), ("x.txt", b"x")])
    return good, bad


@pytest.mark.parametrize(
    "damage",
    [
        "flip-payload-byte",
        "flip-header-mac",
        "truncate-attachment",
        "flip-manifest-byte",
        "missing-attachment",
        "trailing-data",
    ],
)
def test_damaged_submission_is_reported_and_skipped_while_others_open(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path], damage: str
) -> None:
    identity, key = reviewer
    good, bad = _two_submissions(store, identity)
    folder = store.path(bad)
    attachment = folder / "files" / "1.age"
    if damage == "flip-payload-byte":
        flip_byte(attachment, 150_000)
    elif damage == "flip-header-mac":
        header_end = attachment.read_bytes().index(b"\n---") + 10
        flip_byte(attachment, header_end)
    elif damage == "truncate-attachment":
        data = attachment.read_bytes()
        attachment.write_bytes(data[: len(data) - 70_000])
    elif damage == "flip-manifest-byte":
        flip_byte(folder / "testimony.age", -5)
    elif damage == "missing-attachment":
        (folder / "files" / "2.age").unlink()
    elif damage == "trailing-data":
        attachment.write_bytes(attachment.read_bytes() + b"extra")

    run = open_into(tmp_path, store.root, key)

    assert run.status == ExitStatus.INTEGRITY
    assert f"NOT OPENED: {bad}: tampered or damaged" in run.err
    assert (tmp_path / "out" / good / "good.txt").read_bytes() == b"good" * 1000
    # Nothing of the damaged one is left behind, not even partial plaintext.
    assert {p.name for p in (tmp_path / "out").iterdir()} == {good, "index.html"}
    assert bad in (tmp_path / "out" / "index.html").read_text()
    assert "Traceback" not in run.err


def _craft(
    store: SubmissionStore,
    identity: X25519Identity,
    *,
    manifest_id: str | None = None,
    claimed_sha256: str | None = None,
    extra_file: bytes | None = None,
) -> str:
    """A submission written through the store directly, with a manifest we choose."""
    staging = store.begin()
    content = b"the real content"
    relpath, staged = staging.create_attachment()
    staged.write(encrypt(content, [identity.recipient]))
    staged.finish()
    if extra_file is not None:
        _rel, extra = staging.create_attachment()
        extra.write(encrypt(extra_file, [identity.recipient]))
        extra.finish()
    attachment = Attachment(
        path=relpath,
        name="doc.txt",
        type="text/plain",
        size=len(content),
        sha256=claimed_sha256 or hashlib.sha256(content).hexdigest(),
    )
    manifest = build_manifest(
        manifest_id or staging.submission_id, {"testimony": "crafted"}, "en", [attachment]
    )
    staged = staging.create_manifest()
    staged.write(encrypt(manifest, [identity.recipient]))
    staged.finish()
    return store.commit(staging)


def test_attachment_whose_sha256_differs_from_the_manifest_is_tampered(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    bad = _craft(store, identity, claimed_sha256="0" * 64)
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.INTEGRITY
    assert "SHA-256 does not match the manifest" in run.err
    assert not (tmp_path / "out" / bad).exists()


def test_manifest_moved_to_another_submission_is_tampered(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    first = submit(store, [identity], "first", [("a.txt", b"a")])
    second = submit(store, [identity], "second", [("b.txt", b"b")])
    shutil.copy(store.path(first) / "testimony.age", store.path(second) / "testimony.age")

    run = open_into(tmp_path, store.root, key)

    assert run.status == ExitStatus.INTEGRITY
    assert "id does not match the folder" in run.err
    assert (tmp_path / "out" / first / "a.txt").exists()
    assert not (tmp_path / "out" / second).exists()


def test_empty_unlisted_part_is_ignored_but_unlisted_data_is_tampered(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    # The browser's empty "no file chosen" part: stored, but not in the manifest.
    empty = _craft(store, identity, extra_file=b"")
    planted = _craft(store, identity, extra_file=b"planted data")

    run = open_into(tmp_path, store.root, key)

    assert run.status == ExitStatus.INTEGRITY
    assert (tmp_path / "out" / empty / "doc.txt").read_bytes() == b"the real content"
    assert f"{planted}: tampered or damaged: files/2.age holds data" in run.err


def test_symlink_planted_in_a_submission_is_refused(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    sid = submit(store, [identity], "x", [("a.txt", b"a")])
    (store.path(sid) / "files" / "9.age").symlink_to("/etc/passwd")
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.INTEGRITY
    assert "files/9.age is a symbolic link" in run.err


def test_a_symlinked_manifest_is_named_as_a_link_not_as_missing(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    real = submit(store, [identity], "real")
    sid = submit(store, [identity], "x")
    (store.path(sid) / "testimony.age").unlink()
    (store.path(sid) / "testimony.age").symlink_to(store.path(real) / "testimony.age")
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.INTEGRITY
    assert f"{sid}: testimony.age is a symbolic link; not followed" in run.err


def test_submission_for_another_key_says_which_identity_is_missing(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    _identity, key = reviewer
    submit(store, [X25519Identity.generate()], "for someone else")
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.ERROR
    assert "no matching key" in run.err and "--identity" in run.err


def test_old_and_new_identities_open_submissions_from_before_and_after_rotation(
    tmp_path: Path, store: SubmissionStore
) -> None:
    old = write_identity(tmp_path / "old.txt")
    new = write_identity(tmp_path / "new.txt")
    before = submit(store, [old], "before rotation")
    during = submit(store, [old, new], "during rotation")
    after = submit(store, [new], "after rotation")

    run = review(
        [
            "open", store.root, "-i", tmp_path / "old.txt", "--identity", tmp_path / "new.txt",
            "--out", tmp_path / "out", "--custody", tmp_path / "c.jsonl",
        ]
    )  # fmt: skip

    assert run.status == ExitStatus.OK, run.err
    for sid in (before, during, after):
        assert (tmp_path / "out" / sid / "testimony.json").exists()


def test_second_run_skips_what_is_opened_and_opens_what_is_new(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    first = submit(store, [identity], "first", [("a.txt", b"a")])
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    second = submit(store, [identity], "second")

    run = open_into(tmp_path, store.root, key)

    assert run.status == ExitStatus.OK, run.err
    assert f"{first}: already opened" in run.err and f"{second}: opened" in run.err
    log = CustodyLog(tmp_path / "custody.jsonl")
    assert [e.data["submission"] for e in log.entries()] == [first, second]


def test_opened_folder_edited_afterwards_is_not_silently_skipped(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    sid = submit(store, [identity], "x", [("a.txt", b"abc")])
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    (tmp_path / "out" / sid / "a.txt").write_bytes(b"changed!")
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.INTEGRITY
    assert f"NOT OPENED: {sid}: changed since opened" in run.err
    assert "a.txt is missing or changed" in run.err


def test_interrupted_open_leaves_no_plaintext_and_resumes(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    sid = submit(store, [identity], "big", [("big.bin", bytes(3 << 20))])
    out = tmp_path / "out"

    def interrupt(_count: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Opener(out, [identity], on_bytes=interrupt).open_all(store.root)
    assert list(out.iterdir()) == []

    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.OK, run.err
    assert (out / sid / "big.bin").stat().st_size == 3 << 20


def test_open_records_ciphertext_and_plaintext_hashes_in_the_custody_log(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    sid = submit(store, [identity], "x", [("a.txt", b"abc")])
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK

    [entry] = CustodyLog(tmp_path / "custody.jsonl").entries()
    cipher = store.path(sid) / "files" / "1.age"
    assert entry.data["action"] == "open" and entry.data["reviewer"] == "Test Reviewer"
    assert entry.data["submission"] == sid
    [attachment] = entry.data["attachments"]
    assert attachment["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert attachment["ciphertext_sha256"] == hashlib.sha256(cipher.read_bytes()).hexdigest()
    manifest_cipher = (store.path(sid) / "testimony.age").read_bytes()
    assert (
        entry.data["manifest"]["ciphertext_sha256"] == hashlib.sha256(manifest_cipher).hexdigest()
    )


class _TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            self.attributes.add(name)
            if name in ("href", "src"):
                self.urls.append(value or "")


HOSTILE_TEXT = (
    '<script>alert("x")</script><img src=x onerror=alert(1)>'
    '<a href="javascript:alert(1)">click</a></td></tr></table><style>body{display:none}</style>'
    "<link rel=stylesheet href=https://evil.example/x.css>"
)


def test_pages_render_hostile_testimony_as_text_with_no_script_or_external_resource(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    sid = submit(
        store,
        [identity],
        HOSTILE_TEXT,
        [('"><script>alert(2)</script>.txt', b"x"), ("page.html", b"<script>alert(3)</script>")],
        language='"><script>',
        fields={"<b>contact</b>": HOSTILE_TEXT},
    )
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK

    for page in (tmp_path / "out" / "index.html", tmp_path / "out" / sid / "testimony.html"):
        text = page.read_text("utf-8")
        parser = _TagCollector()
        parser.feed(text)
        assert parser.tags <= {
            "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "tr",
            "th", "td", "code", "div", "ul", "li", "a", "span", "br", "bdi",
        }  # fmt: skip
        assert not any(name.startswith("on") for name in parser.attributes)
        assert "src" not in parser.attributes
        assert all(
            not url.startswith(("javascript:", "http:", "https:", "//")) for url in parser.urls
        )
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
        assert "Content-Security-Policy" in text and "default-src 'none'" in text
        # An HTML attachment is listed but not linked: a browser would run it.
        assert "page.html</bdi> <span" in text


def test_a_large_random_attachment_opens_byte_for_byte(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    # Decrypted a block at a time into reused buffers, hashed and written on
    # a helper thread: every byte must land where it belongs.
    identity, key = reviewer
    data = os.urandom((9 << 20) + 12345)
    sid = submit(store, [identity], "large", [("film.bin", data)])
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.OK, run.err
    assert (tmp_path / "out" / sid / "film.bin").read_bytes() == data


def test_large_attachment_is_streamed_with_bounded_memory(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, _key = reviewer
    size = 48 << 20
    sid = submit(store, [identity], "large", [("video.mp4", bytes(size))])
    tracemalloc.start()
    try:
        Opener(tmp_path / "out", [identity]).open_all(store.root)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "out" / sid / "video.mp4").stat().st_size == size
    assert peak < 8 << 20, f"peak Python memory {peak} bytes while opening {size} bytes"


def test_reviewer_cli_never_imports_flask_or_jinja() -> None:
    code = (
        "import sys, portal.review.cli, portal.review.forward, portal.review.shares; "
        "web = ('flask', 'jinja2', 'werkzeug', 'portal.server.web'); "
        "bad = [m for m in web if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_open_imports_only_the_modules_it_needs(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    # `open` of one large submission is a new process: importing the desk,
    # forward, table and key-sharing code it never runs cost it 30 ms.
    identity, key = reviewer
    sid = submit(store, [identity], "imports", [("a.txt", b"a")])
    argv = [str(a) for a in open_args(store.root, key, tmp_path / "out", tmp_path / "c.jsonl")]
    others = (
        "portal.review.desk", "portal.review.forward", "portal.review.table",
        "portal.review.cleaning", "portal.review.shares", "portal.review.consent",
        "portal.review.reply", "portal.review.cli.cmd_forward", "portal.review.cli.cmd_desk",
    )  # fmt: skip
    code = (
        "import sys; from portal.review.cli import main; status = main(sys.argv[1:]); "
        f"print(int(status), [m for m in {others!r} if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "0 []", result.stdout + result.stderr
    assert (tmp_path / "out" / sid / "a.txt").read_bytes() == b"a"


def test_usage_errors_name_the_missing_option(tmp_path: Path) -> None:
    run = review(["open", str(tmp_path)])
    assert run.status == ExitStatus.USAGE
    assert "--identity" in run.err


def test_giving_an_output_folder_as_src_is_explained(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    submit(store, [identity], "x")
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    run = open_into(tmp_path, tmp_path / "out", key, out="out2")
    assert run.status == ExitStatus.ERROR
    assert "is it a folder written by `open`?" in run.err


def test_an_interrupt_between_submissions_leaves_only_finished_ones(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, _key = reviewer
    ids = [submit(store, [identity], f"number {n}", [("a.bin", bytes(300_000))]) for n in range(4)]
    logged: list[str] = []

    def log_then_interrupt(record: OpenedRecord) -> None:
        if logged:
            raise KeyboardInterrupt
        logged.append(record.id)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        Opener(out, [identity], on_opened=log_then_interrupt, jobs=2).open_all(store.root)
    # Exactly the submission whose custody entry was written is in place;
    # nothing else, not even a hidden work folder, holds plaintext.
    assert [p.name for p in out.iterdir()] == logged
    assert set(logged) <= set(ids)


def test_a_submission_folder_that_is_a_symlink_is_reported_not_followed(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    real = submit(store, [identity], "real", [("a.txt", b"a")])
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(store.path(real), elsewhere)
    fake = "L" * 24
    (store.submissions_dir / fake).symlink_to(elsewhere)
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.INTEGRITY
    assert f"NOT OPENED: {fake}: tampered or damaged" in run.err and "symbolic link" in run.err
    assert (tmp_path / "out" / real / "a.txt").exists()


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_a_file_named_like_a_submission_is_reported_not_skipped(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path], kind: str
) -> None:
    # Anyone who handles the export drive can drop one; a reviewer must hear
    # about it (and the tool must never read a FIFO, which would hang).
    identity, key = reviewer
    real = submit(store, [identity], "real", [("a.txt", b"a")])
    fake = "F" * 24
    if kind == "file":
        (store.submissions_dir / fake).write_text("not a submission")
    else:
        os.mkfifo(store.submissions_dir / fake)
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.INTEGRITY
    assert f"NOT OPENED: {fake}: tampered or damaged" in run.err and "not a folder" in run.err
    assert (tmp_path / "out" / real / "a.txt").exists()
    assert fake in (tmp_path / "out" / "index.html").read_text()


@pytest.mark.parametrize("inside", [".", "submissions", "submissions/ID"])
def test_open_refuses_to_write_plaintext_inside_src(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path], inside: str
) -> None:
    # The export drive travels; plaintext written onto it (or into a data
    # directory) would leave the air-gapped machine.
    identity, key = reviewer
    sid = submit(store, [identity], "secret words", [("a.txt", b"a")])
    before = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}
    out = store.root / inside.replace("ID", sid)
    run = review(open_args(store.root, key, out, tmp_path / "custody.jsonl"))
    assert run.status == ExitStatus.ERROR, run.err
    assert "inside SRC" in run.err
    after = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}
    assert after == before


def test_a_right_to_left_override_in_a_name_is_shown_not_obeyed(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    # "invoice\u202egpj.exe" would read "invoiceexe.jpg" in the "name as sent"
    # column; the reviewer must see the control, not its effect.
    identity, key = reviewer
    sid = submit(store, [identity], "x", [("invoice\u202egpj.exe", b"MZ")])
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    page = (tmp_path / "out" / sid / "testimony.html").read_text(encoding="utf-8")
    assert "invoice[U+202E]gpj.exe" in page
    assert "\u202e" not in page
    manifest = json.loads((tmp_path / "out" / sid / "testimony.json").read_text("utf-8"))
    assert manifest["attachments"][0]["name"] == "invoice\u202egpj.exe"
