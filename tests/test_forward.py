"""`testimony-review forward`: one age-encrypted tar for a partner, opened with stock tools."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from portal.core.age import X25519Identity, decrypt
from portal.core.manifest import Attachment, build_manifest
from portal.core.replykey import KdfCost, ReplyKey
from portal.review.cli import ExitStatus
from portal.review.custody import CustodyLog
from tests.review_support import Run, make_store, open_args, review, submit, write_identity

FILES = [("scan.pdf", b"%PDF-1.7 " + bytes(range(256)) * 800), ("녹음.m4a", b"audio" * 3000)]


# The witnesses' consent to passing their testimony on (tests/test_consent.py
# covers the other answers).
YES = {"consent": "yes"}


@dataclass
class Desk:
    """Three opened submissions (ids, the `open` output folder, the custody log) and a partner."""

    ids: list[str]
    out_dir: Path
    custody: Path
    partner: X25519Identity
    partner_key: Path

    def forward(self, ids: list[str], bundle: Path, *extra: str, to: str | None = None) -> Run:
        """`forward` of `ids` to the partner (or to `to`) into `bundle`."""
        return review(["forward", *ids, "--from", self.out_dir,
                       "--to", to or str(self.partner.recipient), "--out", bundle,
                       "--custody", self.custody, "--reviewer", "Reviewer B", *extra])  # fmt: skip

    def members(self, bundle: Path) -> dict[str, bytes]:
        """The bundle's files by name, as the partner decrypts them."""
        with tarfile.open(fileobj=io.BytesIO(decrypt(bundle.read_bytes(), [self.partner]))) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


@pytest.fixture
def desk(tmp_path: Path) -> Desk:
    """Three opened submissions, the first with a contact field, and a partner's key."""
    identity = write_identity(tmp_path / "id.txt")
    store = make_store(tmp_path / "data")
    ids = [
        submit(store, [identity], "first testimony", FILES, fields={"contact": "phone 123", **YES}),
        submit(store, [identity], "second testimony", [("x.txt", b"x")], fields=YES),
        submit(store, [identity], "third, not forwarded", [("y.txt", b"y")], fields=YES),
    ]
    custody = tmp_path / "custody.jsonl"
    run = review(open_args(store.root, tmp_path / "id.txt", tmp_path / "out", custody))
    assert run.status == ExitStatus.OK, run.err
    partner_key = tmp_path / "partner-key.txt"
    partner = write_identity(partner_key)
    return Desk(ids, tmp_path / "out", custody, partner, partner_key)


@pytest.fixture
def redacted(tmp_path: Path, desk: Desk) -> dict[str, bytes]:
    """The first submission forwarded with `--omit-field contact`: the bundle's files."""
    bundle = tmp_path / "b.tar.age"
    run = desk.forward(desk.ids[:1], bundle, "--omit-field", "contact")
    assert run.status == ExitStatus.OK, run.err
    return desk.members(bundle)


@pytest.mark.needs("age")
def test_bundle_opens_with_stock_age_and_tar_and_every_hash_matches(
    tmp_path: Path, desk: Desk
) -> None:
    ids, out_dir, key = desk.ids, desk.out_dir, desk.partner_key
    bundle = tmp_path / "for-partner.tar.age"

    run = desk.forward(ids[:2], bundle)
    assert run.status == ExitStatus.OK, run.err

    plain_tar = tmp_path / "bundle.tar"
    subprocess.run(["age", "-d", "-i", key, "-o", plain_tar, bundle], check=True)
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "-xf", plain_tar, "-C", extracted], check=True)

    for name, content in FILES:
        copy = extracted / ids[0] / name
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == hashlib.sha256(content).hexdigest()
        assert copy.read_bytes() == (out_dir / ids[0] / name).read_bytes()
    manifest = json.loads((extracted / ids[0] / "testimony.json").read_text("utf-8"))
    assert manifest["fields"]["testimony"] == "first testimony"
    assert (extracted / ids[1] / "x.txt").read_bytes() == b"x"
    assert not (extracted / ids[2]).exists()
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=extracted, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (extracted / "README.txt").is_file()


