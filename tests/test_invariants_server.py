"""Design invariants 1 and 6 through a real gunicorn server on loopback.

A unique marker is submitted in the testimony text and inside a 5 MB
attachment; afterwards it must appear in no file under the data directory,
the server's TMPDIR or its log, every stored file must be a standard age
file, and the submission must open with our reviewer tool, pyrage and the
stock `age` CLI alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
from pathlib import Path

import pyrage
import pytest

from portal.review.cli import main as review_main
from portal.testing.live import LiveServer
from tests.support import require_tool

AGE_MAGIC = b"age-encryption.org/v1"


def files_under(*roots: Path) -> list[Path]:
    return [
        Path(dirpath) / name
        for root in roots
        for dirpath, _dirs, names in os.walk(root)
        for name in names
    ]


def make_attachment(marker: bytes, size: int = 5 * 1024 * 1024) -> bytes:
    filler = secrets.token_bytes(size // 2)
    return filler + marker + filler[: size - len(filler) - len(marker)]


@pytest.mark.slow
def test_plaintext_never_reaches_disk_and_every_oracle_opens_it(
    live_server: LiveServer, tmp_path: Path
) -> None:
    marker = ("MARKER-" + secrets.token_hex(16)).encode()
    attachment = make_attachment(marker)
    response = live_server.client().submit(
        f"testimony with {marker.decode()} inside",
        files=[("evidence.bin", attachment, "application/octet-stream")],
    )
    assert response.status == 200, response.body
    assert 'class="notice ok"' in response.body
    live_server.stop()

    stored = files_under(live_server.data_dir, live_server.tmp_dir) + [live_server.log_path]
    for path in stored:
        data = path.read_bytes()
        assert marker not in data, f"plaintext marker found in {path}"
        assert marker.hex().encode() not in data, f"hex of marker found in {path}"

    submissions = live_server.data_dir / "submissions"
    ciphertexts = files_under(submissions)
    assert len(ciphertexts) == 2
    for path in ciphertexts:
        assert path.read_bytes().startswith(AGE_MAGIC + b"\n"), path

    # Our reviewer tool.
    out = tmp_path / "opened"
    status = review_main(
        [
            "open",
            str(live_server.data_dir),
            "--identity",
            str(live_server.identity_file),
            "--out",
            str(out),
        ]
    )
    assert status == 0
    [opened] = [p for p in out.iterdir() if p.is_dir()]
    manifest = json.loads((opened / "testimony.json").read_text("utf-8"))
    assert marker.decode() in manifest["fields"]["testimony"]
    [entry] = manifest["attachments"]
    assert entry["sha256"] == hashlib.sha256(attachment).hexdigest()
    assert entry["size"] == len(attachment)

    submission_dir = submissions / opened.name
    identity_text = live_server.identity_file.read_text()
    secret = next(line for line in identity_text.splitlines() if line.startswith("AGE-SECRET"))

    # pyrage, an independent implementation.
    pyrage_identity = pyrage.x25519.Identity.from_str(secret)
    attachment_ct = (submission_dir / entry["path"]).read_bytes()
    assert pyrage.decrypt(attachment_ct, [pyrage_identity]) == attachment
    manifest_pt = pyrage.decrypt((submission_dir / "testimony.age").read_bytes(), [pyrage_identity])
    assert json.loads(manifest_pt)["attachments"][0]["sha256"] == entry["sha256"]

    # The stock age CLI.
    age = require_tool("age")
    plain = subprocess.run(
        [age, "-d", "-i", str(live_server.identity_file), str(submission_dir / entry["path"])],
        capture_output=True,
        check=True,
    ).stdout
    assert hashlib.sha256(plain).hexdigest() == entry["sha256"]


def _session_payload(cookie_header: str) -> bytes:
    """The decoded payload of Flask's session cookie (a signed client cookie), or b""."""
    import base64
    import zlib

    value = cookie_header.split(";", 1)[0].partition("=")[2]
    compressed = value.startswith(".")
    payload = value.lstrip(".").split(".", 1)[0]
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return zlib.decompress(data) if compressed else data


def test_an_unfinished_multi_page_answer_leaves_nothing_on_disk_in_logs_or_shm(
    live_server: LiveServer,
) -> None:
    """Page 1, the insider's page 2, Back, Continue, another language, then abandoned.

    The answers travel only in the pages' own forms: afterwards no marker is
    in any file of the data directory, the server's TMPDIR, its log or
    /dev/shm, nor in the session cookie the browser holds.
    """
    from urllib.parse import urlencode

    from portal.testing.live import MultipartBody, hidden_fields

    marker = "UNSENT-" + secrets.token_hex(16)
    client = live_server.client()
    cookies: list[str] = []

    def post(path: str, fields: dict[str, str]) -> str:
        body = urlencode(fields).encode()
        response = client.request(
            "POST",
            path,
            body=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Content-Length": str(len(body)),
            },
        )
        assert response.status == 200, response.body[:300]
        cookies.extend(v for k, v in response.headers.items() if k == "set-cookie")
        return response.body

    first = client.get("/ko/submit").body
    start = {**hidden_fields(first), "page": "1", "go": "next", "role": "took_part"}
    second = post("/ko/submit/page", start)
    answers = {
        "orders": f"{marker} 명령은 과장에게서",
        "did_and_saw": f"밤마다 {marker}",
        "records": marker,
    }
    back = post("/ko/submit/page", {**hidden_fields(second), **answers, "go": "back"})
    assert marker in back  # carried by the page itself, in hidden fields
    again = post("/ko/submit/page", {**hidden_fields(back), "go": "next"})
    chinese = post("/zh/submit/page", {**hidden_fields(again), "go": "stay"})
    assert marker in chinese
    # A hostile client sends a file to the page route: refused (files are
    # staged only where submissions are stored), and never kept.
    body = MultipartBody(
        {**hidden_fields(chinese), "go": "back"},
        [("secret.txt", f"file {marker}".encode(), "text/plain")],
    )
    response = client.request(
        "POST",
        "/ko/submit/page",
        body=iter(body),
        headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
    )
    assert response.status == 413
    live_server.stop()

    shm = [p for p in files_under(Path("/dev/shm")) if p.is_file() and os.access(p, os.R_OK)]
    stored = files_under(live_server.data_dir, live_server.tmp_dir) + [live_server.log_path]
    assert live_server.log_path.stat().st_size > 0  # the scan reads a real log
    for path in stored + shm:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        assert marker.encode() not in data, f"unsent answer found in {path}"
        assert marker.encode().hex().encode() not in data, f"hex of unsent answer in {path}"
    assert not list((live_server.data_dir / "submissions").iterdir())
    for cookie in cookies + ([client.cookie] if client.cookie else []):
        assert marker.encode() not in _session_payload(cookie), "an answer in the session cookie"
