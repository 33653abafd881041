"""The sealed manifest is padded to a size bucket: its size hides the testimony's length."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from portal.core.age import X25519Identity, decrypt
from portal.core.manifest import MANIFEST_MIN_BUCKET, build_manifest, padded_size
from portal.server.store import SubmissionStore
from portal.testing.live import LiveServer


@pytest.mark.parametrize(
    ("length", "bucket"),
    [(0, 65_536), (1, 65_536), (65_536, 65_536), (65_537, 131_072), (131_072, 131_072),
     (300_001, 524_288)],
)  # fmt: skip
def test_buckets_are_64_kib_then_powers_of_two(length: int, bucket: int) -> None:
    assert padded_size(length) == bucket


def test_padded_manifest_is_still_the_same_json() -> None:
    manifest = build_manifest("A" * 24, {"testimony": "짧은 증언"}, "ko", [])
    assert len(manifest) == MANIFEST_MIN_BUCKET
    document = json.loads(manifest)
    assert document["fields"]["testimony"] == "짧은 증언"
    assert manifest.rstrip(b" ").endswith(b"}")


def _manifest_size(server: LiveServer, text: str, seen: set[str]) -> int:
    """Submit `text` and return the size of its encrypted manifest."""
    assert server.client().submit(text, lang="ko").status == 200
    store = SubmissionStore(server.data_dir)
    [new] = set(store.ids()) - seen
    seen.add(new)
    return (store.path(new) / "testimony.age").stat().st_size


def test_testimonies_of_different_lengths_in_one_bucket_have_equal_ciphertext_sizes(
    live_server: LiveServer, identity: X25519Identity
) -> None:
    seen: set[str] = set()
    short = _manifest_size(live_server, "짧다", seen)
    longer = _manifest_size(live_server, "조금 더 긴 증언입니다. " * 60, seen)  # ~2,000 bytes
    much_longer = _manifest_size(live_server, "훨씬 긴 증언. " * 5000, seen)  # ~90,000 bytes
    assert short == longer
    assert much_longer > longer
    store = SubmissionStore(live_server.data_dir)
    for submission_id in store.ids():
        plaintext = decrypt((store.path(submission_id) / "testimony.age").read_bytes(), [identity])
        assert len(plaintext) == padded_size(len(plaintext.rstrip(b" ")))


@pytest.mark.needs("age", "jq")
def test_age_cli_and_jq_read_the_padded_manifest(
    live_server: LiveServer, identity: X25519Identity
) -> None:
    assert live_server.client().submit("읽을 수 있어야 합니다").status == 200
    store = SubmissionStore(live_server.data_dir)
    [submission_id] = store.ids()
    manifest = store.path(submission_id) / "testimony.age"
    plaintext = subprocess.run(
        ["age", "-d", "-i", str(live_server.identity_file), str(manifest)],
        capture_output=True,
        check=True,
    ).stdout
    text = subprocess.run(
        ["jq", "-r", ".fields.testimony"], input=plaintext, capture_output=True, check=True
    ).stdout
    assert text.decode("utf-8").strip() == "읽을 수 있어야 합니다"


def test_reviewer_reads_the_padded_manifest(tmp_path: Path, identity: X25519Identity) -> None:
    from portal.core.manifest import parse_manifest

    manifest = build_manifest("B" * 24, {"testimony": "padded"}, "en", [])
    assert parse_manifest(manifest).document["fields"]["testimony"] == "padded"