def test_bundle_carries_the_custody_entries_of_its_submissions_and_is_logged(
    tmp_path: Path, desk: Desk
) -> None:
    ids, custody = desk.ids, desk.custody
    bundle = tmp_path / "b.tar.age"
    assert desk.forward(ids[:1], bundle).status == 0

    members = desk.members(bundle)
    lines = [json.loads(line) for line in members["custody.jsonl"].splitlines()]
    assert [(e["action"], e["submission"]) for e in lines] == [("open", ids[0])]

    last = list(CustodyLog(custody).entries())[-1].data
    assert last["action"] == "forward" and last["submissions"] == [ids[0]]
    assert last["reviewer"] == "Reviewer B"
    assert last["recipient"] == str(desk.partner.recipient)
    assert last["bundle"]["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert {f["file"] for f in last["files"]} == {name for name, _ in FILES}


def test_members_are_regular_files_under_safe_names_in_a_fixed_order(
    tmp_path: Path, desk: Desk
) -> None:
    ids = desk.ids
    bundle = tmp_path / "b.tar.age"
    desk.forward(ids[:2], bundle)
    with tarfile.open(fileobj=io.BytesIO(decrypt(bundle.read_bytes(), [desk.partner]))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:4] == ["README.txt", "SHA256SUMS", "custody.jsonl", "consent.json"]
    assert names[4:] == sorted(names[4:])
    assert all(m.isreg() and m.mode == 0o600 and m.uid == 0 for m in members)
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)
    assert all(n.split("/")[0] in set(ids) for n in names[4:])


def test_omit_field_leaves_contact_details_out(desk: Desk, redacted: dict[str, bytes]) -> None:
    manifest = json.loads(redacted[f"{desk.ids[0]}/testimony.json"])
    assert "contact" not in manifest["fields"] and manifest["omitted_fields"] == ["contact"]
    assert b"phone 123" not in b"".join(redacted.values())
    assert list(CustodyLog(desk.custody).entries())[-1].data["omitted_fields"] == ["contact"]


def test_a_file_changed_after_opening_stops_the_forward(tmp_path: Path, desk: Desk) -> None:
    ids, out_dir, custody = desk.ids, desk.out_dir, desk.custody
    (out_dir / ids[0] / "scan.pdf").write_bytes(b"a forged document")
    entries_before = custody.read_bytes()
    bundle = tmp_path / "b.tar.age"

    run = desk.forward(ids[:1], bundle)

    assert run.status == ExitStatus.ERROR
    assert "no longer matches the SHA-256 in its manifest" in run.err
    assert not bundle.exists() and list(tmp_path.glob(".b.tar.age*")) == []
    assert custody.read_bytes() == entries_before


def test_forward_refuses_to_overwrite_a_bad_recipient_or_an_unopened_id(
    tmp_path: Path, desk: Desk
) -> None:
    ids = desk.ids
    existing = tmp_path / "existing.age"
    existing.write_bytes(b"keep me")
    run = desk.forward(ids[:1], existing)
    assert run.status == ExitStatus.ERROR and "refusing to overwrite" in run.err
    assert existing.read_bytes() == b"keep me"

    run = desk.forward(ids[:1], tmp_path / "new.age", to="age1notakey")
    assert run.status == ExitStatus.ERROR and "not an age public key" in run.err

    run = desk.forward(["A" * 24], tmp_path / "new.age")
    assert run.status == ExitStatus.ERROR and "not a submission opened" in run.err
    assert not (tmp_path / "new.age").exists()


def test_a_doctored_opened_record_cannot_smuggle_other_files_into_the_bundle(
    tmp_path: Path, desk: Desk
) -> None:
    ids, out_dir = desk.ids, desk.out_dir
    record_path = out_dir / ids[1] / "opened.json"
    record = json.loads(record_path.read_text())
    record["attachments"][0]["file"] = "../../id.txt"
    record_path.write_text(json.dumps(record))
    run = desk.forward(ids[1:2], tmp_path / "b.age")
    assert run.status == ExitStatus.ERROR and "is damaged" in run.err
    assert not (tmp_path / "b.age").exists()


