"""Submitting through the Flask app: streamed encryption, manifest, limits, refusal."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pytest

from portal.core.age import X25519Identity, decrypt
from portal.server.config import Config, ConfigError
from portal.server.store import SubmissionStore
from portal.testing.live import csrf_token, hidden_fields
from portal.testing.live import post_form as post


def form_token(client, path: str = "/submit") -> str:
    page = client.get(path)
    assert page.status_code == 200
    return csrf_token(page.get_data(as_text=True))


def open_only_submission(config: Config, identity: X25519Identity) -> tuple[dict, Path]:
    store = SubmissionStore(config.data_dir)
    [submission_id] = store.ids()
    directory = store.path(submission_id)
    manifest = json.loads(decrypt((directory / "testimony.age").read_bytes(), [identity]))
    assert manifest["id"] == submission_id
    return manifest, directory


def test_landing_and_form_pages_answer(client) -> None:
    assert client.get("/").status_code == 200
    first = client.get("/submit").get_data(as_text=True)
    assert 'name="role"' in first and 'name="csrf_token"' in first
    fields = {**hidden_fields(first), "go": "next", "role": "suffered"}
    page = client.post("/submit/page", data=fields).get_data(as_text=True)
    for name in ("testimony", "attachments", "csrf_token"):
        assert f'name="{name}"' in page
    assert 'enctype="multipart/form-data"' in page


def test_submission_is_stored_encrypted_with_a_manifest(client, config, identity) -> None:
    photo = bytes(range(256)) * 5000  # over Werkzeug's 500 KB spooling threshold
    response = post(
        client,
        {
            "testimony": "I saw the camp at 12 o'clock.",
            "attachments": [
                (io.BytesIO(photo), "photo.jpg", "image/jpeg"),
                (io.BytesIO(b"note"), "note.txt", "text/plain"),
            ],
        },
    )
    assert response.status_code == 200
    assert 'class="notice ok"' in response.get_data(as_text=True)

    manifest, directory = open_only_submission(config, identity)
    assert manifest["format"] == "testimony-portal/submission/3"  # with a reply key
    assert len(manifest["reply_key"]["seed"]) == 64 and len(manifest["thread"]) == 64
    assert "reply_to" not in manifest
    assert manifest["fields"] == {"testimony": "I saw the camp at 12 o'clock.", "consent": "yes"}
    assert manifest["language"] == "en"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", manifest["received"])
    by_name = {a["name"]: a for a in manifest["attachments"]}
    assert set(by_name) == {"photo.jpg", "note.txt"}
    entry = by_name["photo.jpg"]
    assert entry["type"] == "image/jpeg"
    assert entry["size"] == len(photo)
    assert entry["sha256"] == hashlib.sha256(photo).hexdigest()
    assert decrypt((directory / entry["path"]).read_bytes(), [identity]) == photo


def test_language_of_the_url_is_recorded(client, config, identity) -> None:
    response = post(client, {"testimony": "증언합니다"}, path="/ko/submit")
    assert response.status_code == 200
    manifest, _ = open_only_submission(config, identity)
    assert manifest["language"] == "ko"
    assert manifest["fields"]["testimony"] == "증언합니다"


def test_empty_file_input_is_not_an_attachment(client, config, identity) -> None:
    response = post(
        client,
        {
            "testimony": "text only",
            "attachments": [(io.BytesIO(b""), "", "application/octet-stream")],
        },
    )
    assert response.status_code == 200
    manifest, directory = open_only_submission(config, identity)
    assert manifest["attachments"] == []
    # No stray ciphertext that the manifest does not account for.
    assert not (directory / "files").exists() or not any((directory / "files").iterdir())


def test_empty_submission_is_refused_and_nothing_kept(client, config) -> None:
    response = post(client, {"testimony": "   "})
    assert response.status_code == 400
    assert "NOT saved" in response.get_data(as_text=True)
    assert SubmissionStore(config.data_dir).ids() == []


def test_missing_csrf_token_is_refused_and_nothing_kept(client, config) -> None:
    response = client.post(
        "/submit",
        data={"testimony": "x", "attachments": [(io.BytesIO(b"data" * 1000), "a.bin")]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    store = SubmissionStore(config.data_dir)
    assert store.ids() == []
    assert list(store.staging_dir.iterdir()) == []


@pytest.fixture
def small_app(make_app):
    return make_app(max_upload_mb=1)


def test_oversized_upload_gets_413_and_nothing_kept(small_app, config) -> None:
    client = small_app.test_client()
    response = post(
        client, {"testimony": "x", "attachments": [(io.BytesIO(b"\0" * (2 << 20)), "big.bin")]}
    )
    assert response.status_code == 413
    assert "NOT saved" in response.get_data(as_text=True)
    store = SubmissionStore(config.data_dir)
    assert store.ids() == []
    assert list(store.staging_dir.iterdir()) == []


def test_oversized_chunked_upload_gets_413_and_nothing_kept(small_app, config) -> None:
    client = small_app.test_client()
    token = form_token(client)
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="attachments"; '
            f'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + b"\0" * (2 << 20)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(
        "/submit",
        input_stream=io.BytesIO(body),
        headers={
            "Transfer-Encoding": "chunked",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    store = SubmissionStore(config.data_dir)
    assert store.ids() == []
    assert list(store.staging_dir.iterdir()) == []


def test_app_refuses_to_start_without_recipients(config: Config) -> None:
    from portal.server.web import create_app

    config.recipients_file.write_text("# empty\n")
    with pytest.raises(ConfigError, match="testimony-review keygen"):
        create_app(config)


def test_app_refuses_to_start_with_a_private_key(config: Config, identity) -> None:
    from portal.server.web import create_app

    (config.recipients_file.parent / "oops.txt").write_text(f"{identity}\n")
    with pytest.raises(ConfigError, match="private key"):
        create_app(config)


def test_uploads_never_use_werkzeugs_spooling_stream_factory(client, monkeypatch) -> None:
    # Werkzeug's default factory spools uploads over 500 KB to a plaintext
    # temporary file. If the app ever fell back to it, this test fails.
    import werkzeug.formparser
    import werkzeug.wrappers.request

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("plaintext temporary file requested")

    monkeypatch.setattr(werkzeug.formparser, "default_stream_factory", forbidden)
    monkeypatch.setattr(werkzeug.wrappers.request, "default_stream_factory", forbidden)
    response = post(
        client, {"testimony": "x", "attachments": [(io.BytesIO(b"\1" * (600 * 1024)), "big.bin")]}
    )
    assert response.status_code == 200
