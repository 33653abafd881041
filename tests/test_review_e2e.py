"""End to end: real server -> export (with purge) -> open on the "air-gapped" side -> forward."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from portal.core.age import decrypt, parse_identities
from portal.review.cli import ExitStatus
from portal.review.custody import CustodyLog
from portal.server.cli import main as portal_cli
from portal.server.export import export_submissions
from portal.server.store import SubmissionStore
from portal.testing.live import RECEIVED_MARKERS, LiveServer
from tests.review_support import flip_byte, open_args, review, write_identity
from tests.support import require_tool

PHOTO = b"\xff\xd8\xff" + bytes(range(256)) * 900
SUBMISSIONS = [
    ("평양 교화소에서 있었던 일을 증언합니다.", [("사진 1.jpg", PHOTO)], "ko"),
    (
        "What I saw at the border, 2019.",
        [("notes.txt", b"first line\nsecond line\n"), ("../../evil.sh", b"#!/bin/sh\nrm -rf /\n")],
        "en",
    ),
    ('<script>alert("reviewer")</script> plain text only', [], "en"),
    ("The fourth account, with a recording.", [("recording.m4a", bytes(700_000))], "en"),
]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_server_to_export_to_open_with_tamper_detection_and_purge(
    live_server: LiveServer, tmp_path: Path
) -> None:
    client = live_server.client()
    for text, files, lang in SUBMISSIONS:
        response = client.submit(text, [(n, c, "application/octet-stream") for n, c in files], lang)
        assert response.status == 200 and any(m in response.body for m in RECEIVED_MARKERS)

    store = SubmissionStore(live_server.data_dir)
    ids = store.ids()
    assert len(ids) == len(SUBMISSIONS)
    # Ids are random: find which is which, so that the submission kept back
    # and the one tampered with are never the hostile-HTML one checked below.
    identities = parse_identities(live_server.identity_file.read_text())
    id_of = {
        json.loads(decrypt((store.path(sid) / "testimony.age").read_bytes(), identities))["fields"][
            "testimony"
        ]: sid
        for sid in ids
    }
    ids = [id_of[SUBMISSIONS[0][0]]] + [sid for sid in ids if sid != id_of[SUBMISSIONS[0][0]]]

    # One submission cannot be verified on the medium (a different file is in
    # its place): it must stay on the server while the others are purged.
    usb = tmp_path / "usb"
    kept = ids[0]
    planted = usb / "submissions" / kept / "testimony.age"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"not the server's file")
    kept_files = {p.name: p.read_bytes() for p in store.path(kept).rglob("*") if p.is_file()}
    err = io.StringIO()
    status = portal_cli(
        ["export", str(usb), "--purge", "--same-disk"],
        env={"PORTAL_DATA_DIR": str(live_server.data_dir)},
        stdout=io.StringIO(),
        stderr=err,
    )
    assert status == 1 and f"not exported: {kept}" in err.getvalue()
    assert store.ids() == [kept]
    assert {
        p.name: p.read_bytes() for p in store.path(kept).rglob("*") if p.is_file()
    } == kept_files
    shutil.rmtree(usb / "submissions" / kept)

    # In transit, one byte of one exported attachment flips.
    tampered = id_of[SUBMISSIONS[3][0]]
    flip_byte(usb / "submissions" / tampered / "files" / "1.age", -100)

    # The air-gapped side: a fresh folder, only the identity and the medium.
    airgap = tmp_path / "airgap"
    airgap.mkdir()
    key = airgap / "identity.txt"
    shutil.copy(live_server.identity_file, key)
    out = airgap / "opened"
    run = review(open_args(usb, key, out, airgap / "custody.jsonl"))

    assert run.status == ExitStatus.INTEGRITY
    assert f"NOT OPENED: {tampered}: tampered or damaged" in run.err
    assert not (out / tampered).exists()
    expected = {text: files for text, files, _lang in SUBMISSIONS}
    opened = [sid for sid in ids[1:] if sid != tampered]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(opened)
    for sid in opened:
        manifest = json.loads((out / sid / "testimony.json").read_text("utf-8"))
        record = json.loads((out / sid / "opened.json").read_text("utf-8"))
        files = expected.pop(manifest["fields"]["testimony"])
        assert manifest["id"] == sid
        assert [a["sha256"] for a in manifest["attachments"]] == [_sha(c) for _n, c in files]
        for (_name, content), entry in zip(files, record["attachments"], strict=True):
            written = out / sid / entry["file"]
            assert written.parent == out / sid
            assert _sha(written.read_bytes()) == _sha(content) == entry["sha256"]
    log = CustodyLog(airgap / "custody.jsonl")
    assert sorted(e.data["submission"] for e in log.entries()) == sorted(opened)
    assert "&lt;script&gt;" in (out / "index.html").read_text("utf-8")

    # A second run opens nothing twice and still reports the damaged one.
    again = review(open_args(usb, key, out, airgap / "custody.jsonl"))
    assert again.status == ExitStatus.INTEGRITY
    assert again.err.count("already opened") >= len(opened)
    assert log.verify().count == len(opened)

    # Forward one opened submission to a partner, who uses only age and tar.
    require_tool("age")
    partner_key = tmp_path / "partner.txt"
    partner = write_identity(partner_key)
    bundle = airgap / "for-partner.tar.age"
    run = review(["forward", opened[0], "--from", out, "--to", str(partner.recipient),
                  "--out", bundle, "--custody", airgap / "custody.jsonl"])  # fmt: skip
    assert run.status == ExitStatus.OK, run.err
    partner_dir = tmp_path / "partner"
    partner_dir.mkdir()
    tar = subprocess.run(["age", "-d", "-i", partner_key, bundle], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", partner_dir], input=tar.stdout, check=True)
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=partner_dir, capture_output=True)
    assert check.returncode == 0, check.stdout
    assert log.verify().count == len(opened) + 1


@pytest.mark.needs("age")
def test_stock_age_opens_the_exported_ciphertext_too(
    live_server: LiveServer, tmp_path: Path
) -> None:
    client = live_server.client()
    response = client.submit("for the stock CLI", [("a.txt", b"standard format", "text/plain")])
    assert response.status == 200
    store = SubmissionStore(live_server.data_dir)
    usb = tmp_path / "usb"
    assert export_submissions(store, usb, same_disk=True).ok
    [sid] = store.ids()
    result = subprocess.run(
        [
            "age",
            "-d",
            "-i",
            live_server.identity_file,
            usb / "submissions" / sid / "files" / "1.age",
        ],
        capture_output=True,
        check=True,
    )
    assert result.stdout == b"standard format"
