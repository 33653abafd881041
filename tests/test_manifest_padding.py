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


def _ordinary(answers: dict[str, str]) -> dict[str, str]:
    """Answers of ordinary length: the main account 2,000 characters, each other text 300
    (choices and dates as they are)."""
    grown = {}
    for name, value in answers.items():
        if name in ("role", "how_known", "investigators", "consent", "when", "period"):
            grown[name] = value
        else:
            length = 2000 if name in ("testimony", "did_and_saw") else 300
            grown[name] = (value + " ") * (length // (len(value) + 1)) + value[
                : length % (len(value) + 1)
            ]
    return grown


def test_no_path_and_no_followup_shows_in_the_ciphertext_size(
    live_server: LiveServer, identity: X25519Identity
) -> None:
    """Victim, witness, insider and a follow-up, with ordinary answers: one size at rest."""
    from tests.conversation_support import open_followup, receipt_of, send_followup
    from tests.questionnaire_support import KOREAN_PATHS

    seen: set[str] = set()
    sizes = {}
    store = SubmissionStore(live_server.data_dir)
    receipt = ""
    for role, answers in KOREAN_PATHS.items():
        fields = _ordinary(answers)
        client = live_server.client()
        response = client.submit(fields.pop("testimony", ""), lang="ko", extra_fields=fields)
        assert response.status == 200, response.body[:500]
        receipt = receipt_of(response.body)
        [new] = set(store.ids()) - seen
        seen.add(new)
        sizes[role] = (store.path(new) / "testimony.age").stat().st_size
    client = live_server.client()
    mailbox = open_followup(client, receipt, lang="ko")
    text = _ordinary({"testimony": "사진을 더 보냅니다. 그때 본 것을 덧붙입니다."})["testimony"]
    sent = send_followup(client, mailbox.body, text, [], lang="ko", consent="same")
    assert sent.status == 200, sent.body[:500]
    [followup] = set(store.ids()) - seen
    sizes["follow-up"] = (store.path(followup) / "testimony.age").stat().st_size
    assert len(set(sizes.values())) == 1, sizes
    # The bucket is the first: what a manifest holds is the sealed texts and the answers.
    manifest = decrypt((store.path(followup) / "testimony.age").read_bytes(), [identity])
    assert len(manifest) == MANIFEST_MIN_BUCKET
    assert json.loads(manifest)["fields"]["consent"] == "same"
