"""Post-quantum keys work on every path that encrypts, and the move from X25519 loses nothing.

- intake: a real gunicorn server with an age1pq1... recipients file stores
  submissions whose every stanza is mlkem768x25519; `testimony-review open`
  opens them, and the TypeScript age (an independent implementation) too;
- forward: a bundle for a partner's age1pq1... key opens with our reader and
  with the TypeScript age;
- migration: submissions made under the old X25519 key and under the new
  post-quantum key open together with both identities; the old identity is
  still needed for the old ones.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from portal.core.age import (
    MLKEM768X25519Identity,
    X25519Identity,
    decrypt,
    header_stanzas,
    parse_identities,
)
from portal.review.cli import ExitStatus
from portal.server.store import SubmissionStore
from portal.testing.live import RECEIVED_MARKERS, LiveServer, start_server
from tests import node_oracle
from tests.review_support import make_store, open_args, review, submit

KOREAN = "평양 교화소에서 있었던 일을 증언합니다."
RECORDING = bytes(range(256)) * 700  # spans three 64 KiB chunks


def stanza_types(data: bytes) -> list[str]:
    return [s.type for s in header_stanzas(io.BytesIO(data))]


def keygen(path: Path, *extra: str) -> str:
    """`testimony-review keygen` (unencrypted, for the test); returns the recipient line."""
    run = review(["keygen", "--out", path, "--no-passphrase", *extra])
    assert run.status == ExitStatus.OK, run.err
    return run.out.strip()


def serve(root: Path, recipients: str, data_dir: Path, identity_file: Path) -> LiveServer:
    # The recipients file is "# test recipient" and then `recipients`, so a
    # second key given here is on line 3.
    return start_server(root, recipients, identity_file, data_dir=data_dir)


def submit_over_http(server: LiveServer, text: str, files: list[tuple[str, bytes]]) -> None:
    response = server.client().submit(
        text, [(name, content, "application/octet-stream") for name, content in files], "ko"
    )
    assert response.status == 200 and any(m in response.body for m in RECEIVED_MARKERS)


@pytest.mark.slow
def test_real_server_encrypts_to_a_post_quantum_key_and_review_open_opens_it(
    tmp_path: Path,
) -> None:
    key = tmp_path / "reviewer" / "identity.txt"
    key.parent.mkdir()
    recipient = keygen(key)
    assert recipient.startswith("age1pq1")
    server = serve(tmp_path / "server", recipient, tmp_path / "data", key)
    try:
        submit_over_http(server, KOREAN, [("녹음.m4a", RECORDING)])
    finally:
        server.stop()

    store = SubmissionStore(tmp_path / "data")
    [sid] = store.ids()
    stored = [store.path(sid) / "testimony.age", store.path(sid) / "files" / "1.age"]
    for path in stored:
        # Only post-quantum stanzas: no classic door into the file.
        assert stanza_types(path.read_bytes()) == ["mlkem768x25519"]

    run = review(open_args(store.root, key, tmp_path / "out", tmp_path / "custody.jsonl"))
    assert run.status == ExitStatus.OK, run.err
    opened = tmp_path / "out" / sid
    manifest = json.loads((opened / "testimony.json").read_text("utf-8"))
    assert manifest["fields"]["testimony"] == KOREAN
    assert (opened / "녹음.m4a").read_bytes() == RECORDING

    # An independent implementation opens what the server wrote.
    node_oracle.require()
    [identity] = parse_identities(key.read_text())
    assert node_oracle.decrypt(stored[1].read_bytes(), str(identity)) == RECORDING


def test_forward_to_a_post_quantum_partner_key(tmp_path: Path) -> None:
    reviewer = X25519Identity.generate()  # the organisation's own key may still be classic
    (tmp_path / "id.txt").write_text(f"{reviewer}\n")
    store = make_store(tmp_path / "data")
    sid = submit(
        store, [reviewer], KOREAN, [("scan.pdf", b"%PDF-1.7 scan")], fields={"consent": "yes"}
    )
    custody = tmp_path / "custody.jsonl"
    run = review(open_args(store.root, tmp_path / "id.txt", tmp_path / "out", custody))
    assert run.status == ExitStatus.OK, run.err

    partner = MLKEM768X25519Identity.generate()
    bundle = tmp_path / "for-partner.tar.age"
    run = review(["forward", sid, "--from", tmp_path / "out", "--to", str(partner.recipient),
                  "--out", bundle, "--custody", custody, "--reviewer", "Reviewer B"])  # fmt: skip
    assert run.status == ExitStatus.OK, run.err
    data = bundle.read_bytes()
    assert stanza_types(data) == ["mlkem768x25519"]

    with tarfile.open(fileobj=io.BytesIO(decrypt(data, [partner]))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert members[f"{sid}/scan.pdf"] == b"%PDF-1.7 scan"

    node_oracle.require()
    plain = node_oracle.decrypt(data, str(partner))
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        assert tar.extractfile(f"{sid}/scan.pdf").read() == b"%PDF-1.7 scan"  # type: ignore[union-attr]


def test_forward_refuses_a_bad_partner_key_clearly(tmp_path: Path) -> None:
    secret = str(MLKEM768X25519Identity.generate())
    run = review(["forward", "x", "--from", tmp_path, "--to", secret, "--out",
                  tmp_path / "b.age", "--custody", tmp_path / "c.jsonl",
                  "--reviewer", "R"])  # fmt: skip
    assert run.status == ExitStatus.ERROR
    assert "--to is not an age public key" in run.err
    assert secret not in run.err and "Traceback" not in run.err


@pytest.mark.slow
def test_moving_from_x25519_to_post_quantum_keeps_old_submissions_open(tmp_path: Path) -> None:
    """The documented migration (docs/REVIEWER.md), end to end on a real server."""
    old_key = tmp_path / "reviewer" / "old-identity.txt"
    new_key = tmp_path / "reviewer" / "new-identity.txt"
    old_key.parent.mkdir()
    old_recipient = keygen(old_key, "--classic")
    data_dir = tmp_path / "data"

    # Before: the server encrypts to the classic key.
    server = serve(tmp_path / "before", old_recipient, data_dir, old_key)
    try:
        submit_over_http(server, "before the switch", [("a.txt", b"old")])
    finally:
        server.stop()
    [old_sid] = SubmissionStore(data_dir).ids()

    # The switch: keygen, then REPLACE the age1... line (listing both is refused).
    new_recipient = keygen(new_key)
    with pytest.raises(RuntimeError, match="line 3 is post-quantum but line 2 is not"):
        serve(tmp_path / "mixed", f"{old_recipient}\n{new_recipient}", data_dir, new_key)
    server = serve(tmp_path / "after", new_recipient, data_dir, new_key)
    try:
        submit_over_http(server, "after the switch", [("b.txt", b"new")])
    finally:
        server.stop()
    [new_sid] = [s for s in SubmissionStore(data_dir).ids() if s != old_sid]
    new_manifest = SubmissionStore(data_dir).path(new_sid) / "testimony.age"
    assert stanza_types(new_manifest.read_bytes()) == ["mlkem768x25519"]

    # With only the new identity, the old submission cannot be opened...
    only_new = review(open_args(data_dir, new_key, tmp_path / "out-new", tmp_path / "c1.jsonl"))
    assert only_new.status == ExitStatus.ERROR
    assert f"NOT OPENED: {old_sid}" in only_new.err

    # ...with both identities, everything opens.
    both = review([*open_args(data_dir, old_key, tmp_path / "out", tmp_path / "c2.jsonl"),
                   "--identity", new_key])  # fmt: skip
    assert both.status == ExitStatus.OK, both.err
    assert (tmp_path / "out" / old_sid / "a.txt").read_bytes() == b"old"
    assert (tmp_path / "out" / new_sid / "b.txt").read_bytes() == b"new"