def test_a_redacted_bundle_carries_nothing_computed_from_the_omitted_field(
    desk: Desk, redacted: dict[str, bytes]
) -> None:
    ids, out_dir, custody = desk.ids, desk.out_dir, desk.custody
    everything = b"".join(redacted.values())
    manifest = json.loads(redacted[f"{ids[0]}/testimony.json"])

    # The partner's attack: rebuild the original manifest for each guess of
    # the phone number, hash it, and look for the hash in the bundle.
    def original_with(guess: str) -> bytes:
        fields = {"testimony": manifest["fields"]["testimony"], "contact": guess, **YES}
        return build_manifest(
            manifest["id"], fields, manifest["language"],
            [Attachment(**a) for a in manifest["attachments"]], received=manifest["received"],
        )  # fmt: skip

    guesses = [f"phone {n}" for n in range(100, 200)]
    assert "phone 123" in guesses
    for guess in guesses:
        digest = hashlib.sha256(original_with(guess)).hexdigest()
        assert digest.encode() not in everything, guess
    # Nor any hash our own records hold of the full manifest or its ciphertext.
    record = json.loads((out_dir / ids[0] / "opened.json").read_text())
    assert hashlib.sha256(original_with("phone 123")).hexdigest() == record["manifest"]["sha256"]
    for key in ("sha256", "ciphertext_sha256"):
        assert record["manifest"][key].encode() not in everything
    for entry in CustodyLog(custody).entries():
        assert entry.hash.encode() not in everything


def test_bundle_custody_lines_hold_no_local_paths_or_other_partners_keys(
    tmp_path: Path, desk: Desk
) -> None:
    ids, custody = desk.ids, desk.custody
    earlier = X25519Identity.generate().recipient
    assert desk.forward(ids[:1], tmp_path / "a.age", to=str(earlier)).status == 0
    bundle = tmp_path / "b.tar.age"
    assert desk.forward(ids[:1], bundle).status == 0

    lines = [json.loads(line) for line in desk.members(bundle)["custody.jsonl"].splitlines()]
    assert [line["action"] for line in lines] == ["open", "forward"]
    text = json.dumps(lines)
    assert str(earlier) not in text
    assert str(tmp_path) not in text and "a.age" not in text
    assert lines[0]["submission"] == ids[0]
    files = {a["file"]: a["sha256"] for a in lines[0]["attachments"]}
    assert files == {name: hashlib.sha256(content).hexdigest() for name, content in FILES}
    # Unredacted, the lines name their place in our log, to be proven later.
    log = {e.data["seq"]: e.hash for e in CustodyLog(custody).entries()}
    assert all(log[line["seq"]] == line["log_line_sha256"] for line in lines)


def test_omitting_a_field_the_submission_does_not_have_is_refused(
    tmp_path: Path, desk: Desk
) -> None:
    ids, custody = desk.ids, desk.custody
    before = custody.read_bytes()
    bundle = tmp_path / "b.tar.age"
    run = desk.forward(ids[:1], bundle, "--omit-field", "testimon")
    assert run.status == ExitStatus.ERROR
    assert (
        "has no field 'testimon' to omit; its fields are: 'consent', 'contact', 'testimony'"
        in run.err
    )
    assert not bundle.exists() and custody.read_bytes() == before


def test_a_bundle_never_carries_what_leads_to_the_witness(tmp_path: Path) -> None:
    # reply_to, reply_key (which derives the witness's reply identity) and
    # thread stay with the organisation, whatever the consent (issues 21, 25).
    identity = write_identity(tmp_path / "id.txt")
    store = make_store(tmp_path / "data")
    key = ReplyKey(seed=bytes(range(32)), salt=bytes(16), cost=KdfCost(1, 8 * 1024))
    ids = [
        submit(store, [identity], "seed", fields=YES, reply_key=key),
        submit(store, [identity], "recipient", fields=YES, reply_to=str(identity.recipient)),
    ]
    custody = tmp_path / "custody.jsonl"
    assert review(open_args(store.root, tmp_path / "id.txt", tmp_path / "out", custody)).status == 0
    partner = write_identity(tmp_path / "partner.txt")
    desk = Desk(ids, tmp_path / "out", custody, partner, tmp_path / "partner.txt")
    bundle = tmp_path / "b.tar.age"
    run = desk.forward(ids, bundle)
    assert run.status == ExitStatus.OK, run.err
    members = desk.members(bundle)
    for submission_id in ids:
        opened = json.loads((desk.out_dir / submission_id / "testimony.json").read_text())
        assert "thread" in opened  # the reviewer keeps the conversation
        sent = json.loads(members[f"{submission_id}/testimony.json"])
        assert not set(sent) & {"reply_to", "reply_key", "thread"}, sent
        assert sent["fields"] == opened["fields"]
    everything = b"".join(members.values())
    assert bytes(range(32)).hex().encode() not in everything
    assert str(identity.recipient).encode() not in everything
